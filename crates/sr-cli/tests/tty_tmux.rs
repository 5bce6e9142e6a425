//! `safe-run run -t` in a real terminal: tmux runs it with python3's REPL inside the sandbox,
//! keys go in with send-keys, the screen comes back with capture-pane. `2+2` must give `4`, and
//! after safe-run is interrupted (SIGINT) the terminal must be back in its cooked mode.
//! Real sandbox, as root; needs tmux (scripts/setup.sh installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use std::process::Command;
use std::time::Duration;

use run_support::*;
use serde_json::json;

fn tmux(args: &[&str]) -> String {
    let o = Command::new("tmux").args(args).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

fn wait_for_file(path: &std::path::Path) -> String {
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with('\n')
        {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} never appeared", path.display());
}

#[test]
fn python_in_a_terminal_then_sigint_restores_the_terminal() {
    if !require_root("python_in_a_terminal_then_sigint_restores_the_terminal") {
        return;
    }
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "tmux is missing (CI=true); scripts/setup.sh installs it"
        );
        eprintln!("SKIPPED: tmux is not installed");
        return;
    }
    let env = Env::new();
    let p = env.policy("repl", &policy("/usr/bin/python3", &[], json!({})));
    let dir = env.share();
    std::fs::create_dir_all(&dir).unwrap();
    let (stty, rc) = (dir.join("stty.txt"), dir.join("rc.txt"));
    let cmd = env.run_cmd(&p);
    let mut line = String::new();
    for (k, v) in cmd.get_envs() {
        if let (k, Some(v)) = (k.to_string_lossy(), v) {
            line.push_str(&format!("{k}='{}' ", v.to_string_lossy()));
        }
    }
    line.push_str(&format!(
        "'{}' run -t --policy '{}' -- /usr/bin/python3; echo $? > '{}'; stty -a > '{}'; sleep 60",
        bin(),
        p.display(),
        rc.display(),
        stty.display()
    ));
    let name = format!("sr-tty-{}", std::process::id());
    let _session = Session(name.clone());
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &name,
        "-x",
        "80",
        "-y",
        "24",
        "sh",
        "-c",
        &line,
    ]);
    let screen = |want: &str| {
        (0..200).any(|_| {
            let s = tmux(&["capture-pane", "-p", "-t", &name]);
            if s.contains(want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
            false
        })
    };
    assert!(
        screen(">>>"),
        "{}",
        tmux(&["capture-pane", "-p", "-t", &name])
    );
    tmux(&["send-keys", "-t", &name, "2+2", "Enter"]);
    assert!(
        screen("\n4\n"),
        "2+2 did not give 4:\n{}",
        tmux(&["capture-pane", "-p", "-t", &name])
    );
    // Raw mode while it runs: the host terminal does not echo or edit lines itself.
    let pids = pids_with_cmdline(&format!("run -t --policy {}", p.display()));
    assert_eq!(pids.len(), 1, "{pids:?}");
    signal(pids[0] as u32, "INT");
    assert_eq!(wait_for_file(&rc).trim(), "130");
    let modes = wait_for_file(&stty);
    for flag in ["icanon", "echo", "isig", "icrnl", "opost"] {
        assert!(
            modes.split_whitespace().any(|w| w == flag),
            "the terminal was not restored ({flag}): {modes}"
        );
    }
}
