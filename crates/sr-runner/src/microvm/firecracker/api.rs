//! Firecracker's API as the driver uses it: the sequence of requests a plan turns into
//! ([`requests`]), the VM-state and snapshot requests ([`snapshot`]), a minimal blocking
//! HTTP/1.1 client over the API's Unix socket ([`UnixApi`]), and what a refusal says
//! ([`fault_message`]).
//!
//! Why not hyper: sr-runner is synchronous (threads, no async runtime), and the conversation is
//! a handful of `PUT`s and `PATCH`es with a JSON body to a local socket, each answered `204 No Content` or
//! `400` with a `Content-Length`-framed `{"fault_message": "..."}`. A client that writes one
//! request per connection and reads a `Content-Length` body is about a hundred lines, bounded
//! in what it reads and in how long it waits, and pulls no runtime into the runner.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

pub mod snapshot;
pub use snapshot::{SnapshotFiles, VmState, set_vm_state, snapshot_create, snapshot_load};

/// Where Firecracker writes its own log, inside the jail (moved to the run's `vm/` at stop).
pub const LOG_FILE: &str = "firecracker.log";
/// Where Firecracker writes its metrics, inside the jail (moved to the run's `vm/` at stop).
pub const METRICS_FILE: &str = "metrics.json";
/// Most bytes of a response's head, and of its body.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;

/// One API call.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    /// The step as a failure names it: `launch.api.<what>`.
    pub step: String,
    /// `PUT` or `PATCH`.
    pub method: &'static str,
    /// e.g. `/drives/rootfs`.
    pub path: String,
    /// The JSON body.
    pub body: Value,
}

/// The `PUT`s that configure Firecracker's own logger and metrics, into files in the jail's
/// root: the first requests of a cold boot and of a restore alike (a snapshot does not hold
/// them, and the spec allows them before a load).
pub fn logging_requests() -> Vec<ApiRequest> {
    vec![
        put(
            "logger",
            "/logger".into(),
            json!({"log_path": format!("/{LOG_FILE}"), "level": "Info", "show_level": true, "show_log_origin": false}),
        ),
        put(
            "metrics",
            "/metrics".into(),
            json!({"metrics_path": format!("/{METRICS_FILE}")}),
        ),
    ]
}

fn put(step: &str, path: String, body: Value) -> ApiRequest {
    ApiRequest {
        step: format!("launch.api.{step}"),
        method: "PUT",
        path,
        body,
    }
}

/// Firecracker accepts ids of ASCII letters, digits and `_` only; anything else in a path
/// would change the request.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The requests that configure and start the VM described by `vm_config` (Firecracker's
/// config-file shape), in order: logger and metrics first (so that any later refusal is in
/// Firecracker's log), then machine-config, boot-source, each drive, vsock, each network
/// interface, and `InstanceStart`. Logger and metrics files are in the jail's root.
pub fn requests(vm_config: &Value) -> Result<Vec<ApiRequest>, String> {
    let section = |name: &str| -> Result<Value, String> {
        vm_config
            .get(name)
            .filter(|v| v.is_object())
            .cloned()
            .ok_or_else(|| format!("the plan's vm_config has no {name:?} object"))
    };
    let mut out = logging_requests();
    out.push(put(
        "machine-config",
        "/machine-config".into(),
        section("machine-config")?,
    ));
    out.push(put(
        "boot-source",
        "/boot-source".into(),
        section("boot-source")?,
    ));
    let list = |name: &str, id_field: &str| -> Result<Vec<(String, Value)>, String> {
        match vm_config.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    let id = item.get(id_field).and_then(Value::as_str).unwrap_or("");
                    if valid_id(id) {
                        Ok((id.to_owned(), item.clone()))
                    } else {
                        Err(format!(
                            "{name}: {id_field} {id:?} is not an id Firecracker accepts"
                        ))
                    }
                })
                .collect(),
            Some(_) => Err(format!("the plan's vm_config {name:?} is not a list")),
        }
    };
    let drives = list("drives", "drive_id")?;
    if drives.is_empty() {
        return Err("the plan's vm_config has no drives (the rootfs)".into());
    }
    for (id, d) in drives {
        out.push(put(&format!("drives.{id}"), format!("/drives/{id}"), d));
    }
    out.push(put("vsock", "/vsock".into(), section("vsock")?));
    for (id, n) in list("network-interfaces", "iface_id")? {
        out.push(put(
            &format!("network-interfaces.{id}"),
            format!("/network-interfaces/{id}"),
            n,
        ));
    }
    out.push(put(
        "instance-start",
        "/actions".into(),
        json!({"action_type": "InstanceStart"}),
    ));
    Ok(out)
}

/// An answer from the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    /// The HTTP status.
    pub status: u16,
    /// The body (empty for 204).
    pub body: Vec<u8>,
}

