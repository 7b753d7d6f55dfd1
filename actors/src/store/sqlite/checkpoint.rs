//! WAL checkpoints off the write path. SQLite's automatic checkpoint runs inside the commit
//! that crosses its threshold (1000 pages): that one commit copies the WAL back into the
//! database and syncs both files, a stall of milliseconds for whichever turn it lands on
//! (the p99 of a lone session). Instead the store's connection has automatic checkpoints
//! off, and every [`NUDGE_EVERY`] commits it nudges a thread of its own, with a connection
//! of its own, that runs a `PASSIVE` checkpoint beside the writer (WAL mode lets the two
//! go on at once). The thread is started at the first nudge (an idle gateway has none)
//! and ends when the store closes, after the store's connection, so its own close is the
//! last one and leaves the database checkpointed and the WAL removed.
//!
//! A passive checkpoint never blocks the writer, so under a write load that never pauses
//! it may not catch up; the WAL then keeps growing. The thread reports the WAL's length
//! after each checkpoint, and once it exceeds [`INLINE_AFTER_FRAMES`] the writer checkpoints
//! on its own connection between two batches, as SQLite would have.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// Commits between two nudges of the checkpoint thread. A checkpoint costs far less than
/// in proportion to the commits it covers (mostly the same hot pages are copied back, and
/// both files synced once), so fewer of them cost less per commit: from 100 to 400, the
/// thread's CPU per echo turn fell from ~20 to ~11 µs (docs/architecture.md). The WAL
/// grows to ~4,000 frames (16 MB) before it is written back and starts over.
pub const NUDGE_EVERY: u32 = 400;

/// WAL length (frames, a page each) past which the writer checkpoints itself.
pub const INLINE_AFTER_FRAMES: i64 = 16_000;

/// The checkpoint thread of one store connection.
pub struct Checkpointer {
    path: PathBuf,
    commits: u32,
    /// Frames in the WAL after the thread's last checkpoint.
    wal_frames: Arc<AtomicI64>,
    thread: Option<(SyncSender<()>, JoinHandle<()>)>,
    /// The thread could not be started: the writer checkpoints itself.
    failed: bool,
}

impl Checkpointer {
    /// Checkpoints for the database at `path`; turns the automatic checkpoint of `conn`
    /// (the store's connection) off.
    pub fn new(conn: &Connection, path: &Path) -> rusqlite::Result<Self> {
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(Self {
            path: path.to_path_buf(),
            commits: 0,
            wal_frames: Arc::new(AtomicI64::new(0)),
            thread: None,
            failed: false,
        })
    }

    /// Counts a commit of the store's connection `conn`; nudges the thread every
    /// [`NUDGE_EVERY`], or checkpoints on `conn` itself when the thread falls behind.
    pub fn committed(&mut self, conn: &Connection) {
        self.commits += 1;
        if self.commits < NUDGE_EVERY {
            return;
        }
        self.commits = 0;
        if self.failed || self.wal_frames.load(Ordering::Relaxed) > INLINE_AFTER_FRAMES {
            checkpoint(conn, &self.wal_frames);
            return;
        }
        if self.thread.is_none() {
            self.start();
        }
        if let Some((nudge, _)) = &self.thread {
            match nudge.try_send(()) {
                // Full: a nudge is already pending, which is as good.
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => {
                    self.thread = None;
                    self.failed = true;
                    checkpoint(conn, &self.wal_frames);
                }
            }
        }
    }

    fn start(&mut self) {
        let (nudge, nudged) = sync_channel(1);
        let (path, frames) = (self.path.clone(), self.wal_frames.clone());
        let spawned = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .stack_size(256 * 1024)
            .spawn(move || run(&path, &nudged, &frames));
        match spawned {
            Ok(handle) => self.thread = Some((nudge, handle)),
            Err(e) => {
                tracing::warn!(error = %e, "no checkpoint thread; the store checkpoints inline");
                self.failed = true;
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        if let Some((nudge, handle)) = self.thread.take() {
            drop(nudge);
            let _ = handle.join();
        }
    }
}

/// The thread: a checkpoint per nudge until the store goes away.
fn run(path: &Path, nudged: &Receiver<()>, frames: &AtomicI64) {
    let conn = match Connection::open(path) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(error = %e, "checkpoint thread cannot open the database");
            // The writer sees the WAL grow and checkpoints itself.
            frames.store(i64::MAX, Ordering::Relaxed);
            return;
        }
    };
    let _ = conn.busy_timeout(Duration::from_millis(100));
    while nudged.recv().is_ok() {
        checkpoint(&conn, frames);
    }
}

/// A passive checkpoint on `conn`; records the WAL's length after it.
fn checkpoint(conn: &Connection, frames: &AtomicI64) {
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        row.get::<_, i64>(1)
    });
    match result {
        Ok(log) => frames.store(log, Ordering::Relaxed),
        Err(e) => tracing::debug!(error = %e, "WAL checkpoint failed; the next one retries"),
    }
}
