//! Private PostgreSQL servers for tests.
//!
//! Every [`PostgresServer`] is its own cluster: `initdb` into a private temporary directory, then `postgres` as a
//! child process bound to `127.0.0.1` on a free loopback port, with its Unix socket and log file in that directory,
//! trust authentication for the `postgres` superuser and durability switched off (`fsync`, `full_page_writes`,
//! `synchronous_commit`) for speed. Tests therefore never share state, never depend on a system-wide PostgreSQL and
//! can run in parallel.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let mut pg = mesh_testkit::postgres::PostgresServer::start().await?;
//! let client = pg.client().await?;
//! client.batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)").await?;
//! pg.stop().await; // take it down mid-test (fast shutdown)...
//! pg.restart().await?; // ...and bring it back on the same port: the data is still there
//! # Ok(())
//! # }
//! ```
//!
//! # Ports
//!
//! A port is chosen by binding `127.0.0.1:0`, reading the port the kernel picked and releasing it just before
//! `postgres` binds it. If another process wins that race, `postgres` exits with "Address already in use" and
//! [`PostgresServer::start`] tries again with another port. Readiness is checked by asking the server for its data
//! directory, so a foreign PostgreSQL that happens to answer on the port is never mistaken for ours. While a server
//! is stopped, its port stays reserved by a bound, non-listening socket (connections are refused), so that
//! [`PostgresServer::restart`] can normally bind it again.
//!
//! # Lifetime
//!
//! [`PostgresServer::stop`] is a fast shutdown (`SIGINT`: clients are disconnected, a checkpoint is written): the
//! data directory stays and [`PostgresServer::restart`] starts on it again. Dropping a [`PostgresServer`] is an
//! immediate shutdown (`SIGQUIT`, then `SIGKILL` if the server has not exited within seconds), waits (briefly,
//! synchronously) until the postmaster has exited and removes the directory. The process stays in the test binary's
//! process group, so Ctrl-C on a test run reaches it too. A server kept where it is never dropped (a `static`) or a
//! test binary killed with `SIGKILL` can leave a `postgres` behind: own one server per test.
//!
//! # Root
//!
//! PostgreSQL refuses to run as root. When the tests run as root, `initdb` and `postgres` run as the `postgres`
//! system user (which Debian's `postgresql` package creates): the data and socket directories are handed to it with
//! `chown -R postgres:postgres` and the private directory is made traversable (`0755`). The processes are started
//! with that user's uid and gid directly, not through `runuser`: `runuser` stays in between as the parent and would
//! receive the signals meant for the postmaster, and a `SIGKILL` to it would leave the postmaster running.
//!
//! # Binaries
//!
//! `initdb` and `postgres` come from the directory named by [`PG_BIN_ENV`] (`MESH_PG_BIN`) if it is set, else from
//! the highest version under `/usr/lib/postgresql/*/bin` (Debian's layout), else from `PATH`.

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use tempfile::TempDir;
use tokio::net::TcpSocket;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_postgres::NoTls;

use crate::server_process::{LaunchError, LaunchLog, free_port, read_from, reap_within, reserve, tail};

/// Environment variable naming a directory with the `initdb` and `postgres` binaries to use.
pub const PG_BIN_ENV: &str = "MESH_PG_BIN";

/// Where Debian's `postgresql` packages install their binaries, one directory per major version.
const DEBIAN_LIB_DIR: &str = "/usr/lib/postgresql";
/// The system user that runs PostgreSQL when the tests run as root.
const POSTGRES_USER: &str = "postgres";
/// How long `initdb` may take.
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a freshly spawned `postgres` may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Upper bound for one readiness probe (connect and query).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connect timeout of the clients handed out by [`PostgresServer::client`].
const CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`PostgresServer::stop`] waits for a fast shutdown before it kills the process.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long dropping a [`PostgresServer`] waits for an immediate shutdown before it kills the process.
const DROP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dropping a [`PostgresServer`] then waits for the killed process to exit.
const DROP_REAP_TIMEOUT: Duration = Duration::from_secs(2);
/// How many ports [`PostgresServer::start`] tries before it gives up.
const PORT_ATTEMPTS: usize = 5;
/// The cluster's data directory, inside the server's directory.
const DATA_DIR: &str = "data";
/// The directory of the server's Unix socket, inside the server's directory.
const SOCKET_DIR: &str = "run";
/// Standard output and error of `postgres` (its log), inside the server's directory; appended to across restarts.
const LOG_FILE: &str = "postgres.log";
/// Standard output and error of `initdb`, inside the server's directory.
const INITDB_LOG_FILE: &str = "initdb.log";
/// Lines of log shown in start-up errors.
const LOG_TAIL_LINES: usize = 20;

