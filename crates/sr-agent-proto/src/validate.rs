//! The rules a message must keep beyond its JSON shape: non-empty argv, bounded counts and
//! lengths, normalized absolute paths, ranges. The decoder applies them to every message it
//! returns and the encoder to every message it writes, so neither side ever handles a message
//! the other would refuse.

use std::collections::BTreeSet;

use crate::error::{Problem, ProtoError};
use crate::limits::Limits;
use crate::message::{
    Confinement, DirEntry, Exec, ExitStatus, FileInfo, FileKind, Hello, HelloAck, Message, Ready,
};

/// Largest permission bits (`0o7777`: setuid, setgid, sticky, rwx for all).
pub const MAX_MODE: u32 = 0o7777;
/// Largest signal number (Linux's SIGRTMAX).
pub const MAX_SIGNAL: i32 = 64;

/// Check `message` against the protocol's rules and `limits`.
pub fn validate(message: &Message, limits: &Limits) -> Result<(), ProtoError> {
    let c = Check {
        limits,
        message: message.type_name(),
    };
    match message {
        Message::Hello(m) => c.hello(m),
        Message::HelloAck(m) => c.hello_ack(m),
        Message::VersionMismatch(m) => c.text(|| "message".into(), &m.message),
        Message::Ready(m) => c.ready(m),
        Message::Exec(m) => c.exec(m),
        Message::Started(m) => {
            c.range(|| "pid".into(), m.pid.into(), 1, i32::MAX.into())?;
            match &m.confinement {
                Some(conf) => c.confinement(conf),
                None => Ok(()),
            }
        }
        Message::StdinCredit(m) => c.range(|| "bytes".into(), m.bytes.into(), 1, u32::MAX.into()),
        Message::Signal(m) => c.range(|| "signal".into(), m.signal.into(), 1, MAX_SIGNAL.into()),
        Message::Resize(m) => {
            c.range(|| "rows".into(), m.rows.into(), 1, u16::MAX.into())?;
            c.range(|| "cols".into(), m.cols.into(), 1, u16::MAX.into())
        }
        Message::Exit(m) => match m.status {
            ExitStatus::Code(code) => c.range(|| "status.code".into(), code.into(), 0, 255),
            ExitStatus::Signal(sig) => {
                c.range(|| "status.signal".into(), sig.into(), 1, MAX_SIGNAL.into())
            }
        },
        Message::PutBegin(m) => {
            c.path(|| "path".into(), &m.path)?;
            c.mode(|| "mode".into(), m.mode)
        }
        Message::GetBegin(m) => c.mode(|| "mode".into(), m.mode),
        Message::Get(m) => c.path(|| "path".into(), &m.path),
        Message::List(m) | Message::Stat(m) => c.path(|| "path".into(), &m.path),
        Message::Remove(m) => c.path(|| "path".into(), &m.path),
        Message::Listing(m) => {
            c.count(
                || "entries".into(),
                m.entries.len(),
                limits.max_list_entries,
            )?;
            m.entries
                .iter()
                .enumerate()
                .try_for_each(|(i, e)| c.dir_entry(i, e))
        }
        Message::StatResult(m) => c.file_info(|| "info".into(), &m.info),
        Message::Error(m) => {
            c.text(|| "message".into(), &m.message)?;
            match &m.phase {
                Some(phase) => c.short(|| "phase".into(), phase),
                None => Ok(()),
            }
        }
        Message::StdinClose(_)
        | Message::PutEnd(_)
        | Message::PutDone(_)
        | Message::GetEnd(_)
        | Message::Removed(_)
        | Message::StatsRequest(_)
        | Message::Stats(_)
        | Message::Shutdown(_)
        | Message::ShutdownAck(_) => Ok(()),
    }
}

struct Check<'l> {
    limits: &'l Limits,
    message: &'static str,
}

