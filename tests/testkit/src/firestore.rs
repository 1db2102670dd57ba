//! Private Firestore emulators for tests.
//!
//! Every [`FirestoreEmulator`] is its own `node tests/testkit/firestore-emulator.mjs` child process: the npm package
//! `@firestore-emulator/server` (pinned in the repository's `package.json`, installed into its `node_modules` by
//! `scripts/install-tools`) serving the Firestore v1 gRPC API, in memory, on a free port of `127.0.0.1`, with its log
//! file in a private temporary directory. Tests therefore never share state, never depend on an emulator the machine
//! happens to run and can run in parallel.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let mut emulator = mesh_testkit::FirestoreEmulator::start().await?;
//! // point a client at it: FIRESTORE_EMULATOR_HOST=emulator.host(), project emulator.project_id()
//! emulator.stop().await; // take it down mid-test...
//! emulator.restart().await?; // ...and bring it back on the same port (empty: nothing is persisted)
//! # Ok(())
//! # }
//! ```
//!
//! # What the emulator implements
//!
//! `Commit`, `BatchGetDocuments`, `RunQuery`, `RunAggregationQuery`, `BeginTransaction`, `Rollback` and `Listen`.
//! The single-document RPCs (`GetDocument`, `CreateDocument`, `UpdateDocument`, `DeleteDocument`, `ListDocuments`)
//! and `BatchWrite`, `Write`, `PartitionQuery` and `ListCollectionIds` fail with `Unknown`: code under test must
//! read with `BatchGetDocuments` and write with `Commit` (the `firestore` crate's `ping` uses `GetDocument`). It is
//! not a faithful Firestore either (`tests/firestore_emulator.rs` pins these down):
//!
//! - `Commit` applies its writes one by one: a failed precondition leaves the earlier writes applied.
//! - Only `exists` preconditions are checked; `update_time` ones are ignored. Transaction ids are not checked and
//!   transactions isolate nothing.
//! - A write without a mask merges into the document instead of replacing it.
//! - Integers beyond ±(2^53 - 1) are refused (`Unknown`); commit and update times have millisecond precision.
//! - Queries honour equality filters, `order_by` on top-level fields and `limit` (and implement range, `in` and
//!   array filters, which the tests do not cover), but ignore cursors, `offset`, ordering by `__name__` and
//!   `all_descendants` (a collection-group query sees only the collection directly under its parent); dotted field
//!   paths fail.
//!
//! # Ports
//!
//! A port is chosen by binding `127.0.0.1:0`, reading the port the kernel picked and releasing it just before the
//! emulator binds it. If another process wins that race, the emulator exits with `EADDRINUSE` and
//! [`FirestoreEmulator::start`] tries again with another port. The emulator is ready once it has logged that it
//! listens (with its own pid, so a foreign server on the port is never mistaken for ours) and has answered a
//! `BatchGetDocuments` call. While an emulator is stopped, its port stays reserved by a bound, non-listening socket
//! (connections are refused), so that [`FirestoreEmulator::restart`] can normally bind it again.
//!
//! # Lifetime
//!
//! Dropping a [`FirestoreEmulator`] sends `SIGKILL` to the process, waits (briefly, synchronously) until it has
//! exited and removes its directory. The emulator also exits by itself when its standard input, a pipe this harness
//! holds, is closed: it never outlives the test process, even one killed with `SIGKILL`.
//!
//! # Binary
//!
//! `node` is looked up on `PATH`; the environment variable [`NODE_ENV`] (`MESH_NODE`) overrides the path.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use tempfile::TempDir;
use tokio::net::TcpSocket;
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::Instant;
use tonic::transport::Endpoint;

use crate::server_process::{LaunchError, LaunchLog, free_port, kill_and_reap, reserve, tail};

/// Environment variable that overrides the path of the `node` binary.
pub const NODE_ENV: &str = "MESH_NODE";