/// A private PostgreSQL cluster served by a `postgres` child process on a free loopback port; see the
/// [module documentation](self).
///
/// The process is shut down when the value is dropped, and its data removed.
#[derive(Debug)]
pub struct PostgresServer {
    binaries: Binaries,
    /// Holds the data directory, the socket directory and the log files; deleted on drop.
    dir: TempDir,
    /// Uid and gid to run `postgres` as (the `postgres` user) when the tests run as root.
    owner: Option<(u32, u32)>,
    port: u16,
    /// `None` while stopped.
    child: Option<Child>,
    /// Keeps the port bound (without listening) while the server is stopped.
    reservation: Option<TcpSocket>,
}

impl PostgresServer {
    /// Creates a cluster with `initdb`, starts `postgres` on a free port of `127.0.0.1` and waits until it answers a
    /// query.
    ///
    /// Fails if PostgreSQL is not installed, `initdb` fails, `postgres` exits during start-up (the error shows the
    /// tail of its log) or does not answer within 30 seconds.
    pub async fn start() -> anyhow::Result<Self> {
        let binaries = Binaries::find()?;
        let dir = tempfile::Builder::new()
            .prefix("mesh-pg-")
            .tempdir()
            .context("cannot create a temporary directory for PostgreSQL")?;
        let owner = prepare_dir(dir.path()).await?;
        initdb(&binaries, dir.path(), owner).await?;

        let mut last_error = anyhow!("no port tried");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match launch(&binaries, dir.path(), owner, port).await {
                Ok(child) => return Ok(Self { binaries, dir, owner, port, child: Some(child), reservation: None }),
                Err(LaunchError::PortInUse(error)) => last_error = error,
                Err(LaunchError::Fatal(error)) => return Err(error),
            }
        }
        Err(last_error.context(format!("postgres found no free port in {PORT_ATTEMPTS} attempts")))
    }

    /// The URL to connect to, `postgres://postgres@127.0.0.1:PORT/postgres` (trust authentication: no password).
    pub fn url(&self) -> String {
        format!("postgres://{POSTGRES_USER}@127.0.0.1:{}/postgres", self.port)
    }

    /// The TCP port; it stays the same across [`stop`](Self::stop) and [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The server's private directory (with `data/`, `run/`, `initdb.log` and `postgres.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join(DATA_DIR)
    }

    /// A connection configuration for this server (user and database `postgres`), for pools and custom settings.
    pub fn config(&self) -> tokio_postgres::Config {
        let mut config = config(self.port);
        config.connect_timeout(CLIENT_CONNECT_TIMEOUT);
        config
    }

    /// A new client connected to this server; its connection runs on a spawned task until the client is dropped.
    pub async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = self
            .config()
            .connect(NoTls)
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {}", self.url()))?;
        // the error, if any, is the one the client's next call reports
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Shuts the server down (fast shutdown, `SIGINT`: clients are disconnected, a checkpoint is written) and waits
    /// for it to exit; after 30 seconds it is killed.
    ///
    /// The data directory stays for [`restart`](Self::restart), and the port stays reserved: connections to it are
    /// refused meanwhile. Stopping a stopped server does nothing.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            shut_down(&mut child).await;
        }
        if self.reservation.is_none() {
            self.reservation = reserve(self.port);
        }
    }

    /// Starts the server again on the same port and the same data directory, and waits until it answers.
    ///
    /// A running server is stopped first. Data persists: whatever was committed before is there.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        // release the port just before postgres binds it
        self.reservation = None;
        match launch(&self.binaries, self.dir.path(), self.owner, self.port).await {
            Ok(child) => {
                self.child = Some(child);
                Ok(())
            }
            Err(error) => {
                self.reservation = reserve(self.port);
                Err(error.into_inner().context(format!("cannot restart postgres on port {}", self.port)))
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

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let Some(child) = self.child.as_mut() else { return };
        // immediate shutdown: the postmaster stops its backends and exits, so none is left behind writing into the
        // directory about to be removed
        let asked = child.id().is_some_and(|pid| {
            std::process::Command::new("kill")
                .args(["-QUIT", &pid.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        });
        if !asked || !reap_within(child, DROP_SHUTDOWN_TIMEOUT) {
            // SIGKILL (`kill_on_drop` backs this up); an error means it has exited already
            let _ = child.start_kill();
            reap_within(child, DROP_REAP_TIMEOUT);
        }
    }
}

/// Fast shutdown of a running `postgres`, with `SIGKILL` as the fallback.
async fn shut_down(child: &mut Child) {
    let asked = match child.id() {
        Some(pid) => signal(pid, "INT").await,
        // already reaped
        None => return,
    };
    if asked && tokio::time::timeout(STOP_TIMEOUT, child.wait()).await.is_ok() {
        return;
    }
    // an error means the process had already exited and been reaped: it is stopped either way
    let _ = child.kill().await;
}

/// Sends `SIG<name>` to `pid` with `kill(1)`; whether that worked.
async fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success())
}

