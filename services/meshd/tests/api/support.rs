//! Helpers shared by the test modules: running the meshd binary and reading its banner.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The meshd binary cargo built for these tests.
pub fn meshd_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshd"))
}

/// A `meshd` command with a clean `MESH__` environment.
pub fn meshd_command() -> Command {
    let mut command = Command::new(meshd_binary());
    for (name, _) in std::env::vars() {
        if name.starts_with("MESH__") {
            command.env_remove(name);
        }
    }
    command.stdin(Stdio::null()).kill_on_drop(true);
    command
}

/// A meshd process serving on a free port, with the address it printed.
pub struct MeshdProcess {
    pub child: Child,
    pub addr: String,
    pub stderr: tokio::task::JoinHandle<String>,
}

/// Spawns `command` (with `--listen 127.0.0.1:0` added) and waits for its banner line
/// `meshd listening on <addr>`.
pub async fn spawn_meshd(mut command: Command) -> MeshdProcess {
    command.arg("--listen").arg("127.0.0.1:0").stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("meshd starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let stderr = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut all = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("meshd prints its address within 30 s")
        .expect("stdout is readable")
        .expect("meshd printed a line");
    let addr =
        first.strip_prefix("meshd listening on ").unwrap_or_else(|| panic!("unexpected banner: {first}")).to_owned();
    // Keep draining stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    MeshdProcess { child, addr, stderr }
}

pub use mesh_testkit::status::reason;