/// How long a freshly spawned emulator may take to answer (Node starts in a fraction of a second when idle).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two readiness checks.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Upper bound for one gRPC readiness probe (connect and call).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long dropping a [`FirestoreEmulator`] waits for the killed process to exit.
const DROP_REAP_TIMEOUT: Duration = Duration::from_secs(2);
/// How many ports [`FirestoreEmulator::start`] tries before it gives up.
const PORT_ATTEMPTS: usize = 5;
/// Standard output and error of the process, inside the emulator's directory; appended to across restarts.
const LOG_FILE: &str = "firestore-emulator.log";
/// Lines of log shown in start-up errors.
const LOG_TAIL_LINES: usize = 20;
/// The project the readiness probe reads from, apart from the tests' projects.
const PROBE_PROJECT: &str = "mesh-testkit-readiness-probe";

/// Numbers the emulators of this process, for their project ids.
static NEXT_PROJECT: AtomicU64 = AtomicU64::new(1);

/// A private Firestore emulator child process on a free loopback port; see the [module documentation](self).
///
/// The process is killed when the value is dropped.
#[derive(Debug)]
pub struct FirestoreEmulator {
    node: PathBuf,
    /// Holds the process's log file; deleted on drop.
    dir: TempDir,
    port: u16,
    project_id: String,
    /// `None` while stopped.
    child: Option<Child>,
    /// The emulator's standard input: it exits when this pipe closes. Kept apart from `child`, because
    /// [`Child::wait`] closes the child's stdin.
    stdin: Option<ChildStdin>,
    /// Keeps the port bound (without listening) while the emulator is stopped.
    reservation: Option<TcpSocket>,
}

impl FirestoreEmulator {
    /// Starts an emulator on a free port of `127.0.0.1` and waits until it answers gRPC calls.
    ///
    /// Fails if `node` or the npm package is not installed, or if the emulator exits during start-up (the error shows
    /// the tail of its log) or does not answer within 20 seconds.
    pub async fn start() -> anyhow::Result<Self> {
        let node = node_binary();
        let script = emulator_script()?;
        let dir = tempfile::Builder::new()
            .prefix("mesh-firestore-")
            .tempdir()
            .context("cannot create a temporary directory for the firestore emulator")?;
        let project_id = format!("mesh-test-{}", NEXT_PROJECT.fetch_add(1, Ordering::Relaxed));
        let mut last_error = anyhow!("no port tried");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match launch(&node, &script, dir.path(), port).await {
                Ok((child, stdin)) => {
                    return Ok(Self {
                        node,
                        dir,
                        port,
                        project_id,
                        child: Some(child),
                        stdin: Some(stdin),
                        reservation: None,
                    });
                }
                Err(LaunchError::PortInUse(error)) => last_error = error,
                Err(LaunchError::Fatal(error)) => return Err(error),
            }
        }
        Err(last_error.context(format!("the firestore emulator found no free port in {PORT_ATTEMPTS} attempts")))
    }

    /// The emulator's address, `127.0.0.1:PORT`: the value for `FIRESTORE_EMULATOR_HOST`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The URL of its gRPC endpoint, `http://127.0.0.1:PORT` (plain HTTP/2, no TLS).
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// The TCP port; it stays the same across [`stop`](Self::stop) and [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A project id of this emulator's own, `mesh-test-N`. The emulator accepts any project id; each emulator is a
    /// separate process, so this only keeps the names apart in logs.
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// The `[documents.firestore]` settings that reach this emulator.
    pub fn settings(&self) -> mesh_core::documents::FirestoreSettings {
        mesh_core::documents::FirestoreSettings {
            project_id: self.project_id.clone(),
            emulator_host: Some(self.host()),
            ..mesh_core::documents::FirestoreSettings::default()
        }
    }

    /// The database of [`project_id`](Self::project_id): `projects/ID/databases/(default)`, as Firestore requests
    /// name it.
    pub fn database_path(&self) -> String {
        format!("projects/{}/databases/(default)", self.project_id)
    }

    /// The process id of the running emulator (`None` while stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The emulator's private directory, with its log `firestore-emulator.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the process (`SIGKILL`, no clean shutdown) and waits for it to exit. Its data is gone.
    ///
    /// The port stays reserved for [`restart`](Self::restart): connections to it are refused meanwhile. Stopping a
    /// stopped emulator does nothing.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // an error means the process had already exited and been reaped: it is stopped either way
            let _ = child.kill().await;
        }
        self.stdin = None;
        if self.reservation.is_none() {
            self.reservation = reserve(self.port);
        }
    }

    /// Starts the emulator again on the same port and waits until it answers.
    ///
    /// A running emulator is stopped first. The data is lost: the emulator keeps it in memory only, so the restarted
    /// one is empty. Clients connected before may see errors (`Unavailable`) until they reconnect.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let script = emulator_script()?;
        // release the port just before the emulator binds it
        self.reservation = None;
        match launch(&self.node, &script, self.dir.path(), self.port).await {
            Ok((child, stdin)) => {
                self.child = Some(child);
                self.stdin = Some(stdin);
                Ok(())
            }
            Err(error) => {
                self.reservation = reserve(self.port);
                Err(error.into_inner().context(format!("cannot restart the firestore emulator on port {}", self.port)))
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
                self.stdin = None;
                false
            }
        }
    }
}