/// The PostgreSQL binaries in use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binaries {
    initdb: PathBuf,
    postgres: PathBuf,
}

impl Binaries {
    /// The binaries from [`PG_BIN_ENV`], Debian's directories or `PATH`, in that order.
    fn find() -> anyhow::Result<Self> {
        find_binaries(std::env::var_os(PG_BIN_ENV), Path::new(DEBIAN_LIB_DIR), std::env::var_os("PATH"))
    }

    /// The binaries in directory `bin`, if both are there.
    fn in_dir(bin: &Path) -> Option<Self> {
        let binaries = Self { initdb: bin.join("initdb"), postgres: bin.join("postgres") };
        (binaries.initdb.is_file() && binaries.postgres.is_file()).then_some(binaries)
    }
}

/// What [`Binaries::find`] does, with its inputs as arguments: the `MESH_PG_BIN` value, the directory holding one
/// directory per version (such as `/usr/lib/postgresql`) and the `PATH` value.
fn find_binaries(env_bin: Option<OsString>, lib_dir: &Path, path: Option<OsString>) -> anyhow::Result<Binaries> {
    const INSTALL: &str =
        "install it with `sudo apt-get install postgresql` (Debian/Ubuntu), or run scripts/install-tools";
    if let Some(bin) = env_bin.filter(|bin| !bin.is_empty()) {
        let bin = PathBuf::from(bin);
        return Binaries::in_dir(&bin).ok_or_else(|| {
            anyhow!(
                "PostgreSQL not found in {} (from {PG_BIN_ENV}, which names a bin directory): {INSTALL}",
                bin.display()
            )
        });
    }
    if let Some(binaries) = highest_version(lib_dir) {
        return Ok(binaries);
    }
    let on_path = |name: &str| {
        std::env::split_paths(path.as_deref().unwrap_or_default()).map(|dir| dir.join(name)).find(|file| file.is_file())
    };
    match (on_path("initdb"), on_path("postgres")) {
        (Some(initdb), Some(postgres)) => Ok(Binaries { initdb, postgres }),
        _ => bail!("PostgreSQL not found: {INSTALL}"),
    }
}

/// The binaries of the highest version under `lib_dir` (`lib_dir/VERSION/bin`), if any.
fn highest_version(lib_dir: &Path) -> Option<Binaries> {
    std::fs::read_dir(lib_dir)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = parse_version(&entry.file_name())?;
            Some((version, Binaries::in_dir(&entry.path().join("bin"))?))
        })
        .max_by(|(a, _), (b, _)| a.cmp(b))
        .map(|(_, binaries)| binaries)
}

/// `15` → `[15]`, `9.6` → `[9, 6]`; `None` for anything else.
fn parse_version(name: &OsStr) -> Option<Vec<u32>> {
    name.to_str()?.split('.').map(|part| part.parse().ok()).collect()
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective uid).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0)
}

