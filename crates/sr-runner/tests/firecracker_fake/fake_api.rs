//! A fake Firecracker API server for tests: it listens where Firecracker would, checks each
//! request's method, path and body against the shapes of Firecracker's published API
//! (src/firecracker/swagger/firecracker.yaml of v1.10, the release docs/microvm.md installs:
//! the fields each body may have, those it must have, their types and enums; unknown fields
//! refused as Firecracker's serde does), checks that the files it is told to open exist in the
//! jail, answers as Firecracker does (`204` with no body; `400` with `{"fault_message":
//! "..."}`), and records what it was asked. After a successful `InstanceStart` it can play the
//! guest: print the agent's console line, listen on the vsock's Unix socket, answer
//! `CONNECT <port>` with `OK <port>` and the setup line with the agent's facts.
//!
//! Snapshots as Firecracker orders them: `PATCH /vm` only once the VM runs;
//! `PUT /snapshot/create` only while it is paused (the fake writes a state file naming the
//! vsock device and a small memory file); `PUT /snapshot/load` only on a fresh process (after
//! nothing but the logger and metrics), with exactly one of `mem_backend` and `mem_file_path`;
//! it binds the snapshot's vsock socket again, and the guest answers once resumed. A load that
//! fails leaves the process dead, as Firecracker exits then: later requests get no answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// What the guest does after `InstanceStart`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Guest {
    /// Listens on vsock and answers the setup line like the agent.
    Agent,
    /// Never comes up (no vsock listener).
    Silent,
}

/// One recorded request.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub status: u16,
}

#[derive(Clone)]
pub struct FakeFirecracker {
    pub root: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Answer 400 to this path (a refusal Firecracker could give, e.g. a kernel it rejects).
    pub refuse: Option<String>,
    pub guest: Guest,
    /// Firecracker's stdout, the guest's serial console (the agent prints its line there).
    pub console: Option<PathBuf>,
    /// The setup lines the guest agent received.
    pub setups: Arc<Mutex<Vec<Value>>>,
    state: Arc<Mutex<State>>,
}

/// The console line the guest agent prints once it listens (`AGENT_LISTENING` in the driver).
pub const AGENT_LINE: &str =
    "safe-run-agent 0.1.0: kernel 6.1.0-fake, listening on vsock port 1024\n";

/// The bytes of the memory file a fake snapshot holds.
pub const FAKE_MEMORY: usize = 64 * 1024;

#[derive(Default)]
struct State {
    boot_source: bool,
    /// A boot-specific resource was configured: a load is no longer allowed.
    configured: bool,
    /// Booted or loaded.
    started: bool,
    paused: bool,
    /// A load failed: Firecracker exits, nothing answers any more.
    dead: bool,
    vsock: Option<Value>,
    /// The vsock socket a load bound, served once the VM is resumed.
    waiting_vsock: Option<UnixListener>,
}

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bool,
    Int,
    Obj,
    Enum(&'static [&'static str]),
}

/// `(field, type, required)` per endpoint, from the published spec.
fn schema(path: &str) -> Option<Vec<(&'static str, Ty, bool)>> {
    use Ty::*;
    let s = match path {
        "/logger" => vec![
            ("level", Str, false),
            ("log_path", Str, false),
            ("module", Str, false),
            ("show_level", Bool, false),
            ("show_log_origin", Bool, false),
        ],
        "/metrics" => vec![
            ("metrics_path", Str, true),
            ("emit_id", Bool, false),
            ("properties", Obj, false),
        ],
        "/machine-config" => vec![
            ("vcpu_count", Int, true),
            ("mem_size_mib", Int, true),
            ("smt", Bool, false),
            ("track_dirty_pages", Bool, false),
            ("huge_pages", Str, false),
            ("cpu_template", Str, false),
        ],
        "/boot-source" => vec![
            ("kernel_image_path", Str, true),
            ("boot_args", Str, false),
            ("initrd_path", Str, false),
        ],
        "/vsock" => vec![
            ("guest_cid", Int, true),
            ("uds_path", Str, true),
            ("vsock_id", Str, false),
        ],
        "/actions" => vec![("action_type", Str, true)],
        "/vm" => vec![("state", Enum(&["Paused", "Resumed"]), true)],
        "/snapshot/create" => vec![
            ("snapshot_type", Enum(&["Full", "Diff"]), false),
            ("snapshot_path", Str, true),
            ("mem_file_path", Str, true),
        ],
        // v1.10: no track_dirty_pages, network_overrides or vsock_override yet.
        "/snapshot/load" => vec![
            ("snapshot_path", Str, true),
            ("mem_file_path", Str, false),
            ("mem_backend", Obj, false),
            ("enable_diff_snapshots", Bool, false),
            ("resume_vm", Bool, false),
        ],
        "mem_backend" => vec![
            ("backend_type", Enum(&["File", "Uffd"]), true),
            ("backend_path", Str, true),
        ],
        p if p.starts_with("/drives/") => vec![
            ("drive_id", Str, true),
            ("is_root_device", Bool, true),
            ("is_read_only", Bool, false),
            ("path_on_host", Str, false),
            ("partuuid", Str, false),
            ("cache_type", Str, false),
            ("io_engine", Str, false),
            ("rate_limiter", Obj, false),
            ("socket", Str, false),
        ],
        p if p.starts_with("/network-interfaces/") => vec![
            ("iface_id", Str, true),
            ("host_dev_name", Str, true),
            ("guest_mac", Str, false),
            ("rx_rate_limiter", Obj, false),
            ("tx_rate_limiter", Obj, false),
        ],
        _ => return None,
    };
    Some(s)
}