impl Drop for FirestoreEmulator {
    fn drop(&mut self) {
        // `kill_on_drop` and the closing stdin pipe back this up
        if let Some(child) = self.child.as_mut() {
            kill_and_reap(child, DROP_REAP_TIMEOUT);
        }
    }
}

/// The `node` binary: [`NODE_ENV`] if set and not empty, otherwise `node` from `PATH`.
fn node_binary() -> PathBuf {
    std::env::var_os(NODE_ENV).filter(|path| !path.is_empty()).map_or_else(|| PathBuf::from("node"), PathBuf::from)
}

/// `tests/testkit/firestore-emulator.mjs`, after checking that the npm package it runs is installed.
fn emulator_script() -> anyhow::Result<PathBuf> {
    let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
    let package = testkit.join("../../node_modules/@firestore-emulator/server/package.json");
    anyhow::ensure!(
        package.is_file(),
        "the npm package @firestore-emulator/server is not installed (no {}): run scripts/install-tools, or \
         `npm install --no-save` at the repository root",
        package.display()
    );
    Ok(testkit.join("firestore-emulator.mjs"))
}

/// Spawns the emulator on `port` with its log in `dir` and waits until it answers; returns the process and the pipe
/// to its standard input.
async fn launch(node: &Path, script: &Path, dir: &Path, port: u16) -> Result<(Child, ChildStdin), LaunchError> {
    let log = LaunchLog::new(dir, LOG_FILE);
    let output = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log.path)
        .with_context(|| format!("cannot open {}", log.path.display()))?;
    let stderr = output.try_clone().with_context(|| format!("cannot open {}", log.path.display()))?;

    let mut command = Command::new(node);
    command
        .arg(script)
        .arg(port.to_string())
        .current_dir(dir)
        // the emulator exits when this pipe closes: when the harness drops its end, or this process dies
        .stdin(Stdio::piped())
        .stdout(output)
        .stderr(stderr)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|error| spawn_error(node, error))?;
    // taken out of `child`, since `Child::wait` (which `wait_ready` uses) would close it
    let stdin = child.stdin.take().context("the emulator's stdin is not piped")?;

    match wait_ready(&mut child, port, &log).await {
        Ok(()) => Ok((child, stdin)),
        Err(error) => {
            // it may still be running (not ready in time); an error means it has exited already
            let _ = child.kill().await;
            Err(error)
        }
    }
}

fn spawn_error(node: &Path, error: io::Error) -> LaunchError {
    let error = if error.kind() == io::ErrorKind::NotFound {
        let overridden = std::env::var_os(NODE_ENV).is_some_and(|path| !path.is_empty());
        let location = if overridden { format!(" at {} (from {NODE_ENV})", node.display()) } else { String::new() };
        anyhow!(
            "node not found{location}: install Node.js 20 or later (`sudo apt-get install nodejs npm` on \
             Debian/Ubuntu), then run scripts/install-tools"
        )
    } else {
        anyhow::Error::new(error).context(format!("cannot start {}", node.display()))
    };
    LaunchError::Fatal(error)
}

