//! The access log (`WARMING_ACCESS_LOG`): every access the service records,
//! appended to a file as one JSON line `{"key": "...", "at": <unix secs>}`,
//! the `access-jsonl` format that `warming replay` reads. It is how a user
//! replays their own traffic: point `warming replay --trace` at the file (or
//! at what `GET /warm/access/log` streams).
//!
//! Recording never waits on the disk: accesses go to an in-memory buffer
//! (one short lock per batch) that a background task writes out every
//! [`FLUSH_EVERY`] and at shutdown. If the disk falls behind and the buffer
//! holds [`MAX_BUFFERED`] accesses, further ones are dropped and counted
//! (`warming_access_log_dropped_total`), so a slow disk costs log lines, not
//! service latency. When the file passes `max_bytes` it is renamed to
//! `<path>.1` (replacing an older one) and a new file is started: at most
//! about twice `max_bytes` on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// How often buffered accesses are written out.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Most accesses waiting for the disk; more are dropped and counted.
pub const MAX_BUFFERED: usize = 1 << 20;

/// One line of the log.
#[derive(Serialize)]
struct Line<'a> {
    key: &'a str,
    at: u64,
}

/// Counters the log reports through the service's metrics.
#[derive(Clone)]
pub struct LogCounters {
    pub written: Counter,
    pub dropped: Counter,
}

impl Default for LogCounters {
    /// Counters that count nowhere (tests, tools).
    fn default() -> Self {
        LogCounters {
            written: Counter::noop(),
            dropped: Counter::noop(),
        }
    }
}

/// The writing side, shared by every recorder (see the module doc).
pub struct AccessLog {
    path: PathBuf,
    max_bytes: u64,
    buffer: Mutex<Vec<(String, u64)>>,
    /// One flush at a time (the writer task and the export endpoint), so
    /// batches land in order and a rotation is not done twice.
    writing: tokio::sync::Mutex<()>,
    counters: LogCounters,
}

impl AccessLog {
    /// A log appending to `path` (created with its directory if missing),
    /// rotated past `max_bytes`.
    pub fn new(path: PathBuf, max_bytes: u64, counters: LogCounters) -> Arc<Self> {
        Arc::new(AccessLog {
            path,
            max_bytes: max_bytes.max(1),
            buffer: Mutex::new(Vec::new()),
            writing: tokio::sync::Mutex::new(()),
            counters,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rotated file, `<path>.1`.
    pub fn rotated_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".1");
        PathBuf::from(p)
    }

    /// Buffers `accesses` for the writer; drops (and counts) what does not fit.
    pub fn record<'a>(&self, accesses: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut buf = self.buffer.lock();
        let mut dropped = 0;
        for (key, at) in accesses {
            if buf.len() < MAX_BUFFERED {
                buf.push((key.to_owned(), at));
            } else {
                dropped += 1;
            }
        }
        drop(buf);
        if dropped > 0 {
            self.counters.dropped.increment(dropped);
        }
    }

    /// Writes what is buffered now; returns when it is on disk (flushed to
    /// the OS). For the writer task, shutdown and tests. A batch that cannot
    /// be written is counted as dropped.
    pub async fn flush(&self) -> std::io::Result<()> {
        let _writing = self.writing.lock().await;
        let batch = std::mem::take(&mut *self.buffer.lock());
        if batch.is_empty() {
            return Ok(());
        }
        match self.append(&batch).await {
            Ok(()) => {
                self.counters.written.increment(batch.len() as u64);
                Ok(())
            }
            Err(e) => {
                self.counters.dropped.increment(batch.len() as u64);
                Err(e)
            }
        }
    }

    /// Appends `batch` as JSON lines, rotating first if it would pass `max_bytes`.
    async fn append(&self, batch: &[(String, u64)]) -> std::io::Result<()> {
        let mut text = Vec::with_capacity(batch.len() * 48);
        for (key, at) in batch {
            serde_json::to_writer(&mut text, &Line { key, at: *at })
                .map_err(std::io::Error::other)?;
            text.push(b'\n');
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await?;
        }
        let size = tokio::fs::metadata(&self.path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if size > 0 && size + text.len() as u64 > self.max_bytes {
            tokio::fs::rename(&self.path, self.rotated_path()).await?;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await?;
        file.write_all(&text).await?;
        file.flush().await
    }

    /// The writer: flushes every [`FLUSH_EVERY`] until `stop`, then once more.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let stopped = tokio::select! {
                _ = tokio::time::sleep(FLUSH_EVERY) => false,
                _ = stop.cancelled() => true,
            };
            if let Err(e) = self.flush().await {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write the access log");
            }
            if stopped {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn writes_json_lines_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/access.jsonl");
        // Each line is ~30 bytes: 100 bytes hold three.
        let log = AccessLog::new(path.clone(), 100, LogCounters::default());
        log.record([
            ("user:1", 1_700_000_000),
            ("a \"quoted\" key", 1_700_000_001),
        ]);
        log.flush().await.unwrap();
        let got = lines(&path);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            serde_json::json!({"key": "user:1", "at": 1_700_000_000u64})
        );
        assert_eq!(got[1]["key"], "a \"quoted\" key");

        log.record([("user:2", 1_700_000_002), ("user:3", 1_700_000_003)]);
        log.flush().await.unwrap();
        let rotated = lines(&log.rotated_path());
        assert_eq!(rotated.len(), 2, "the full file moved to .1");
        let current = lines(&path);
        assert_eq!(current.len(), 2);
        assert_eq!(current[1]["key"], "user:3");
    }

    #[tokio::test]
    async fn the_writer_flushes_on_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.jsonl");
        let log = AccessLog::new(path.clone(), 1 << 20, LogCounters::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(log.clone().run(stop.clone()));
        log.record([("k", 5)]);
        stop.cancel();
        task.await.unwrap();
        assert_eq!(lines(&path).len(), 1);
    }
}
