//! A fake Firecracker API server for tests: it listens where Firecracker would, checks each
//! request's method, path and body against the shapes of Firecracker's published API
//! (src/firecracker/swagger/firecracker.yaml: the fields each body may have, those it must
//! have, their types; unknown fields refused as Firecracker's serde does), checks that the
//! files it is told to open exist in the jail, answers as Firecracker does (`204` with no
//! body; `400` with `{"fault_message": "..."}`), and records what it was asked. After a
//! successful `InstanceStart` it can play the guest: listen on the vsock's Unix socket, answer
//! `CONNECT <port>` with `OK <port>` and the setup line with the agent's facts.

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
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    boot_source: bool,
    root_drive: bool,
    machine: bool,
    started: bool,
    vsock_uds: Option<String>,
}

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bool,
    Int,
    Obj,
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
                };
                if !ok {
                    return Err(format!(
                        "An error occurred when deserializing the json body of a request: invalid type for `{f}`: {v}"
                    ));
                }
            }
        }
    }
    Ok(())
}

impl FakeFirecracker {
    pub fn new(root: &Path, refuse: Option<&str>, guest: Guest) -> Self {
        FakeFirecracker {
            root: root.to_path_buf(),
            seen: Arc::new(Mutex::new(Vec::new())),
            refuse: refuse.map(str::to_owned),
            guest,
            state: Arc::new(Mutex::new(State::default())),
        }
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
        if method != "PUT" {
            return Err(format!("Invalid request method {method} for {path}"));
        }
        check_body(path, body)?;
        if self.refuse.as_deref() == Some(path) {
            return Err(format!("refused by the test at {path}"));
        }
        let mut st = self.state.lock().unwrap();
        if st.started && path != "/actions" {
            return Err(
                "The requested operation is not supported after starting the microVM.".into(),
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
                st.machine = true;
            }
            "/boot-source" => {
                let k = body["kernel_image_path"].as_str().unwrap_or("");
                if !in_jail(k).is_file() {
                    return Err(format!(
                        "The kernel file cannot be opened: No such file or directory (os error 2): {k}"
                    ));
                }
                st.boot_source = true;
            }
            "/vsock" => {
                if body["guest_cid"].as_u64().unwrap_or(0) < 3 {
                    return Err("Invalid guest CID".into());
                }
                st.vsock_uds = body["uds_path"].as_str().map(str::to_owned);
            }
            "/actions" => {
                match body["action_type"].as_str() {
                    Some("InstanceStart") => {
                        if !st.boot_source {
                            return Err("Cannot start microvm without kernel configuration.".into());
                        }
                        if st.started {
                            return Err("The requested operation is not supported after starting the microVM.".into());
                        }
                        st.started = true;
                        if self.guest == Guest::Agent
                            && let Some(uds) = st.vsock_uds.clone()
                        {
                            self.guest_agent(&in_jail(&uds));
                        }
                    }
                    Some("FlushMetrics") | Some("SendCtrlAltDel") => {}
                    other => return Err(format!("unknown variant `{other:?}`")),
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
                if body["is_root_device"] == true {
                    st.root_drive = true;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The guest's side of the hybrid vsock, and the agent's setup answer.
    fn guest_agent(&self, uds: &Path) {
        let listener = UnixListener::bind(uds).unwrap();
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

    pub fn paths(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.path.clone())
            .collect()
    }
}
