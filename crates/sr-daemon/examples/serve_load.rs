//! A bounded load client for `safe-run serve` over its Unix socket (bench/serve/bench_load.sh):
//! CLIENTS threads, each with its own keep-alive connection and its own live sandbox, send
//! `POST /v1/sandboxes/{id}/execs?wait=true` for `/bin/true` until COUNT requests in all are
//! done or SECONDS pass, and print latency percentiles and throughput. The HTTP/1.1 exchange is
//! written by hand (one fixed request, a Content-Length answer) so that the client adds as
//! little as possible to what is measured; it is a measuring tool, not a general client.
//!
//!   serve_load SOCKET TOKEN CLIENTS COUNT SECONDS SANDBOX_ID...
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn exchange(conn: &mut BufReader<UnixStream>, request: &[u8]) -> u16 {
    conn.get_mut().write_all(request).unwrap();
    let mut status = String::new();
    conn.read_line(&mut status).unwrap();
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).unwrap();
    code
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 7 {
        eprintln!("usage: serve_load SOCKET TOKEN CLIENTS COUNT SECONDS SANDBOX_ID...");
        std::process::exit(2);
    }
    let (socket, token) = (args[1].clone(), args[2].clone());
    let clients: usize = args[3].parse().unwrap();
    let count: u64 = args[4].parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(args[5].parse().unwrap());
    let ids: Vec<String> = args[6..].to_vec();
    let issued = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (socket, token, id) = (socket.clone(), token.clone(), ids[i % ids.len()].clone());
            let (issued, failed) = (issued.clone(), failed.clone());
            std::thread::spawn(move || {
                let body = r#"{"argv": ["/bin/true"]}"#;
                let request = format!(
                    "POST /v1/sandboxes/{id}/execs?wait=true HTTP/1.1\r\nHost: safe-run\r\n\
                     Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let mut conn = BufReader::new(UnixStream::connect(&socket).unwrap());
                let mut took = Vec::new();
                while issued.fetch_add(1, Ordering::Relaxed) < count && Instant::now() < deadline {
                    let t = Instant::now();
                    if exchange(&mut conn, request.as_bytes()) != 200 {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    took.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                took
            })
        })
        .collect();
    let mut all: Vec<f64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let wall = started.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    println!("clients {clients}");
    println!("execs {}", all.len());
    println!("failed {}", failed.load(Ordering::Relaxed));
    println!("p50_ms {:.3}", percentile(&all, 0.50));
    println!("p99_ms {:.3}", percentile(&all, 0.99));
    println!("per_s {:.1}", all.len() as f64 / wall);
}