/// Creates the data and socket directories in `dir`; as root, hands them to the `postgres` user and returns its uid
/// and gid.
async fn prepare_dir(dir: &Path) -> anyhow::Result<Option<(u32, u32)>> {
    let data = dir.join(DATA_DIR);
    let sockets = dir.join(SOCKET_DIR);
    for sub in [&data, &sockets] {
        std::fs::create_dir(sub).with_context(|| format!("cannot create {}", sub.display()))?;
    }
    if !running_as_root() {
        return Ok(None);
    }
    // the postgres user must be able to reach its directories through ours
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} traversable", dir.display()))?;
    let output = Command::new("chown")
        .args(["-R", &format!("{POSTGRES_USER}:{POSTGRES_USER}")])
        .arg(&data)
        .arg(&sockets)
        .stdin(Stdio::null())
        .output()
        .await
        .context("cannot run chown")?;
    if !output.status.success() {
        bail!(
            "PostgreSQL refuses to run as root, and its directories cannot be given to the `{POSTGRES_USER}` user \
             (Debian's postgresql package creates it; install it with `sudo apt-get install postgresql` or run \
             scripts/install-tools): chown {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let metadata = std::fs::metadata(&data).with_context(|| format!("cannot read {}", data.display()))?;
    Ok(Some((metadata.uid(), metadata.gid())))
}

/// A command for `program` that runs in `dir`, as `owner` if given, with its output appended to `log`.
fn command(program: &Path, dir: &Path, owner: Option<(u32, u32)>, log: &Path) -> anyhow::Result<Command> {
    let stdout = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let stderr = stdout.try_clone().with_context(|| format!("cannot open {}", log.display()))?;
    let mut command = Command::new(program);
    command.current_dir(dir).stdin(Stdio::null()).stdout(stdout).stderr(stderr).kill_on_drop(true);
    if let Some((uid, gid)) = owner {
        // the standard library also drops root's supplementary groups
        command.uid(uid).gid(gid);
    }
    Ok(command)
}

/// Creates the cluster in `dir/data` (trust authentication for the `postgres` superuser, UTF-8, C locale).
async fn initdb(binaries: &Binaries, dir: &Path, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    let log = dir.join(INITDB_LOG_FILE);
    let mut command = command(&binaries.initdb, dir, owner, &log)?;
    command.arg("-D").arg(dir.join(DATA_DIR)).args(["-U", POSTGRES_USER]).args([
        "--auth=trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
    ]);
    let mut child = command.spawn().with_context(|| format!("cannot start {}", binaries.initdb.display()))?;
    let status = match tokio::time::timeout(INITDB_TIMEOUT, child.wait()).await {
        Ok(status) => status.with_context(|| format!("cannot wait for {}", binaries.initdb.display()))?,
        Err(_) => {
            let _ = child.kill().await;
            bail!(
                "initdb did not finish within {INITDB_TIMEOUT:?}; output tail:\n{}",
                tail(&read_from(&log, 0), LOG_TAIL_LINES)
            );
        }
    };
    if !status.success() {
        bail!(
            "{} failed ({status}); output tail:\n{}",
            binaries.initdb.display(),
            tail(&read_from(&log, 0), LOG_TAIL_LINES)
        );
    }
    Ok(())
}

fn config(port: u16) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config.host("127.0.0.1").port(port).user(POSTGRES_USER).dbname("postgres");
    config
}

/// Spawns `postgres` on `port` for the cluster in `dir` and waits until it answers.
async fn launch(binaries: &Binaries, dir: &Path, owner: Option<(u32, u32)>, port: u16) -> Result<Child, LaunchError> {
    let log = LaunchLog::new(dir, LOG_FILE);
    let data = dir.join(DATA_DIR);
    let mut command = command(&binaries.postgres, dir, owner, &log.path)?;
    command
        .arg("-D")
        .arg(&data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(dir.join(SOCKET_DIR))
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "fsync=off"])
        .args(["-c", "full_page_writes=off"])
        .args(["-c", "synchronous_commit=off"]);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", binaries.postgres.display()))
        .map_err(LaunchError::Fatal)?;

    match wait_ready(&mut child, &data, port, &log).await {
        Ok(()) => Ok(child),
        Err(error) => {
            // it may still be running (not ready in time); an error means it has exited already
            let _ = child.kill().await;
            Err(error)
        }
    }
}