/// Polls until the emulator has logged that it listens on `port` and a gRPC call to it succeeds.
///
/// Every wait also watches the process, so that an early exit (such as a lost race for the port) is seen at once.
async fn wait_ready(child: &mut Child, port: u16, log: &LaunchLog) -> Result<(), LaunchError> {
    let deadline = Instant::now() + START_TIMEOUT;
    let pid = child.id().context("the firestore emulator exited at once")?;
    let ready_line = format!("listening on 127.0.0.1:{port} (pid {pid})");
    loop {
        let last_error = if log.since_launch().contains(&ready_line) {
            let outcome = tokio::select! {
                status = child.wait() => return Err(exited(status, port, log)),
                outcome = tokio::time::timeout(PROBE_TIMEOUT, probe(port)) => outcome,
            };
            match outcome {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) => format!("{error:#}"),
                Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
            }
        } else {
            String::from("it has not logged that it listens")
        };
        if Instant::now() >= deadline {
            return Err(LaunchError::Fatal(anyhow!(
                "the firestore emulator on port {port} is not ready within {START_TIMEOUT:?} ({last_error}); log \
                 tail:\n{}",
                tail(&log.since_launch(), LOG_TAIL_LINES)
            )));
        }
        tokio::select! {
            status = child.wait() => return Err(exited(status, port, log)),
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

/// The error for a process that exited during start-up: [`LaunchError::PortInUse`] if it could not bind the port.
fn exited(status: io::Result<ExitStatus>, port: u16, log: &LaunchLog) -> LaunchError {
    let status = match status {
        Ok(status) => status.to_string(),
        Err(error) => format!("cannot wait for it: {error}"),
    };
    let output = log.since_launch();
    let error = anyhow!(
        "the firestore emulator exited during start-up on port {port} ({status}); log tail:\n{}",
        tail(&output, LOG_TAIL_LINES)
    );
    if output.contains("EADDRINUSE") { LaunchError::PortInUse(error) } else { LaunchError::Fatal(error) }
}

/// Asks the emulator on `port` for a document that does not exist, and checks that it answers "missing".
async fn probe(port: u16) -> anyhow::Result<()> {
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect_timeout(PROBE_TIMEOUT)
        .connect()
        .await
        .context("cannot connect")?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.context("the channel is not ready")?;
    let database = format!("projects/{PROBE_PROJECT}/databases/(default)");
    let document = format!("{database}/documents/probes/readiness");
    let request = probe_messages::BatchGetDocumentsRequest { database, documents: vec![document.clone()] };
    let mut responses = grpc
        .server_streaming(
            tonic::Request::new(request),
            tonic::codegen::http::uri::PathAndQuery::from_static("/google.firestore.v1.Firestore/BatchGetDocuments"),
            tonic_prost::ProstCodec::<_, probe_messages::BatchGetDocumentsResponse>::default(),
        )
        .await
        .context("BatchGetDocuments failed")?
        .into_inner();
    let response = responses.message().await.context("BatchGetDocuments failed")?;
    match response {
        Some(response) if response.missing == document => Ok(()),
        other => Err(anyhow!("unexpected answer to BatchGetDocuments: {other:?}")),
    }
}

/// The two messages of `google.firestore.v1.BatchGetDocuments` the readiness probe uses, reduced to the fields it
/// reads and writes, so that the harness needs no generated Firestore client.
mod probe_messages {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct BatchGetDocumentsRequest {
        #[prost(string, tag = "1")]
        pub(super) database: String,
        #[prost(string, repeated, tag = "2")]
        pub(super) documents: Vec<String>,
    }

    /// `missing` is a member of the `result` oneof; `found`, `transaction` and `read_time` are skipped as unknown.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct BatchGetDocumentsResponse {
        #[prost(string, tag = "2")]
        pub(super) missing: String,
    }
}

// These tests start real emulators, unlike the I/O-free unit tests elsewhere: they check `launch`, which is private,
// and this module's whole job is I/O.
#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    #[tokio::test]
    async fn a_port_taken_by_another_listener_is_reported_as_in_use() -> anyhow::Result<()> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let dir = tempfile::tempdir()?;
        match launch(&node_binary(), &emulator_script()?, dir.path(), listener.local_addr()?.port()).await {
            Ok(_) => anyhow::bail!("launch succeeded on a taken port"),
            Err(LaunchError::Fatal(error)) => anyhow::bail!("expected port in use, got: {error:#}"),
            Err(LaunchError::PortInUse(error)) => {
                assert!(format!("{error:#}").contains("EADDRINUSE"), "{error:#}");
                Ok(())
            }
        }
    }
}