/// Why `body` does not fit `path`'s schema, in the words Firecracker's serde would use.
pub fn check_body(path: &str, body: &Value) -> Result<(), String> {
    let fields = schema(path).ok_or_else(|| format!("Invalid request path {path}"))?;
    let obj = body
        .as_object()
        .ok_or_else(|| "An error occurred when deserializing the json body of a request: expected a JSON object".to_owned())?;
    for k in obj.keys() {
        if !fields.iter().any(|(f, _, _)| f == k) {
            let names: Vec<_> = fields.iter().map(|(f, _, _)| format!("`{f}`")).collect();
            return Err(format!(
                "An error occurred when deserializing the json body of a request: unknown field `{k}`, expected one of {}.",
                names.join(", ")
            ));
        }
    }
    for (f, ty, required) in &fields {
        match obj.get(*f) {
            None if *required => {
                return Err(format!(
                    "An error occurred when deserializing the json body of a request: missing field `{f}`."
                ));
            }
            None => {}
            Some(v) => {
                let ok = match ty {
                    Ty::Str => v.is_string(),
                    Ty::Bool => v.is_boolean(),
                    Ty::Int => v.is_u64(),
                    Ty::Obj => v.is_object(),
                    Ty::Enum(names) => {
                        let Some(name) = v.as_str() else {
                            return Err(format!(
                                "An error occurred when deserializing the json body of a request: invalid type for `{f}`: {v}"
                            ));
                        };
                        if !names.contains(&name) {
                            let expected: Vec<_> = names.iter().map(|n| format!("`{n}`")).collect();
                            return Err(format!(
                                "An error occurred when deserializing the json body of a request: unknown variant `{name}`, expected one of {}.",
                                expected.join(", ")
                            ));
                        }
                        true
                    }
                };
                if !ok {
                    return Err(format!(
                        "An error occurred when deserializing the json body of a request: invalid type for `{f}`: {v}"
                    ));
                }
            }
        }
    }
    if path == "/snapshot/load" {
        if let Some(b) = obj.get("mem_backend") {
            check_body("mem_backend", b)?;
        }
        match (obj.get("mem_backend"), obj.get("mem_file_path")) {
            (Some(_), Some(_)) => return Err("An error occurred when deserializing the json body of a request: too many fields: either `mem_backend` or `mem_file_path` exclusively is required.".into()),
            (None, None) => return Err("An error occurred when deserializing the json body of a request: missing field: either `mem_backend` or `mem_file_path` is required.".into()),
            _ => {}
        }
    }
    Ok(())
}

/// The method and path pairs Firecracker routes (of those the fake knows).
fn routed(method: &str, path: &str) -> bool {
    match (method, path) {
        ("PATCH", "/vm") => true,
        ("PUT", "/vm") | ("PUT", "mem_backend") => false,
        ("PUT", p) => schema(p).is_some(),
        _ => false,
    }
}

