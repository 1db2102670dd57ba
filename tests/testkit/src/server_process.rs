//! What the server harnesses (`redis`, `postgres`) share: picking and holding a loopback
//! port, classifying a failed launch, and reading what a server wrote to its log.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;

use anyhow::Context;
use tokio::net::TcpSocket;

/// Why one launch of a server failed.
pub(crate) enum LaunchError {
    /// The port was taken: worth trying another one.
    PortInUse(anyhow::Error),
    /// Anything else.
    Fatal(anyhow::Error),
}

impl LaunchError {
    pub(crate) fn into_inner(self) -> anyhow::Error {
        match self {
            Self::PortInUse(error) | Self::Fatal(error) => error,
        }
    }
}

impl From<anyhow::Error> for LaunchError {
    fn from(error: anyhow::Error) -> Self {
        Self::Fatal(error)
    }
}

/// A port of `127.0.0.1` that was free a moment ago.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr().context("cannot read the address of a bound socket")?.port())
}

/// Binds `127.0.0.1:port` without listening, so that nobody else gets the port and connections are refused.
///
/// Best effort: `None` if the port cannot be bound.
pub(crate) fn reserve(port: u16) -> Option<TcpSocket> {
    let socket = TcpSocket::new_v4().ok()?;
    // the stopped server may leave connections in TIME_WAIT on the port
    socket.set_reuseaddr(true).ok()?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).ok()?;
    Some(socket)
}

/// The size of `path`, 0 if it does not exist.
pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |metadata| metadata.len())
}

/// The text of `path` from byte `start` on; empty if it cannot be read.
pub(crate) fn read_from(path: &Path, start: u64) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_default()
}

/// A log file of one launch of a server, and how long it was before the launch (it is
/// appended to across restarts).
pub(crate) struct LaunchLog {
    /// The file.
    pub(crate) path: std::path::PathBuf,
    start: u64,
}

impl LaunchLog {
    /// The log `file` in `dir`, from its current end on.
    pub(crate) fn new(dir: &Path, file: &str) -> Self {
        let path = dir.join(file);
        let start = file_len(&path);
        Self { path, start }
    }

    /// What this launch wrote to it, possibly nothing.
    pub(crate) fn text(&self) -> String {
        read_from(&self.path, self.start)
    }

    /// What this launch wrote to it, or `(empty)`.
    pub(crate) fn since_launch(&self) -> String {
        or_empty(self.text())
    }
}

/// `text`, or `(empty)` when it holds nothing but whitespace.
pub(crate) fn or_empty(text: String) -> String {
    if text.trim().is_empty() { String::from("(empty)") } else { text }
}

/// Waits (blocking, for `Drop`) until `child` has exited, at most `timeout`; whether it did.
pub(crate) fn reap_within(child: &mut tokio::process::Child, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if !matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Kills `child` at once (SIGKILL; an error means it has exited already) and reaps it, so that
/// its port is closed when this returns and no zombie is left to the runtime's reaper; a killed
/// process is gone within milliseconds, `timeout` only bounds the wait.
pub(crate) fn kill_and_reap(child: &mut tokio::process::Child, timeout: std::time::Duration) {
    let _ = child.start_kill();
    reap_within(child, timeout);
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
