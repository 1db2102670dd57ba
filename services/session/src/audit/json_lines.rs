//! [`JsonLinesAuditSink`]: the embedded default's audit trail, one JSON object per line
//! (the [`AuditEvent`] JSON) appended to a local file, `data_dir/audit.jsonl` by default.
//!
//! Idempotency comes from the set of stored ids, read from the file when it is opened and
//! kept in memory (about 100 bytes per event), together with where each line starts so
//! [`get`](AuditSink::get) reads one line. A batch is written with one `write` and flushed to
//! disk (`fdatasync`) before `append` returns. A write that fails half-way is cut off again,
//! and a half-written last line left by a crash is cut off when the file is opened (its
//! event was never acknowledged, so the queue still holds it).
//!
//! One process per file: two processes appending to one file would each miss the other's
//! ids. The file is created readable by its owner only (it holds user data).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{AuditError, AuditSink, BoxFuture, first_of_each_id};
use crate::domain::AuditEvent;

/// File name of the audit trail inside the data folder.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// The JSON lines file [`AuditSink`] (see the module docs).
#[derive(Debug, Clone)]
pub struct JsonLinesAuditSink {
    path: PathBuf,
    state: Arc<Mutex<FileState>>,
}

#[derive(Debug)]
struct FileState {
    /// Opened for appending.
    file: File,
    /// Length of the file: where the next line starts.
    len: u64,
    /// Every stored event id, with where its line starts and how long it is (newline excluded).
    lines: HashMap<String, (u64, usize)>,
    /// Set when a failed write could not be cut off again: the file may end in a half line,
    /// so nothing more is appended until the sink is opened anew (which repairs the end).
    broken: Option<String>,
}

impl JsonLinesAuditSink {
    /// Opens (or creates, with its folder) the trail at `path` and reads the ids it holds.
    /// Fails with [`AuditError::Corrupt`] when a complete line is not an audit event, naming
    /// the line.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, AuditError> {
        let path = path.into();
        let opened = path.clone();
        let state = blocking(move || open_file(&opened)).await??;
        Ok(Self { path, state: Arc::new(Mutex::new(state)) })
    }

    /// Opens the trail at `data_dir/audit.jsonl`.
    pub async fn open_in(data_dir: &Path) -> Result<Self, AuditError> {
        Self::open(data_dir.join(AUDIT_FILE)).await
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(state: &Mutex<FileState>) -> MutexGuard<'_, FileState> {
        // Every change of the state happens after its write succeeded, so a poisoned lock
        // still describes the file.
        state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl AuditSink for JsonLinesAuditSink {
    fn append<'a>(&'a self, events: &'a [AuditEvent]) -> BoxFuture<'a, Result<(), AuditError>> {
        Box::pin(async move {
            let batch: Vec<AuditEvent> = first_of_each_id(events).into_iter().cloned().collect();
            if batch.is_empty() {
                return Ok(());
            }
            let state = self.state.clone();
            blocking(move || append_new(&mut Self::lock(&state), &batch)).await?
        })
    }

    fn count(&self) -> BoxFuture<'_, Result<u64, AuditError>> {
        Box::pin(async move { Ok(Self::lock(&self.state).lines.len() as u64) })
    }

    fn get<'a>(&'a self, event_id: &'a str) -> BoxFuture<'a, Result<Option<AuditEvent>, AuditError>> {
        Box::pin(async move {
            let Some((start, len)) = Self::lock(&self.state).lines.get(event_id).copied() else {
                return Ok(None);
            };
            let path = self.path.clone();
            let line = blocking(move || read_line(&path, start, len)).await?.map_err(unavailable)?;
            let event = AuditEvent::from_json(&line)
                .map_err(|error| AuditError::Corrupt(format!("the line at byte {start} of the file: {error}")))?;
            Ok(Some(event))
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(async move {
            match &Self::lock(&self.state).broken {
                Some(reason) => Err(AuditError::Unavailable(reason.clone())),
                None => Ok(()),
            }
        })
    }
}

/// Opens the file, reads its ids, and cuts off a half-written last line.
fn open_file(path: &Path) -> Result<FileState, AuditError> {
    if let Some(folder) = path.parent().filter(|folder| !folder.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(unavailable)?;
    }
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(unavailable)?;
    let mut content = Vec::new();
    file.read_to_end(&mut content).map_err(unavailable)?;

    let mut lines = HashMap::new();
    let mut start = 0usize;
    let mut number = 0usize;
    while let Some(newline) = content[start..].iter().position(|&byte| byte == b'\n') {
        number += 1;
        let line = &content[start..start + newline];
        let event = AuditEvent::from_json(line)
            .map_err(|error| AuditError::Corrupt(format!("line {number} of {}: {error}", path.display())))?;
        lines.entry(event.event_id).or_insert((start as u64, newline));
        start += newline + 1;
    }
    if start < content.len() {
        tracing::warn!(
            path = %path.display(),
            bytes = content.len() - start,
            "cutting off a half-written last line of the audit trail"
        );
        file.set_len(start as u64).map_err(unavailable)?;
        file.sync_data().map_err(unavailable)?;
    }
    Ok(FileState { file, len: start as u64, lines, broken: None })
}

/// Writes the events of `batch` not yet in the file, as one write, flushed to disk.
fn append_new(state: &mut FileState, batch: &[AuditEvent]) -> Result<(), AuditError> {
    if let Some(reason) = &state.broken {
        return Err(AuditError::Unavailable(reason.clone()));
    }
    let mut buffer = Vec::new();
    let mut written = Vec::new();
    for event in batch.iter().filter(|event| !state.lines.contains_key(&event.event_id)) {
        let start = state.len + buffer.len() as u64;
        let line = event.to_json();
        written.push((event.event_id.clone(), (start, line.len())));
        buffer.extend_from_slice(&line);
        buffer.push(b'\n');
    }
    if buffer.is_empty() {
        return Ok(());
    }
    let result = state.file.write_all(&buffer).and_then(|()| state.file.sync_data());
    if let Err(error) = result {
        // Cut off whatever part of the batch reached the file, so no half line stays in the
        // middle of the trail; the batch is retried as a whole.
        if let Err(cut) = state.file.set_len(state.len) {
            tracing::error!(%cut, "failed to cut off a failed audit write");
            state.broken = Some(format!("audit file: a failed write could not be cut off ({cut}); reopen it"));
        }
        return Err(unavailable(error));
    }
    state.len += buffer.len() as u64;
    state.lines.extend(written);
    Ok(())
}

fn read_line(path: &Path, start: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(start))?;
    let mut line = vec![0; len];
    file.read_exact(&mut line)?;
    Ok(line)
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, AuditError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| AuditError::Unavailable(format!("audit file task failed: {error}")))
}

fn unavailable(error: io::Error) -> AuditError {
    AuditError::Unavailable(format!("audit file: {error}"))
}
