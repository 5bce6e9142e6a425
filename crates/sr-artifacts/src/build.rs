//! The build itself: the steps in order, each external command through [`Host`].

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::debs::{self, PackageInfo};
use crate::host::{Cmd, Host};
use crate::manifest::{self, FileDigest, Manifest, Source};
use crate::{ArtifactError, elf, initramfs, modules, rootfs};

/// Which root filesystem to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// busybox-static, the agent, /etc/passwd and /etc/group.
    Minimal,
    /// `minimal` plus python3 (python3-minimal and its hard dependencies).
    Debian,
}

impl Profile {
    /// The name (`minimal`, `debian`).
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Minimal => "minimal",
            Profile::Debian => "debian",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Result<Profile, ArtifactError> {
        match s {
            "minimal" => Ok(Profile::Minimal),
            "debian" => Ok(Profile::Debian),
            other => Err(ArtifactError::Input {
                step: "profile",
                message: format!("unknown profile {other:?}"),
                hint: "use --profile minimal (busybox) or --profile debian (busybox and python3)"
                    .into(),
            }),
        }
    }
}

/// What to build, and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// The output directory (created).
    pub out_dir: PathBuf,
    /// The static guest agent.
    pub agent: PathBuf,
    /// The root filesystem's profile.
    pub profile: Profile,
    /// Where downloaded `.deb` files are kept (by name, version and architecture; each checked
    /// against apt's sha256 before use).
    pub cache_dir: PathBuf,
    /// The timestamp of every file (SOURCE_DATE_EPOCH; 0 when unset).
    pub source_date_epoch: u64,
}

fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ArtifactError + 'a {
    move |e| ArtifactError::io(step, path, e)
}

/// The sha256 and size of a file.
pub fn digest_file(step: &'static str, path: &Path) -> Result<(String, u64), ArtifactError> {
    let mut f = fs::File::open(path).map_err(io_err(step, path))?;
    let mut h = Sha256::new();
    let size = io::copy(&mut f, &mut h).map_err(io_err(step, path))?;
    Ok((hex::encode(h.finalize()), size))
}

struct Ctx<'a> {
    opts: &'a Options,
    host: &'a dyn Host,
    progress: &'a mut dyn FnMut(&str),
    sources: Vec<Source>,
}

impl Ctx<'_> {
    fn say(&mut self, msg: &str) {
        (self.progress)(msg);
    }

    fn run_text(&self, step: &'static str, cmd: &Cmd) -> Result<String, ArtifactError> {
        let out = self.host.run(step, cmd)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// The package's `.deb` in the cache, downloaded when missing or not matching apt's sha256.
    fn fetch(
        &mut self,
        step: &'static str,
        name: &str,
        role: &str,
    ) -> Result<(PackageInfo, PathBuf), ArtifactError> {
        let show = self.run_text(
            step,
            &Cmd::new("apt-cache", ["show", "--no-all-versions", name]),
        )?;
        let info = debs::parse_show(&show)?;
        let cache = &self.opts.cache_dir;
        fs::create_dir_all(cache).map_err(io_err(step, cache))?;
        let path = cache.join(info.cache_file_name());
        let cached = path.exists() && digest_file(step, &path)?.0 == info.sha256;
        if cached {
            self.say(&format!("cached {} {}", info.package, info.version));
        } else {
            self.say(&format!("downloading {} {}", info.package, info.version));
            let dl = tempfile::Builder::new()
                .prefix(".download-")
                .tempdir_in(cache)
                .map_err(io_err(step, cache))?;
            self.host.run(
                step,
                &Cmd::new(
                    "apt-get",
                    [
                        "download".to_owned(),
                        "-q".to_owned(),
                        "-o".to_owned(),
                        "APT::Sandbox::User=root".to_owned(),
                        format!("{}={}", info.package, info.version),
                    ],
                )
                .cwd(dl.path()),
            )?;
            let mut debs = Vec::new();
            for e in fs::read_dir(dl.path()).map_err(io_err(step, dl.path()))? {
                let e = e.map_err(io_err(step, dl.path()))?;
                if e.file_name().to_string_lossy().ends_with(".deb") {
                    debs.push(e.path());
                }
            }
            let [deb] = debs.as_slice() else {
                return Err(ArtifactError::content(
                    step,
                    format!("apt-get download {name} left {} .deb files", debs.len()),
                ));
            };
            let (sha, _) = digest_file(step, deb)?;
            if sha != info.sha256 {
                return Err(ArtifactError::content(
                    step,
                    format!(
                        "{} has sha256 {sha}, apt's index says {}",
                        deb.display(),
                        info.sha256
                    ),
                ));
            }
            fs::rename(deb, &path).map_err(io_err(step, &path))?;
        }
        self.sources.push(Source {
            package: info.package.clone(),
            version: info.version.clone(),
            architecture: info.architecture.clone(),
            sha256: info.sha256.clone(),
            role: role.to_owned(),
        });
        Ok((info, path))
    }

    fn extract(&self, step: &'static str, deb: &Path, into: &Path) -> Result<(), ArtifactError> {
        self.host.run(
            step,
            &Cmd::new(
                "dpkg-deb",
                [
                    "-x".to_owned(),
                    deb.display().to_string(),
                    into.display().to_string(),
                ],
            ),
        )?;
        Ok(())
    }
}