impl Check<'_> {
    fn fail(&self, field: String, problem: Problem) -> ProtoError {
        ProtoError::Invalid {
            message: self.message,
            field,
            problem,
        }
    }

    fn count(
        &self,
        field: impl FnOnce() -> String,
        n: usize,
        max: usize,
    ) -> Result<(), ProtoError> {
        if n > max {
            return Err(self.fail(field(), Problem::TooMany { count: n, max }));
        }
        Ok(())
    }

    fn range(
        &self,
        field: impl FnOnce() -> String,
        value: i64,
        min: i64,
        max: i64,
    ) -> Result<(), ProtoError> {
        if value < min || value > max {
            return Err(self.fail(field(), Problem::OutOfRange { value, min, max }));
        }
        Ok(())
    }

    /// A string that ends up in a C string (argv, env, paths): bounded, no NUL.
    fn c_string(
        &self,
        field: impl FnOnce() -> String,
        s: &str,
        max: usize,
    ) -> Result<(), ProtoError> {
        if s.len() > max {
            return Err(self.fail(field(), Problem::TooLong { len: s.len(), max }));
        }
        if s.as_bytes().contains(&0) {
            return Err(self.fail(field(), Problem::ContainsNul));
        }
        Ok(())
    }

    fn non_empty(&self, field: impl FnOnce() -> String, s: &str) -> Result<(), ProtoError> {
        if s.is_empty() {
            return Err(self.fail(field(), Problem::Empty));
        }
        Ok(())
    }

    /// A name or version: non-empty, short, no NUL.
    fn short(&self, field: impl Fn() -> String, s: &str) -> Result<(), ProtoError> {
        self.non_empty(&field, s)?;
        self.c_string(field, s, self.limits.max_short)
    }

    fn text(&self, field: impl FnOnce() -> String, s: &str) -> Result<(), ProtoError> {
        if s.len() > self.limits.max_text {
            let max = self.limits.max_text;
            return Err(self.fail(field(), Problem::TooLong { len: s.len(), max }));
        }
        Ok(())
    }

    fn path(&self, field: impl Fn() -> String, p: &str) -> Result<(), ProtoError> {
        self.c_string(&field, p, self.limits.max_path)?;
        let Some(rest) = p.strip_prefix('/') else {
            return Err(self.fail(field(), Problem::NotAbsolute));
        };
        if !rest.is_empty()
            && rest
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(self.fail(field(), Problem::NotNormalized));
        }
        Ok(())
    }

    fn mode(&self, field: impl FnOnce() -> String, mode: u32) -> Result<(), ProtoError> {
        self.range(field, mode.into(), 0, MAX_MODE.into())
    }

    /// A list of short strings that must be sorted and free of duplicates (one spelling).
    fn sorted_names(&self, field: &'static str, names: &[String]) -> Result<(), ProtoError> {
        self.count(|| field.into(), names.len(), self.limits.max_items)?;
        for (i, name) in names.iter().enumerate() {
            self.short(|| format!("{field}[{i}]"), name)?;
        }
        for (i, pair) in names.windows(2).enumerate() {
            if pair[0] == pair[1] {
                return Err(self.fail(
                    format!("{field}[{}]", i + 1),
                    Problem::Duplicate(pair[1].clone()),
                ));
            }
            if pair[0] > pair[1] {
                return Err(self.fail(format!("{field}[{}]", i + 1), Problem::NotSorted));
            }
        }
        Ok(())
    }

    fn hello(&self, m: &Hello) -> Result<(), ProtoError> {
        self.short(|| "name".into(), &m.name)?;
        self.short(|| "softwareVersion".into(), &m.software_version)?;
        self.sorted_names("features", &m.features)
    }

    fn hello_ack(&self, m: &HelloAck) -> Result<(), ProtoError> {
        self.short(|| "name".into(), &m.name)?;
        self.short(|| "softwareVersion".into(), &m.software_version)?;
        self.sorted_names("features", &m.features)
    }

    fn ready(&self, m: &Ready) -> Result<(), ProtoError> {
        if let Some(k) = &m.kernel_release {
            self.short(|| "kernelRelease".into(), k)?;
        }
        self.count(|| "mounts".into(), m.mounts.len(), self.limits.max_items)?;
        for (i, mount) in m.mounts.iter().enumerate() {
            self.path(|| format!("mounts[{i}].target"), &mount.target)?;
            if let Some(source) = &mount.source {
                self.path(|| format!("mounts[{i}].source"), source)?;
            }
        }
        Ok(())
    }

    fn exec(&self, m: &Exec) -> Result<(), ProtoError> {
        let l = self.limits;
        if m.argv.is_empty() {
            return Err(self.fail("argv".into(), Problem::Empty));
        }
        self.count(|| "argv".into(), m.argv.len(), l.max_argv)?;
        self.non_empty(|| "argv[0]".into(), &m.argv[0])?;
        for (i, arg) in m.argv.iter().enumerate() {
            self.c_string(|| format!("argv[{i}]"), arg, l.max_arg_len)?;
        }
        self.count(|| "env".into(), m.env.len(), l.max_env)?;
        let mut seen = BTreeSet::new();
        for (i, var) in m.env.iter().enumerate() {
            self.non_empty(|| format!("env[{i}].name"), &var.name)?;
            let len = var.name.len() + var.value.len();
            if len > l.max_env_len {
                let problem = Problem::TooLong {
                    len,
                    max: l.max_env_len,
                };
                return Err(self.fail(format!("env[{i}]"), problem));
            }
            self.c_string(|| format!("env[{i}].name"), &var.name, l.max_env_len)?;
            self.c_string(|| format!("env[{i}].value"), &var.value, l.max_env_len)?;
            if var.name.contains('=') {
                return Err(self.fail(format!("env[{i}].name"), Problem::BadChar('=')));
            }
            if !seen.insert(var.name.as_str()) {
                return Err(self.fail(
                    format!("env[{i}].name"),
                    Problem::Duplicate(var.name.clone()),
                ));
            }
        }
        if let Some(cwd) = &m.cwd {
            self.path(|| "cwd".into(), cwd)?;
        }
        if let Some(t) = m.timeout_ms {
            self.range(
                || "timeoutMs".into(),
                t.min(i64::MAX as u64) as i64,
                1,
                i64::MAX,
            )?;
        }
        if let Some(tty) = m.tty {
            self.range(|| "tty.rows".into(), tty.rows.into(), 1, u16::MAX.into())?;
            self.range(|| "tty.cols".into(), tty.cols.into(), 1, u16::MAX.into())?;
        }
        // u32::MAX is (uid_t)-1, which setresuid reads as "leave unchanged".
        let id_max = i64::from(u32::MAX) - 1;
        if let Some(uid) = m.user.uid {
            self.range(|| "user.uid".into(), uid.into(), 0, id_max)?;
        }
        if let Some(gid) = m.user.gid {
            self.range(|| "user.gid".into(), gid.into(), 0, id_max)?;
        }
        Ok(())
    }

    fn confinement(&self, m: &Confinement) -> Result<(), ProtoError> {
        let l = self.limits;
        self.c_string(|| "confinement.uidMap".into(), &m.uid_map, l.max_text)?;
        self.c_string(|| "confinement.gidMap".into(), &m.gid_map, l.max_text)?;
        if let Some(ll) = &m.landlock {
            for (name, list) in [
                ("rules", &ll.rules),
                ("skipped", &ll.skipped),
                ("scopes", &ll.scopes),
            ] {
                self.count(
                    || format!("confinement.landlock.{name}"),
                    list.len(),
                    l.max_list_entries,
                )?;
                for (i, s) in list.iter().enumerate() {
                    self.c_string(
                        || format!("confinement.landlock.{name}[{i}]"),
                        s,
                        l.max_path + l.max_short,
                    )?;
                }
            }
        }
        if let Some(sc) = &m.seccomp {
            self.short(|| "confinement.seccomp.profile".into(), &sc.profile)?;
            self.short(|| "confinement.seccomp.digest".into(), &sc.digest)?;
            if let Some(sockets) = &sc.sockets {
                for (name, list) in [
                    ("families", &sockets.families),
                    ("netlinkProtocols", &sockets.netlink_protocols),
                    ("inetSocketTypes", &sockets.inet_socket_types),
                    ("ipProtocols", &sockets.ip_protocols),
                ] {
                    self.count(
                        || format!("confinement.seccomp.sockets.{name}"),
                        list.len(),
                        l.max_items,
                    )?;
                    for (i, s) in list.iter().enumerate() {
                        self.short(|| format!("confinement.seccomp.sockets.{name}[{i}]"), s)?;
                    }
                }
            }
        }
        self.count(
            || "confinement.rlimits".into(),
            m.rlimits.len(),
            l.max_items,
        )?;
        for (i, r) in m.rlimits.iter().enumerate() {
            self.short(|| format!("confinement.rlimits[{i}].name"), &r.name)?;
        }
        Ok(())
    }

    fn dir_entry(&self, i: usize, e: &DirEntry) -> Result<(), ProtoError> {
        let field = || format!("entries[{i}].name");
        self.non_empty(field, &e.name)?;
        self.c_string(field, &e.name, self.limits.max_name)?;
        if e.name.contains('/') {
            return Err(self.fail(field(), Problem::BadChar('/')));
        }
        if e.name == "." || e.name == ".." {
            return Err(self.fail(field(), Problem::Rule("`.` and `..` are not entries")));
        }
        self.file_info(|| format!("entries[{i}].info"), &e.info)
    }

    fn file_info(&self, field: impl Fn() -> String, info: &FileInfo) -> Result<(), ProtoError> {
        self.mode(|| format!("{}.mode", field()), info.mode)?;
        self.range(
            || format!("{}.mtimeNsec", field()),
            info.mtime_nsec.into(),
            0,
            999_999_999,
        )?;
        match (info.kind, &info.link_target) {
            (FileKind::Symlink, Some(target)) => {
                let f = || format!("{}.linkTarget", field());
                self.non_empty(f, target)?;
                self.c_string(f, target, self.limits.max_path)
            }
            (FileKind::Symlink, None) => Err(self.fail(
                format!("{}.linkTarget", field()),
                Problem::Rule("a symlink has a link target"),
            )),
            (_, Some(_)) => Err(self.fail(
                format!("{}.linkTarget", field()),
                Problem::Rule("only a symlink has a link target"),
            )),
            (_, None) => Ok(()),
        }
    }
}
