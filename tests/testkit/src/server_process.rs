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