/// Polls until the server on `port` answers a query and is ours (its data directory is `data`).
///
/// Every wait also watches the process, so that an early exit (such as a lost race for the port) is seen at once.
async fn wait_ready(child: &mut Child, data: &Path, port: u16, log: &LaunchLog) -> Result<(), LaunchError> {
    let deadline = Instant::now() + START_TIMEOUT;
    let expected = data.canonicalize().unwrap_or_else(|_| data.to_path_buf());
    let mut config = config(port);
    config.connect_timeout(PROBE_TIMEOUT);
    loop {
        let outcome = tokio::select! {
            status = child.wait() => return Err(exited(status, port, log)),
            outcome = tokio::time::timeout(PROBE_TIMEOUT, probe(&config)) => outcome,
        };
        let last_error = match outcome {
            Ok(Ok(served)) if same_dir(Path::new(&served), &expected) => return Ok(()),
            // another PostgreSQL answers on the port: ours is about to fail to bind it and exit
            Ok(Ok(served)) => format!("another PostgreSQL (data directory {served}) answers on port {port}"),
            Ok(Err(error)) => format!("{error:#}"),
            Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
        };
        if Instant::now() >= deadline {
            return Err(LaunchError::Fatal(anyhow!(
                "postgres on port {port} not ready within {START_TIMEOUT:?} ({last_error}); log tail:\n{}",
                tail(&log.since_launch(), LOG_TAIL_LINES)
            )));
        }
        tokio::select! {
            status = child.wait() => return Err(exited(status, port, log)),
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

fn same_dir(served: &Path, expected: &Path) -> bool {
    served == expected || served.canonicalize().is_ok_and(|served| served == expected)
}

/// Connects, runs a query and returns the server's data directory.
async fn probe(config: &tokio_postgres::Config) -> anyhow::Result<String> {
    let (client, connection) = config.connect(NoTls).await?;
    let connection = tokio::spawn(connection);
    let row = client.query_one("SELECT current_setting('data_directory')", &[]).await;
    drop(client);
    // the connection ends once the client is gone
    let _ = connection.await;
    Ok(row?.try_get(0)?)
}

/// The error for a process that exited during start-up: [`LaunchError::PortInUse`] if it could not bind the port.
fn exited(status: io::Result<ExitStatus>, port: u16, log: &LaunchLog) -> LaunchError {
    let status = match status {
        Ok(status) => status.to_string(),
        Err(error) => format!("cannot wait for it: {error}"),
    };
    let output = log.since_launch();
    let error = anyhow!(
        "postgres exited during start-up on port {port} ({status}); log tail:\n{}",
        tail(&output, LOG_TAIL_LINES)
    );
    if output.contains("Address already in use") { LaunchError::PortInUse(error) } else { LaunchError::Fatal(error) }
}

// Like redis.rs, these tests start real servers: they check `launch`, which is private.
#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::net::TcpListener;

    fn touch_binaries(bin: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(bin)?;
        for name in ["initdb", "postgres"] {
            File::create(bin.join(name))?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_port_taken_by_another_listener_is_reported_as_in_use() -> anyhow::Result<()> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let binaries = Binaries::find()?;
        let dir = tempfile::tempdir()?;
        let owner = prepare_dir(dir.path()).await?;
        initdb(&binaries, dir.path(), owner).await?;
        match launch(&binaries, dir.path(), owner, port).await {
            Ok(_) => bail!("launch succeeded on a taken port"),
            Err(LaunchError::Fatal(error)) => bail!("expected port in use, got: {error:#}"),
            Err(LaunchError::PortInUse(error)) => {
                assert!(format!("{error:#}").contains("Address already in use"), "{error:#}");
                Ok(())
            }
        }
    }

    #[test]
    fn the_bin_directory_from_the_environment_wins_over_the_others() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let env_bin = root.path().join("custom");
        touch_binaries(&env_bin)?;
        touch_binaries(&root.path().join("lib/16/bin"))?;
        let found = find_binaries(Some(env_bin.clone().into()), &root.path().join("lib"), None)?;
        assert_eq!(found, Binaries { initdb: env_bin.join("initdb"), postgres: env_bin.join("postgres") });
        Ok(())
    }

    #[test]
    fn a_bin_directory_from_the_environment_without_binaries_is_an_error() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        touch_binaries(&root.path().join("lib/16/bin"))?;
        let error = find_binaries(Some(root.path().join("empty").into()), &root.path().join("lib"), None)
            .expect_err("an empty bin directory must not be accepted");
        assert!(format!("{error:#}").contains(PG_BIN_ENV), "{error:#}");
        Ok(())
    }

    #[test]
    fn the_highest_installed_version_is_chosen() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let lib = root.path().join("lib");
        for version in ["9.6", "15", "16"] {
            touch_binaries(&lib.join(version).join("bin"))?;
        }
        // a higher version without its binaries does not count
        std::fs::create_dir_all(lib.join("17/bin"))?;
        let found = find_binaries(None, &lib, None)?;
        assert_eq!(found.initdb, lib.join("16/bin/initdb"));
        Ok(())
    }

    #[test]
    fn path_is_the_last_resort_and_nothing_found_says_how_to_install() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let on_path = root.path().join("path-bin");
        touch_binaries(&on_path)?;
        let path = std::env::join_paths([root.path().join("elsewhere"), on_path.clone()])?;
        let found = find_binaries(None, &root.path().join("no-lib"), Some(path))?;
        assert_eq!(found.postgres, on_path.join("postgres"));

        let error = find_binaries(None, &root.path().join("no-lib"), Some(root.path().join("elsewhere").into()))
            .expect_err("nothing is installed");
        let message = format!("{error:#}");
        assert!(
            message.starts_with("PostgreSQL not found: install it with `sudo apt-get install postgresql`"),
            "{message}"
        );
        assert!(message.contains("scripts/install-tools"), "{message}");
        Ok(())
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(parse_version(OsStr::new("10")) > parse_version(OsStr::new("9.6")));
        assert_eq!(parse_version(OsStr::new("main")), None);
    }
}
