//! Private `redis-server` instances for tests.
//!
//! Every [`RedisServer`] is its own `redis-server` child process, bound to `127.0.0.1` on a free loopback port,
//! with no persistence (`--save "" --appendonly no`) and its working directory and log file in a private temporary
//! directory. Tests therefore never share state, never depend on a system-wide Redis and can run in parallel.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let mut redis = mesh_testkit::redis::RedisServer::start().await?;
//! let mut conn = redis.connection().await?;
//! let _: () = redis::cmd("SET").arg("k").arg("v").query_async(&mut conn).await?;
//! redis.stop().await; // kill it mid-test...
//! redis.restart().await?; // ...and bring it back on the same port (empty: nothing is persisted)
//! # Ok(())
//! # }
//! ```
//!
//! # Ports
//!
//! A port is chosen by binding `127.0.0.1:0`, reading the port the kernel picked and releasing it just before
//! `redis-server` binds it. If another process wins that race, `redis-server` exits with "Address already in use"
//! and [`RedisServer::start`] tries again with another port. Readiness is checked by asking the server for its
//! working directory, so a foreign Redis that happens to answer on the port is never mistaken for ours. While a
//! server is stopped, its port stays reserved by a bound, non-listening socket (connections are refused), so that
//! [`RedisServer::restart`] can normally bind it again.
//!
//! # Lifetime
//!
//! Dropping a [`RedisServer`] sends `SIGKILL` to the process, waits (briefly, synchronously) until it has exited
//! and removes its directory. The process stays in the test binary's process group, so Ctrl-C on a test run reaches
//! it too. A server kept where it is never dropped (a `static`) or a test binary killed with `SIGKILL` can leave a
//! `redis-server` behind: own one server per test.
//!
//! # Binary
//!
//! `redis-server` is looked up on `PATH`; the environment variable [`REDIS_SERVER_ENV`] (`MESH_REDIS_SERVER`)
//! overrides the path.

use std::fs::OpenOptions;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tempfile::TempDir;
use tokio::net::TcpSocket;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::server_process::{LaunchError, LaunchLog, free_port, kill_and_reap, or_empty, reserve, tail};

/// Environment variable that overrides the path of the `redis-server` binary.
pub const REDIS_SERVER_ENV: &str = "MESH_REDIS_SERVER";

/// How long a freshly spawned `redis-server` may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Upper bound for one readiness probe (connect, `PING`, `CONFIG GET dir`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long dropping a [`RedisServer`] waits for the killed process to exit.
const DROP_REAP_TIMEOUT: Duration = Duration::from_secs(2);
/// How many ports [`RedisServer::start`] tries before it gives up.
const PORT_ATTEMPTS: usize = 5;
/// Redis log file, inside the server's directory.
const LOG_FILE: &str = "redis.log";
/// Standard output and error of the process (early configuration errors land here), inside the server's directory.
const OUTPUT_FILE: &str = "redis.out";
/// Lines of log shown in start-up errors.
const LOG_TAIL_LINES: usize = 20;

/// A private `redis-server` child process on a free loopback port; see the [module documentation](self).
///
/// The process is killed when the value is dropped.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    /// Holds the process's working directory and log files; deleted on drop.
    dir: TempDir,
    port: u16,
    /// `None` while stopped.
    child: Option<Child>,
    /// Keeps the port bound (without listening) while the server is stopped.
    reservation: Option<TcpSocket>,
}