/// What went wrong talking to the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket could not be reached or the exchange broke.
    #[error("{path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The answer is not HTTP/1.1 as Firecracker speaks it.
    #[error("{path}: an unreadable answer: {why}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
}

/// The API, as the driver needs it (a fake in unit tests).
pub trait Api {
    /// Sends one request and returns the answer.
    fn send(&mut self, req: &ApiRequest) -> Result<ApiResponse, ApiError>;
}

/// The API on its Unix socket: one connection per request.
pub struct UnixApi {
    path: PathBuf,
    timeout: Duration,
}

impl UnixApi {
    /// The API at `path`, each exchange bounded by `timeout`.
    pub fn new(path: &Path, timeout: Duration) -> Self {
        UnixApi {
            path: path.to_path_buf(),
            timeout,
        }
    }
}

/// The bytes of `req` on the wire.
pub fn encode(req: &ApiRequest) -> Vec<u8> {
    let body = req.body.to_string();
    let mut out = format!(
        "{} {} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        req.method,
        req.path,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Parses a response head (`HTTP/1.1 <code> ...` and headers, without the blank line):
/// the status and the body's length.
pub fn parse_head(head: &str) -> Result<(u16, usize), String> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("status line {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("status line {status_line:?}"))?;
    let mut length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value
                .trim()
                .parse()
                .map_err(|_| format!("Content-Length {value:?}"))?;
        }
    }
    if length > MAX_BODY {
        return Err(format!("a body of {length} bytes"));
    }
    Ok((status, length))
}

impl Api for UnixApi {
    fn send(&mut self, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let io = |source| ApiError::Io {
            path: self.path.clone(),
            source,
        };
        let mut s = UnixStream::connect(&self.path).map_err(io)?;
        s.set_read_timeout(Some(self.timeout)).map_err(io)?;
        s.set_write_timeout(Some(self.timeout)).map_err(io)?;
        s.write_all(&encode(req)).map_err(io)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if buf.len() > MAX_HEAD {
                return Err(ApiError::Protocol {
                    path: self.path.clone(),
                    why: "a head without end".into(),
                });
            }
            match s.read(&mut chunk) {
                Ok(0) => {
                    return Err(ApiError::Protocol {
                        path: self.path.clone(),
                        why: "the connection closed before an answer".into(),
                    });
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let (status, length) = parse_head(&head).map_err(|why| ApiError::Protocol {
            path: self.path.clone(),
            why,
        })?;
        let mut body = buf.split_off(head_end + 4);
        while body.len() < length {
            match s.read(&mut chunk) {
                Ok(0) => {
                    return Err(ApiError::Protocol {
                        path: self.path.clone(),
                        why: "the connection closed inside the body".into(),
                    });
                }
                Ok(n) => body.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        body.truncate(length);
        Ok(ApiResponse { status, body })
    }
}

/// What a refusal says: the `fault_message` of Firecracker's error body, or the body itself.
pub fn fault_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Fault {
        fault_message: String,
    }
    match serde_json::from_slice::<Fault>(body) {
        Ok(f) => f.fault_message,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                "no message".into()
            } else {
                text.chars().take(500).collect()
            }
        }
    }
}

/// What to try when Firecracker refuses `step`.
pub fn hint_for(step: &str) -> &'static str {
    match step {
        "launch.api.boot-source" => {
            "the kernel must be an uncompressed vmlinux with virtio-mmio built in (docs/microvm.md, Firecracker on KVM hosts)"
        }
        "launch.api.machine-config" => {
            "Firecracker takes 1 or an even number of vCPUs (at most 32) and enough memory for the guest"
        }
        "launch.api.vsock" => {
            "the vsock socket must not exist yet in the jail; see docs/microvm.md"
        }
        "launch.api.instance-start" => {
            "Firecracker could not start the guest: its log (vm/firecracker.log) says why; /dev/kvm must run normal guests"
        }
        "launch.api.snapshot-load" => {
            "a snapshot loads only into the Firecracker version that made it, on a host of the same CPU model; this Firecracker has exited. Remove the snapshot's directory or make it again (docs/microvm.md, Firecracker: snapshots); vm/firecracker.log says why"
        }
        "launch.api.snapshot-create" => {
            "Firecracker could not write the snapshot into its jail (room on the run directory's filesystem for the guest's memory?); vm/firecracker.log says why"
        }
        "launch.api.pause" | "launch.api.resume" => {
            "Firecracker could not change the VM's state; vm/firecracker.log says why"
        }
        s if s.starts_with("launch.api.drives") => {
            "the rootfs must be a readable ext4 image in the jail; see docs/microvm.md"
        }
        _ => "Firecracker refused the configuration: see vm/firecracker.log and docs/microvm.md",
    }
}