/// The kernel step's result.
struct Kernel {
    release: String,
    image: PathBuf,
    /// (path relative to /lib/modules/<release>, plain, bytes) in load order.
    modules: Vec<(String, Vec<u8>)>,
    builtin: Vec<String>,
}

fn kernel(ctx: &mut Ctx<'_>, work: &Path) -> Result<Kernel, ArtifactError> {
    let step = "kernel";
    ctx.say(&format!("resolving {}", crate::KERNEL_METAPACKAGE));
    let deps = ctx.run_text(
        step,
        &Cmd::new("apt-cache", ["depends", crate::KERNEL_METAPACKAGE]),
    )?;
    let name = debs::first_depends(&deps).ok_or_else(|| {
        ArtifactError::content(
            step,
            format!("{} depends on no kernel package", crate::KERNEL_METAPACKAGE),
        )
    })?;
    let (_, deb) = ctx.fetch(step, &name, "kernel")?;
    let tree = work.join("kernel");
    fs::create_dir_all(&tree).map_err(io_err(step, &tree))?;
    ctx.say(&format!("extracting {name}"));
    ctx.extract(step, &deb, &tree)?;
    let boot = tree.join("boot");
    let mut images = Vec::new();
    for e in fs::read_dir(&boot).map_err(io_err(step, &boot))? {
        let e = e.map_err(io_err(step, &boot))?;
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(release) = n.strip_prefix("vmlinuz-") {
            images.push((release.to_owned(), e.path()));
        }
    }
    let [(release, image)] = images.as_slice() else {
        return Err(ArtifactError::content(
            step,
            format!("{name} has {} boot/vmlinuz-* files, not one", images.len()),
        ));
    };
    let release = release.clone();
    if release.contains('/') || release.starts_with('.') {
        return Err(ArtifactError::content(
            step,
            format!("odd kernel release {release:?}"),
        ));
    }
    let moddir = tree.join("lib/modules").join(&release);
    let dep_path = moddir.join("modules.dep");
    if !dep_path.exists() {
        // Debian ships no modules.dep (its postinst runs depmod): make it the same way.
        ctx.say(&format!("depmod {release}"));
        ctx.host.run(
            "modules",
            &Cmd::new(
                "depmod",
                ["-b".to_owned(), tree.display().to_string(), release.clone()],
            ),
        )?;
    }
    let dep_text = fs::read_to_string(&dep_path).map_err(io_err("modules", &dep_path))?;
    let builtin_path = moddir.join("modules.builtin");
    let builtin_text = match fs::read_to_string(&builtin_path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(ArtifactError::io("modules", &builtin_path, e)),
    };
    let plan = modules::closure(
        &modules::parse_modules_dep(&dep_text)?,
        &modules::parse_modules_builtin(&builtin_text),
        modules::WANTED,
        modules::OPTIONAL,
    )?;
    let mut mods = Vec::new();
    for rel in &plan.load_order {
        if rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(ArtifactError::content(
                "modules",
                format!("odd module path {rel:?}"),
            ));
        }
        let path = moddir.join(rel);
        let data = if rel.ends_with(".xz") || rel.ends_with(".zst") {
            let tool = if rel.ends_with(".xz") { "xz" } else { "zstd" };
            ctx.host.run(
                "modules",
                &Cmd::new(tool, ["-dc".to_owned(), path.display().to_string()]),
            )?
        } else if rel.ends_with(".gz") {
            let raw = fs::read(&path).map_err(io_err("modules", &path))?;
            let mut out = Vec::new();
            io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut out)
                .map_err(io_err("modules", &path))?;
            out
        } else {
            fs::read(&path).map_err(io_err("modules", &path))?
        };
        mods.push((modules::plain_path(rel).to_owned(), data));
    }
    Ok(Kernel {
        release,
        image: image.clone(),
        modules: mods,
        builtin: plan.builtin,
    })
}