impl RedisServer {
    /// Starts a `redis-server` on a free port of `127.0.0.1` and waits until it answers `PING`.
    ///
    /// Fails if `redis-server` is not installed, exits during start-up (the error shows the tail of its log) or does
    /// not answer within 10 seconds.
    pub async fn start() -> anyhow::Result<Self> {
        let binary = redis_server_binary();
        let dir = tempfile::Builder::new()
            .prefix("mesh-redis-")
            .tempdir()
            .context("cannot create a temporary directory for redis-server")?;
        let mut last_error = anyhow!("no port tried");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match launch(&binary, dir.path(), port).await {
                Ok(child) => return Ok(Self { binary, dir, port, child: Some(child), reservation: None }),
                Err(LaunchError::PortInUse(error)) => last_error = error,
                Err(LaunchError::Fatal(error)) => return Err(error),
            }
        }
        Err(last_error.context(format!("redis-server found no free port in {PORT_ATTEMPTS} attempts")))
    }

    /// The URL to connect to, `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        url(self.port)
    }

    /// The TCP port; it stays the same across [`stop`](Self::stop) and [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the running server (`None` while stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The socket address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The server's private directory (its working directory, with `redis.log` and `redis.out`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client for this server; it connects lazily.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("a redis://127.0.0.1:PORT url is always valid")
    }

    /// A new multiplexed async connection to this server.
    pub async fn connection(&self) -> anyhow::Result<MultiplexedConnection> {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("cannot connect to redis-server at {}", self.url()))
    }

    /// Kills the process (`SIGKILL`, no clean shutdown) and waits for it to exit.
    ///
    /// The port stays reserved for [`restart`](Self::restart): connections to it are refused meanwhile. Stopping a
    /// stopped server does nothing.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // an error means the process had already exited and been reaped: it is stopped either way
            let _ = child.kill().await;
        }
        if self.reservation.is_none() {
            self.reservation = reserve(self.port);
        }
    }

    /// Starts the server again on the same port, with the same directory and arguments, and waits until it answers.
    ///
    /// A running server is stopped first. Data is gone: nothing is persisted.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        // release the port just before redis-server binds it
        self.reservation = None;
        match launch(&self.binary, self.dir.path(), self.port).await {
            Ok(child) => {
                self.child = Some(child);
                Ok(())
            }
            Err(error) => {
                self.reservation = reserve(self.port);
                Err(error.into_inner().context(format!("cannot restart redis-server on port {}", self.port)))
            }
        }
    }

    /// Whether the process is running: started (or restarted), not stopped, and has not exited on its own.
    pub fn is_running(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else { return false };
        match child.try_wait() {
            Ok(None) => true,
            // it exited (or cannot be waited for): forget it, as after stop
            Ok(Some(_)) | Err(_) => {
                self.child = None;
                false
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // `kill_on_drop` backs this up
        if let Some(child) = self.child.as_mut() {
            kill_and_reap(child, DROP_REAP_TIMEOUT);
        }
    }
}

/// The `redis-server` binary: [`REDIS_SERVER_ENV`] if set and not empty, otherwise `redis-server` from `PATH`.
fn redis_server_binary() -> PathBuf {
    std::env::var_os(REDIS_SERVER_ENV)
        .filter(|path| !path.is_empty())
        .map_or_else(|| PathBuf::from("redis-server"), PathBuf::from)
}

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// Spawns `redis-server` on `port` with its files in `dir` and waits until it answers.
async fn launch(binary: &Path, dir: &Path, port: u16) -> Result<Child, LaunchError> {
    let logs = Logs::new(dir);
    let output = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&logs.output.path)
        .with_context(|| format!("cannot open {}", logs.output.path.display()))?;
    let stderr = output.try_clone().with_context(|| format!("cannot open {}", logs.output.path.display()))?;

    let mut command = Command::new(binary);
    command
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&logs.log.path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(stderr)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|error| spawn_error(binary, error))?;

    match wait_ready(&mut child, dir, port, &logs).await {
        Ok(()) => Ok(child),
        Err(error) => {
            // it may still be running (not ready in time); an error means it has exited already
            let _ = child.kill().await;
            Err(error)
        }
    }
}

fn spawn_error(binary: &Path, error: io::Error) -> LaunchError {
    let error = if error.kind() == io::ErrorKind::NotFound {
        let overridden = std::env::var_os(REDIS_SERVER_ENV).is_some_and(|path| !path.is_empty());
        let location =
            if overridden { format!(" at {} (from {REDIS_SERVER_ENV})", binary.display()) } else { String::new() };
        anyhow!(
            "redis-server not found{location}: install it with `sudo apt-get install redis-server` (Debian/Ubuntu), \
             or run scripts/install-tools"
        )
    } else {
        anyhow::Error::new(error).context(format!("cannot start {}", binary.display()))
    };
    LaunchError::Fatal(error)
}