/// Sends `reqs` in order until one is refused: returns its step and Firecracker's reason, or
/// the broken exchange.
pub fn drive(api: &mut dyn Api, reqs: &[ApiRequest]) -> Result<(), (String, String)> {
    for r in reqs {
        match api.send(r) {
            Ok(resp) if (200..300).contains(&resp.status) => {}
            Ok(resp) => {
                return Err((
                    r.step.clone(),
                    format!(
                        "Firecracker refused {} {} ({}): {}",
                        r.method,
                        r.path,
                        resp.status,
                        fault_message(&resp.body)
                    ),
                ));
            }
            Err(e) => {
                return Err((r.step.clone(), format!("{} {}: {e}", r.method, r.path)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Value {
        json!({
            "boot-source": {"kernel_image_path": "vmlinux", "boot_args": "console=ttyS0"},
            "drives": [{"drive_id": "rootfs", "path_on_host": "rootfs.ext4", "is_root_device": true, "is_read_only": true}],
            "machine-config": {"vcpu_count": 2, "mem_size_mib": 512, "smt": false},
            "vsock": {"guest_cid": 3, "uds_path": "vsock.sock"},
        })
    }

    #[test]
    fn the_sequence_follows_the_plan() {
        let reqs = requests(&config()).unwrap();
        let paths: Vec<_> = reqs.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/logger",
                "/metrics",
                "/machine-config",
                "/boot-source",
                "/drives/rootfs",
                "/vsock",
                "/actions"
            ]
        );
        assert!(reqs.iter().all(|r| r.method == "PUT"));
        assert_eq!(reqs[3].step, "launch.api.boot-source");
        assert_eq!(reqs[4].step, "launch.api.drives.rootfs");
        assert_eq!(reqs[4].body["is_read_only"], true);
        assert_eq!(reqs[6].body, json!({"action_type": "InstanceStart"}));
        let mut net = config();
        net["network-interfaces"] = json!([{"iface_id": "eth0", "host_dev_name": "srtabc", "guest_mac": "06:00:ac:10:00:02"}]);
        let reqs = requests(&net).unwrap();
        assert_eq!(reqs[6].path, "/network-interfaces/eth0");
    }

    #[test]
    fn a_bad_plan_is_refused_before_any_request() {
        let mut c = config();
        c["drives"][0]["drive_id"] = json!("../actions");
        assert!(requests(&c).unwrap_err().contains("drive_id"));
        let mut c = config();
        c.as_object_mut().unwrap().remove("vsock");
        assert!(requests(&c).unwrap_err().contains("vsock"));
        let mut c = config();
        c["drives"] = json!([]);
        assert!(requests(&c).is_err());
    }

    #[test]
    fn requests_are_framed_by_content_length() {
        let r = put("vsock", "/vsock".into(), json!({"guest_cid": 3}));
        let text = String::from_utf8(encode(&r)).unwrap();
        assert!(text.starts_with("PUT /vsock HTTP/1.1\r\n"));
        assert!(text.ends_with("\r\nContent-Length: 15\r\n\r\n{\"guest_cid\":3}"));
    }

    #[test]
    fn heads_and_faults_parse() {
        assert_eq!(
            parse_head("HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive"),
            Ok((204, 0))
        );
        assert_eq!(
            parse_head("HTTP/1.1 400 \r\ncontent-length: 42\r\nContent-Type: application/json"),
            Ok((400, 42))
        );
        assert!(parse_head("SSH-2.0 hello").is_err());
        assert!(parse_head("HTTP/1.1 200 \r\nContent-Length: 99999999").is_err());
        assert_eq!(
            fault_message(br#"{"fault_message": "The kernel file cannot be opened"}"#),
            "The kernel file cannot be opened"
        );
        assert_eq!(fault_message(b"  oops "), "oops");
        assert_eq!(fault_message(b""), "no message");
    }

    struct Refuses(&'static str);
    impl Api for Refuses {
        fn send(&mut self, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
            if req.path == self.0 {
                Ok(ApiResponse {
                    status: 400,
                    body: br#"{"fault_message":"no"}"#.to_vec(),
                })
            } else {
                Ok(ApiResponse {
                    status: 204,
                    body: Vec::new(),
                })
            }
        }
    }

    #[test]
    fn driving_stops_at_the_first_refusal() {
        let reqs = requests(&config()).unwrap();
        assert!(drive(&mut Refuses("/nothing"), &reqs).is_ok());
        let (step, why) = drive(&mut Refuses("/boot-source"), &reqs).unwrap_err();
        assert_eq!(step, "launch.api.boot-source");
        assert_eq!(why, "Firecracker refused PUT /boot-source (400): no");
        assert!(hint_for(&step).contains("vmlinux"));
    }
}