fn set_mode(step: &'static str, path: &Path, mode: u32) -> Result<(), ArtifactError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(step, path))
}

fn mkdirs(step: &'static str, path: &Path) -> Result<(), ArtifactError> {
    fs::create_dir_all(path).map_err(io_err(step, path))
}

/// Builds the rootfs tree at `tree`.
fn rootfs_tree(ctx: &mut Ctx<'_>, tree: &Path, agent: &[u8]) -> Result<(), ArtifactError> {
    let step = "rootfs";
    mkdirs(step, tree)?;
    set_mode(step, tree, 0o755)?;
    if ctx.opts.profile == Profile::Debian {
        let step = "packages";
        ctx.say(&format!("resolving {}", crate::PYTHON_PACKAGE));
        let mut args = vec!["depends", "--recurse"];
        args.extend_from_slice(debs::HARD_DEPENDS_ONLY);
        args.push(crate::PYTHON_PACKAGE);
        let text = ctx.run_text(step, &Cmd::new("apt-cache", args))?;
        for name in debs::recursive_packages(&text) {
            let (_, deb) = ctx.fetch(step, &name, "python3")?;
            ctx.extract(step, &deb, tree)?;
        }
    }
    let (_, deb) = ctx.fetch(step, crate::BUSYBOX_PACKAGE, "busybox")?;
    ctx.extract(step, &deb, tree)?;
    let busybox = tree.join("bin/busybox");
    let list = ctx.run_text(
        step,
        &Cmd::new(&busybox.display().to_string(), ["--list-full"]),
    )?;
    for link in rootfs::applet_links(&list) {
        let at = tree.join(&link);
        if at.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = at.parent() {
            mkdirs(step, parent)?;
        }
        symlink("/bin/busybox", &at).map_err(io_err(step, &at))?;
    }
    let sbin = tree.join("sbin");
    mkdirs(step, &sbin)?;
    let agent_path = sbin.join("safe-run-agent");
    fs::write(&agent_path, agent).map_err(io_err(step, &agent_path))?;
    set_mode(step, &agent_path, 0o755)?;
    let etc = tree.join("etc");
    mkdirs(step, &etc)?;
    for (rel, mode, content) in rootfs::etc_files() {
        let p = tree.join(rel);
        fs::write(&p, content).map_err(io_err(step, &p))?;
        set_mode(step, &p, mode)?;
    }
    // The root is read-only: the agent writes the run's resolver into its /run tmpfs.
    let resolv = etc.join("resolv.conf");
    symlink(rootfs::RESOLV_CONF_TARGET, &resolv).map_err(io_err(step, &resolv))?;
    if ctx.opts.profile == Profile::Debian {
        ctx.say("checking python3 in the tree (chroot)");
        let out = ctx.run_text(
            step,
            &Cmd::new(
                "chroot",
                [
                    tree.display().to_string(),
                    "/usr/bin/python3".to_owned(),
                    "-c".to_owned(),
                    "print(2+2)".to_owned(),
                ],
            )
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        )?;
        if out.trim() != "4" {
            return Err(ArtifactError::content(
                step,
                format!("python3 in the tree printed {out:?}, not 4"),
            ));
        }
    }
    // Last, so nothing above (the chroot check) changes them.
    for (rel, mode, _) in rootfs::empty_dirs() {
        let p = tree.join(&rel);
        mkdirs(step, &p)?;
        set_mode(step, &p, mode)?;
    }
    Ok(())
}