/// Polls until the server on `port` answers `PING` and is ours (its working directory is `dir`).
///
/// Every wait also watches the process, so that an early exit (such as a lost race for the port) is seen at once.
async fn wait_ready(child: &mut Child, dir: &Path, port: u16, logs: &Logs) -> Result<(), LaunchError> {
    let deadline = Instant::now() + START_TIMEOUT;
    let expected_dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let client = redis::Client::open(url(port)).context("cannot build a redis client")?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(PROBE_TIMEOUT))
        .set_response_timeout(Some(PROBE_TIMEOUT));
    loop {
        let outcome = tokio::select! {
            status = child.wait() => return Err(exited(status, port, logs)),
            outcome = tokio::time::timeout(PROBE_TIMEOUT, probe(&client, &config)) => outcome,
        };
        let last_error = match outcome {
            Ok(Ok(served_dir)) if Path::new(&served_dir) == expected_dir => return Ok(()),
            // another Redis answers on the port: ours is about to fail to bind it and exit
            Ok(Ok(served_dir)) => format!("another redis-server (dir {served_dir}) answers on port {port}"),
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
        };
        if Instant::now() >= deadline {
            return Err(LaunchError::Fatal(anyhow!(
                "redis-server on port {port} not ready within {START_TIMEOUT:?} ({last_error}); log tail:\n{}",
                tail(&logs.since_launch(), LOG_TAIL_LINES)
            )));
        }
        tokio::select! {
            status = child.wait() => return Err(exited(status, port, logs)),
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

/// The error for a process that exited during start-up: [`LaunchError::PortInUse`] if it could not bind the port.
fn exited(status: io::Result<ExitStatus>, port: u16, logs: &Logs) -> LaunchError {
    let status = match status {
        Ok(status) => status.to_string(),
        Err(error) => format!("cannot wait for it: {error}"),
    };
    let output = logs.since_launch();
    let error = anyhow!(
        "redis-server exited during start-up on port {port} ({status}); log tail:\n{}",
        tail(&output, LOG_TAIL_LINES)
    );
    if output.contains("Address already in use") { LaunchError::PortInUse(error) } else { LaunchError::Fatal(error) }
}

/// Connects, checks `PING` and returns the server's working directory.
async fn probe(client: &redis::Client, config: &AsyncConnectionConfig) -> redis::RedisResult<String> {
    let mut conn = client.get_multiplexed_async_connection_with_config(config).await?;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
    if pong != "PONG" {
        return Err(redis::RedisError::from((redis::ErrorKind::Io, "unexpected answer to PING", pong)));
    }
    let (_, served_dir): (String, String) = redis::cmd("CONFIG").arg("GET").arg("dir").query_async(&mut conn).await?;
    Ok(served_dir)
}

/// The log files of one launch: its standard output and error, and redis-server's log.
struct Logs {
    output: LaunchLog,
    log: LaunchLog,
}

impl Logs {
    fn new(dir: &Path) -> Self {
        Self { output: LaunchLog::new(dir, OUTPUT_FILE), log: LaunchLog::new(dir, LOG_FILE) }
    }

    /// What this launch wrote: its standard output and error, then its log.
    fn since_launch(&self) -> String {
        or_empty(self.output.text() + &self.log.text())
    }
}

// These tests start real servers, unlike the I/O-free unit tests elsewhere: they check
// `launch`, which is private, and this module's whole job is I/O.
#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    async fn launch_on_taken_port_fails_as_port_in_use(port: u16) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        match launch(&redis_server_binary(), dir.path(), port).await {
            Ok(_) => anyhow::bail!("launch succeeded on a taken port"),
            Err(LaunchError::Fatal(error)) => anyhow::bail!("expected port in use, got: {error:#}"),
            Err(LaunchError::PortInUse(error)) => {
                assert!(format!("{error:#}").contains("Address already in use"), "{error:#}");
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn a_port_taken_by_another_listener_is_reported_as_in_use() -> anyhow::Result<()> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        launch_on_taken_port_fails_as_port_in_use(listener.local_addr()?.port()).await
    }

    #[tokio::test]
    async fn a_port_taken_by_another_redis_is_reported_as_in_use_not_ready() -> anyhow::Result<()> {
        let other = RedisServer::start().await?;
        launch_on_taken_port_fails_as_port_in_use(other.port()).await
    }
}