impl FakeFirecracker {
    pub fn new(root: &Path, refuse: Option<&str>, guest: Guest) -> Self {
        FakeFirecracker {
            root: root.to_path_buf(),
            seen: Arc::new(Mutex::new(Vec::new())),
            refuse: refuse.map(str::to_owned),
            guest,
            console: None,
            setups: Arc::new(Mutex::new(Vec::new())),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// The same, printing the guest's console into `path` (Firecracker's stdout).
    pub fn with_console(mut self, path: &Path) -> Self {
        self.console = Some(path.to_path_buf());
        self
    }

    /// Listens on `socket` (as Firecracker creates its API socket) and serves on a thread.
    pub fn serve(&self, socket: &Path) {
        let listener = UnixListener::bind(socket).unwrap();
        let me = self.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let me = me.clone();
                std::thread::spawn(move || me.connection(conn));
            }
        });
    }

    fn connection(&self, conn: UnixStream) {
        let mut r = BufReader::new(conn.try_clone().unwrap());
        let mut w = conn;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let mut parts = line.trim_end().split(' ');
            let method = parts.next().unwrap_or("").to_owned();
            let path = parts.next().unwrap_or("").to_owned();
            let mut length = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 {
                    return;
                }
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((n, v)) = h.split_once(':')
                    && n.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0u8; length];
            r.read_exact(&mut body).unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if self.state.lock().unwrap().dead {
                // Firecracker exited after a failed load.
                return;
            }
            let answer = self.handle(&method, &path, &body);
            let status = match &answer {
                Ok(()) => 204,
                Err(_) => 400,
            };
            self.seen.lock().unwrap().push(Seen {
                method,
                path,
                body,
                status,
            });
            let bytes = match answer {
                Ok(()) => {
                    "HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n"
                        .to_owned()
                }
                Err(why) => {
                    let b = json!({"fault_message": why}).to_string();
                    format!(
                        "HTTP/1.1 400 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                        b.len()
                    )
                }
            };
            if w.write_all(bytes.as_bytes()).is_err() {
                return;
            }
        }
    }

    fn handle(&self, method: &str, path: &str, body: &Value) -> Result<(), String> {
        if !routed(method, path) {
            let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
            return Err(format!(
                "Invalid request method and/or path: {method} {first}."
            ));
        }
        check_body(path, body)?;
        if self.refuse.as_deref() == Some(path) {
            if path == "/snapshot/load" {
                self.state.lock().unwrap().dead = true;
            }
            return Err(format!("refused by the test at {path}"));
        }
        let mut st = self.state.lock().unwrap();
        let runtime = matches!(path, "/actions" | "/vm" | "/snapshot/create");
        if st.started && !runtime {
            return Err(
                "The requested operation is not supported after starting the microVM.".into(),
            );
        }
        if !st.started && matches!(path, "/vm" | "/snapshot/create") {
            return Err(
                "The requested operation is not supported before starting the microVM.".into(),
            );
        }
        let in_jail = |p: &str| self.root.join(p.trim_start_matches('/'));
        match path {
            "/logger" | "/metrics" => {
                let f = body
                    .get("log_path")
                    .or_else(|| body.get("metrics_path"))
                    .and_then(Value::as_str);
                if let Some(f) = f
                    && !in_jail(f).exists()
                {
                    return Err(format!(
                        "Failed to open target file: No such file or directory: {f}"
                    ));
                }
            }
            "/machine-config" => {
                let n = body["vcpu_count"].as_u64().unwrap_or(0);
                if n == 0 || n > 32 || (n > 1 && n % 2 == 1) {
                    return Err("The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.".into());
                }
                st.configured = true;
            }
            "/boot-source" => {
                let k = body["kernel_image_path"].as_str().unwrap_or("");
                if !in_jail(k).is_file() {
                    return Err(format!(
                        "The kernel file cannot be opened: No such file or directory (os error 2): {k}"
                    ));
                }
                st.boot_source = true;
                st.configured = true;
            }
            "/vsock" => {
                if body["guest_cid"].as_u64().unwrap_or(0) < 3 {
                    return Err("Invalid guest CID".into());
                }
                st.vsock = Some(body.clone());
                st.configured = true;
            }
            "/actions" => match body["action_type"].as_str() {
                Some("InstanceStart") => {
                    if !st.boot_source {
                        return Err("Cannot start microvm without kernel configuration.".into());
                    }
                    if st.started {
                        return Err(
                            "The requested operation is not supported after starting the microVM."
                                .into(),
                        );
                    }
                    st.started = true;
                    if self.guest == Guest::Agent
                        && let Some(uds) = st.vsock.as_ref().and_then(|v| v["uds_path"].as_str())
                    {
                        let listener = UnixListener::bind(in_jail(uds)).unwrap();
                        self.guest_agent(listener);
                        self.print_console(AGENT_LINE);
                    }
                }
                Some("FlushMetrics") | Some("SendCtrlAltDel") => {}
                other => return Err(format!("unknown variant `{other:?}`")),
            },
            "/vm" => {
                st.paused = body["state"] == "Paused";
                if !st.paused
                    && let Some(listener) = st.waiting_vsock.take()
                {
                    self.guest_agent(listener);
                }
            }
            "/snapshot/create" => {
                if body.get("snapshot_type").and_then(Value::as_str) == Some("Diff") {
                    return Err("The requested operation is not supported: Diff snapshots are not allowed on uVMs with dirty page tracking disabled.".into());
                }
                if !st.paused {
                    return Err("Create snapshot error: Cannot save the microVM state: Operation not allowed: save/restore unavailable while running".into());
                }
                let state = json!({"fakeFirecrackerVmState": 1, "vsock": st.vsock});
                let vmstate = body["snapshot_path"].as_str().unwrap_or("");
                let memory = body["mem_file_path"].as_str().unwrap_or("");
                std::fs::write(in_jail(vmstate), state.to_string()).map_err(|e| {
                    format!("Create snapshot error: Cannot perform open on the snapshot backing file: {e}")
                })?;
                std::fs::write(in_jail(memory), vec![0x5a; FAKE_MEMORY]).map_err(|e| {
                    format!(
                        "Create snapshot error: Cannot perform open on the memory backing file: {e}"
                    )
                })?;
            }
            "/snapshot/load" => {
                if st.configured {
                    return Err("Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.".into());
                }
                let memory = body["mem_backend"]["backend_path"]
                    .as_str()
                    .or_else(|| body["mem_file_path"].as_str())
                    .unwrap_or("");
                let loaded = std::fs::read(in_jail(body["snapshot_path"].as_str().unwrap_or("")))
                    .map_err(|e| format!("Load snapshot error: Failed to restore from snapshot: Failed to get snapshot state from file: Failed to open snapshot file: {e}"))
                    .and_then(|b| {
                        serde_json::from_slice::<Value>(&b)
                            .ok()
                            .filter(|v| v["fakeFirecrackerVmState"] == 1)
                            .ok_or_else(|| "Load snapshot error: Failed to restore from snapshot: Failed to get snapshot state from file: Failed to load snapshot state from file: invalid data".to_owned())
                    })
                    .and_then(|state| {
                        if body["mem_backend"]["backend_type"] == "Uffd" {
                            return Err("the fake serves the File memory backend only".to_owned());
                        }
                        std::fs::metadata(in_jail(memory))
                            .map_err(|e| format!("Load snapshot error: Failed to restore from snapshot: Failed to load guest memory: {e}"))?;
                        Ok(state)
                    })
                    .and_then(|state| {
                        let uds = state["vsock"]["uds_path"].as_str().unwrap_or("");
                        UnixListener::bind(in_jail(uds)).map_err(|e| {
                            format!("Load snapshot error: Failed to restore from snapshot: Cannot restore devices: {e}")
                        })
                    });
                let listener = match loaded {
                    Ok(l) => l,
                    Err(e) => {
                        st.dead = true;
                        return Err(e);
                    }
                };
                st.started = true;
                st.paused = true;
                if body["resume_vm"] == true {
                    st.paused = false;
                    self.guest_agent(listener);
                } else {
                    st.waiting_vsock = Some(listener);
                }
            }
            p if p.starts_with("/drives/") => {
                if body["drive_id"].as_str() != p.strip_prefix("/drives/") {
                    return Err("The id from the path does not match the id from the body!".into());
                }
                let f = body["path_on_host"].as_str().unwrap_or("");
                if !in_jail(f).is_file() {
                    return Err(format!(
                        "Unable to create the block device: No such file or directory: {f}"
                    ));
                }
                st.configured = true;
            }
            p if p.starts_with("/network-interfaces/") => st.configured = true,
            _ => {}
        }
        Ok(())
    }

    fn print_console(&self, line: &str) {
        if let Some(c) = &self.console {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(c)
                .unwrap();
            f.write_all(line.as_bytes()).unwrap();
        }
    }

    /// The guest's side of the hybrid vsock, and the agent's setup answer.
    fn guest_agent(&self, listener: UnixListener) {
        if self.guest != Guest::Agent {
            return;
        }
        let setups = self.setups.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let port = line.trim_end().strip_prefix("CONNECT ").unwrap().to_owned();
                w.write_all(format!("OK {port}\n").as_bytes()).unwrap();
                let mut setup = String::new();
                r.read_line(&mut setup).unwrap();
                let setup: Value = serde_json::from_str(&setup).unwrap();
                assert!(setup["entropy"].as_str().unwrap().len() == 128);
                setups.lock().unwrap().push(setup);
                w.write_all(
                    b"{\"type\":\"ok\",\"kernelRelease\":\"6.1.0-fake\",\"modules\":[],\"landlockAbi\":0,\"seccomp\":true}\n",
                )
                .unwrap();
                // Hold the connection like the agent does, until the host closes it.
                let mut sink = Vec::new();
                let _ = r.read_to_end(&mut sink);
            }
        });
    }

    /// `METHOD path` of each request, in order.
    pub fn calls(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect()
    }

    pub fn paths(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.path.clone())
            .collect()
    }
}