/// Every entry owned by root (the sandbox user's home by it), every timestamp `epoch`.
fn normalize(tree: &Path, epoch: u64) -> Result<(), ArtifactError> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let step = "rootfs";
    let secs = i64::try_from(epoch).map_err(|_| ArtifactError::Input {
        step: "rootfs",
        message: format!("SOURCE_DATE_EPOCH {epoch} is out of range"),
        hint: "use seconds since 1970".into(),
    })?;
    let t = TimeSpec::new(secs, 0);
    let home = tree.join(format!("home/{}", rootfs::SANDBOX_USER));
    let mut stack = vec![tree.to_owned()];
    let mut dirs = Vec::new();
    while let Some(p) = stack.pop() {
        let meta = p.symlink_metadata().map_err(io_err(step, &p))?;
        let id = if p == home { rootfs::SANDBOX_ID } else { 0 };
        lchown(&p, Some(id), Some(id)).map_err(io_err(step, &p))?;
        if meta.is_dir() {
            for e in fs::read_dir(&p).map_err(io_err(step, &p))? {
                stack.push(e.map_err(io_err(step, &p))?.path());
            }
            dirs.push(p);
        } else {
            utimensat(
                nix::fcntl::AT_FDCWD,
                &p,
                &t,
                &t,
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|e| ArtifactError::io(step, &p, e.into()))?;
        }
    }
    // Directories last (touching their entries changed nothing, but keep the order plain).
    for d in dirs {
        utimensat(
            nix::fcntl::AT_FDCWD,
            &d,
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| ArtifactError::io(step, &d, e.into()))?;
    }
    Ok(())
}

fn write_new(step: &'static str, path: &Path, data: &[u8]) -> Result<(), ArtifactError> {
    fs::write(path, data).map_err(io_err(step, path))
}

/// Builds the artifacts into `opts.out_dir`; `progress` gets one line per long step.
pub fn build(
    opts: &Options,
    host: &dyn Host,
    progress: &mut dyn FnMut(&str),
) -> Result<Manifest, ArtifactError> {
    let agent = fs::read(&opts.agent).map_err(|e| ArtifactError::Input {
        step: "agent",
        message: format!("cannot read the agent {}: {e}", opts.agent.display()),
        hint: "build it (cargo build -p sr-agent --release, static) and pass it with --agent, \
               or put safe-run-agent beside safe-run"
            .into(),
    })?;
    if let Err(problem) = elf::check_static(&agent) {
        let what = match problem {
            elf::ElfProblem::Dynamic(interp) => {
                format!("is dynamically linked (interpreter {interp})")
            }
            elf::ElfProblem::NotElf(why) | elf::ElfProblem::WrongKind(why) => {
                format!("is not an x86-64 ELF executable ({why})")
            }
            elf::ElfProblem::NotExecutable => "is an ELF file but not an executable".into(),
        };
        return Err(ArtifactError::Input {
            step: "agent",
            message: format!("{} {what}", opts.agent.display()),
            hint: "the initramfs has no dynamic loader: build the agent static \
                   (RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build -p sr-agent --release \
                   --target x86_64-unknown-linux-gnu) and pass it with --agent"
                .into(),
        });
    }
    let agent_sha = hex::encode(Sha256::digest(&agent));
    let mtime = u32::try_from(opts.source_date_epoch).map_err(|_| ArtifactError::Input {
        step: "initramfs",
        message: format!(
            "SOURCE_DATE_EPOCH {} does not fit a cpio header",
            opts.source_date_epoch
        ),
        hint: "use a time before 2106".into(),
    })?;
    if opts.out_dir.is_file() {
        return Err(ArtifactError::Input {
            step: "out",
            message: format!("{} is a file", opts.out_dir.display()),
            hint: "pass a directory with --out".into(),
        });
    }
    mkdirs("out", &opts.out_dir)?;
    mkdirs("out", &opts.cache_dir)?;
    let work = tempfile::Builder::new()
        .prefix(".safe-run-artifact-")
        .tempdir_in(&opts.cache_dir)
        .map_err(io_err("out", &opts.cache_dir))?;
    let mut ctx = Ctx {
        opts,
        host,
        progress,
        sources: Vec::new(),
    };

    // 1. Kernel and modules.
    let k = kernel(&mut ctx, work.path())?;
    let out = |name: &str| opts.out_dir.join(name);
    let tmp = |name: &str| opts.out_dir.join(format!(".{name}.tmp"));
    fs::copy(&k.image, tmp("vmlinuz")).map_err(io_err("kernel", &k.image))?;

    // 2. Initramfs.
    ctx.say(&format!(
        "initramfs: /init and {} modules for {}",
        k.modules.len(),
        k.release
    ));
    let module_paths: Vec<String> = k
        .modules
        .iter()
        .map(|(rel, _)| format!("/lib/modules/{}/{rel}", k.release))
        .collect();
    let layout = initramfs::layout(agent.clone(), &k.release, k.modules);
    let img = initramfs::gzip(&initramfs::cpio_bytes(&layout, mtime)?)?;
    write_new("initramfs", &tmp("initramfs.img"), &img)?;

    // 3. Root filesystem.
    let tree = work.path().join("rootfs");
    rootfs_tree(&mut ctx, &tree, &agent)?;
    normalize(&tree, opts.source_date_epoch)?;
    let stats = rootfs::tree_stats(&tree).map_err(io_err("rootfs", &tree))?;
    let (size_kib, inodes) = rootfs::image_size(stats);
    ctx.sources.sort();
    let mut inputs = Sha256::new();
    inputs.update(format!(
        "profile={}\nepoch={}\nagent={agent_sha}\n",
        opts.profile.as_str(),
        opts.source_date_epoch
    ));
    for s in &ctx.sources {
        inputs.update(format!("{} {} {}\n", s.package, s.version, s.sha256));
    }
    let (uuid, hash_seed) = rootfs::uuid_and_seed(&inputs.finalize().into());
    let image = tmp("rootfs.ext4");
    if image.exists() {
        fs::remove_file(&image).map_err(io_err("rootfs", &image))?;
    }
    let cmd = rootfs::mkfs_cmd(&rootfs::MkfsPlan {
        tree: tree.display().to_string(),
        image: image.display().to_string(),
        size_kib,
        inodes,
        uuid,
        hash_seed,
        fake_time: opts.source_date_epoch.max(1),
    });
    ctx.say(&format!(
        "mkfs.ext4 {} MiB, {inodes} inodes, {} entries",
        size_kib / 1024,
        stats.entries
    ));
    ctx.host.run("rootfs", &cmd)?;
    let paths = rootfs::tree_paths(&tree).map_err(io_err("rootfs", &tree))?;
    let script = rootfs::ctime_script(&paths, opts.source_date_epoch).ok_or_else(|| {
        ArtifactError::content(
            "rootfs",
            "a file name in the tree has a '\"' or a line break",
        )
    })?;
    let script_path = work.path().join("ctime.debugfs");
    write_new("rootfs", &script_path, script.as_bytes())?;
    ctx.say(&format!("debugfs: ctime of {} inodes", paths.len()));
    ctx.host.run(
        "rootfs",
        &Cmd::new(
            "debugfs",
            [
                "-w".to_owned(),
                "-f".to_owned(),
                script_path.display().to_string(),
                image.display().to_string(),
            ],
        )
        .env(
            "E2FSPROGS_FAKE_TIME",
            &opts.source_date_epoch.max(1).to_string(),
        ),
    )?;
    let version = ctx.run_text("rootfs", &Cmd::new("sh", ["-c", "mke2fs -V 2>&1"]))?;

    // 4. Outputs in place, manifest last.
    let mut outputs = std::collections::BTreeMap::new();
    for (key, name) in [
        ("kernel", "vmlinuz"),
        ("initramfs", "initramfs.img"),
        ("rootfs", "rootfs.ext4"),
    ] {
        let (sha256, size) = digest_file("out", &tmp(name))?;
        fs::rename(tmp(name), out(name)).map_err(io_err("out", &out(name)))?;
        outputs.insert(
            key.to_owned(),
            FileDigest {
                file: name.to_owned(),
                sha256,
                size,
            },
        );
    }
    let manifest = Manifest {
        format: manifest::FORMAT.into(),
        profile: opts.profile.as_str().into(),
        source_date_epoch: opts.source_date_epoch,
        outputs,
        kernel_release: k.release,
        modules: module_paths,
        builtin_modules: k.builtin,
        agent: FileDigest {
            file: "safe-run-agent".into(),
            sha256: agent_sha,
            size: agent.len() as u64,
        },
        sources: ctx.sources,
        tools: [(
            "mke2fs".to_owned(),
            manifest::mke2fs_version(&version).unwrap_or_else(|| "unknown".into()),
        )]
        .into(),
    };
    write_new("manifest", &out("manifest.json"), &manifest.to_canonical()?)?;
    Ok(manifest)
}
