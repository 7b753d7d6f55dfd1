//! Keeps a vault's index current with edits made outside Troupe, without walking the
//! folder on every read: a directory watcher (`notify`: inotify, FSEvents, ...) per vault
//! reports changed paths; after a short quiet time ([`DEBOUNCE`]) each changed note is
//! reindexed (or dropped when gone). A full reconcile walk happens only at start, when the
//! watcher reports an error or an overflow (a rescan), when a folder is created, moved or
//! removed, and for a vault nobody watches (every operation then walks, as before).
//!
//! A watch lives as long as its [`VaultWatch`] (the agent actor holds its vault's), so
//! agents added by a config reload get one and removed ones lose theirs. Vault operations
//! ask [`is_current`] by the vault's folder: any [`Vault`] of that folder benefits.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use rusqlite::OptionalExtension;

use super::index::{self, FileStamp};
use super::{Vault, VaultError};

/// Quiet time after the last change before the changed notes are reindexed.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// A steady stream of changes is still indexed at least this often.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// What the watch of one vault folder tells its readers.
#[derive(Debug, Default)]
struct WatchState {
    /// Bumped whenever the index may have missed something (start, errors, overflow).
    dirty: AtomicU64,
    /// The `dirty` value the last successful full reconcile started from.
    clean: AtomicU64,
    /// The watcher stopped delivering (its thread ended): reads walk again.
    broken: AtomicBool,
}

impl WatchState {
    fn current(&self) -> bool {
        !self.broken.load(Ordering::Acquire)
            && self.clean.load(Ordering::Acquire) == self.dirty.load(Ordering::Acquire)
    }
}

type Registry = HashMap<PathBuf, Arc<WatchState>>;

fn registry() -> &'static Mutex<Registry> {
    static WATCHED: OnceLock<Mutex<Registry>> = OnceLock::new();
    WATCHED.get_or_init(|| Mutex::new(HashMap::new()))
}

fn state_of(root: &Path) -> Option<Arc<WatchState>> {
    registry()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(root)
        .cloned()
}

/// Whether `root`'s index is kept current by a live watch (no walk needed).
pub fn is_current(root: &Path) -> bool {
    state_of(root).is_some_and(|s| s.current())
}

/// Before a full reconcile of `root`: the token to hand to [`reconciled`] after it.
pub fn reconcile_token(root: &Path) -> Option<u64> {
    state_of(root).map(|s| s.dirty.load(Ordering::Acquire))
}

/// A full reconcile of `root` that started at `token` succeeded.
pub fn reconciled(root: &Path, token: Option<u64>) {
    if let (Some(state), Some(token)) = (state_of(root), token) {
        state.clean.fetch_max(token, Ordering::AcqRel);
    }
}

/// Keeps one vault folder watched; dropping it stops the watch.
pub struct VaultWatch {
    root: PathBuf,
    state: Arc<WatchState>,
    _watcher: RecommendedWatcher,
}

impl std::fmt::Debug for VaultWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultWatch")
            .field("root", &self.root)
            .finish()
    }
}

impl Drop for VaultWatch {
    fn drop(&mut self) {
        let mut map = registry().lock().unwrap_or_else(PoisonError::into_inner);
        if map
            .get(&self.root)
            .is_some_and(|s| Arc::ptr_eq(s, &self.state))
        {
            map.remove(&self.root);
        }
    }
}

/// What the watcher thread hears.
enum Heard {
    /// These paths changed (created, written, renamed or removed).
    Paths(Vec<PathBuf>),
    /// Something may have been missed: walk the whole vault.
    Rescan,
}

/// Starts watching `vault`'s folder (created if missing). The first full reconcile runs on
/// the watch's thread right away; until it is done, reads walk as before.
pub fn start(vault: &Vault) -> Result<VaultWatch, VaultError> {
    let root = vault.root().to_path_buf();
    std::fs::create_dir_all(&root).map_err(|e| {
        VaultError::Unavailable(format!(
            "cannot create memory directory {}: {e}",
            root.display()
        ))
    })?;
    let state = Arc::new(WatchState::default());
    state.dirty.store(1, Ordering::Release);
    let (tx, rx) = mpsc::channel::<Heard>();
    let heard_by = state.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let heard = match res {
            Ok(event) if event.need_rescan() => Heard::Rescan,
            Ok(event) if matches!(event.kind, EventKind::Other | EventKind::Any) => Heard::Rescan,
            Ok(event) if is_change(&event.kind) => Heard::Paths(event.paths),
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "vault watcher error; the vault will be walked again");
                Heard::Rescan
            }
        };
        if matches!(heard, Heard::Rescan) {
            // Reads walk from now on, until the rescan is done.
            heard_by.dirty.fetch_add(1, Ordering::AcqRel);
        }
        let _ = tx.send(heard);
    })
    .map_err(|e| VaultError::Unavailable(format!("cannot watch the vault: {e}")))?;
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .map_err(|e| VaultError::Unavailable(format!("cannot watch {}: {e}", root.display())))?;
    registry()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(root.clone(), state.clone());
    let worker = Worker {
        vault: vault.clone(),
        state: state.clone(),
    };
    std::thread::Builder::new()
        .name("vault-watch".into())
        .spawn(move || worker.run(rx))
        .map_err(|e| {
            VaultError::Unavailable(format!("cannot start the vault watch thread: {e}"))
        })?;
    Ok(VaultWatch {
        root,
        state,
        _watcher: watcher,
    })
}

/// A write, create, rename or removal; not an open, a read or a metadata-only change.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        _ => false,
    }
}

/// The watch's thread: gathers a burst of changes, then applies it to the index.
struct Worker {
    vault: Vault,
    state: Arc<WatchState>,
}

impl Worker {
    fn run(self, rx: mpsc::Receiver<Heard>) {
        self.full_reconcile();
        while let Ok(first) = rx.recv() {
            let mut paths = BTreeSet::new();
            let mut rescan = false;
            let mut take = |heard: Heard| match heard {
                Heard::Paths(p) => paths.extend(p),
                Heard::Rescan => rescan = true,
            };
            take(first);
            let burst = Instant::now();
            let mut closed = false;
            while burst.elapsed() < MAX_DELAY {
                match rx.recv_timeout(DEBOUNCE) {
                    Ok(heard) => take(heard),
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                break;
            }
            if !rescan {
                match self.reindex(&paths) {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(vault = %self.vault.root().display(), error = %e, "reindexing changed notes failed; walking the vault");
                    }
                }
            }
            self.state.dirty.fetch_add(1, Ordering::AcqRel);
            self.full_reconcile();
        }
        self.state.broken.store(true, Ordering::Release);
    }

    fn full_reconcile(&self) {
        let token = self.state.dirty.load(Ordering::Acquire);
        match self.vault.reconcile() {
            Ok(_) => {
                self.state.clean.fetch_max(token, Ordering::AcqRel);
            }
            Err(e) => {
                tracing::warn!(vault = %self.vault.root().display(), error = %e, "vault reconcile failed; reads will walk until it succeeds");
            }
        }
    }

    /// Reindexes the changed notes; `Ok(false)` when a change needs a full walk (a folder
    /// created, moved or removed).
    fn reindex(&self, paths: &BTreeSet<PathBuf>) -> Result<bool, VaultError> {
        let mut changes: Vec<(String, Option<FileStamp>)> = Vec::new();
        for path in paths {
            let Ok(rel) = path.strip_prefix(self.vault.root()) else {
                continue;
            };
            let Some(rel) = rel.to_str() else {
                continue;
            };
            if rel.is_empty() {
                return Ok(false);
            }
            let rel = rel.replace(std::path::MAIN_SEPARATOR, "/");
            if rel.split('/').any(|c| c.starts_with('.')) {
                continue;
            }
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.is_dir() => return Ok(false),
                Ok(meta) if meta.is_file() && rel.ends_with(".md") => {
                    changes.push((rel, Some(FileStamp::of(&meta))));
                }
                Ok(_) if rel.ends_with(".md") => changes.push((rel, None)),
                Ok(_) => {}
                // Gone: a note, or a folder (its notes are then found by walking).
                Err(_) if rel.ends_with(".md") => changes.push((rel, None)),
                Err(_) => return Ok(false),
            }
        }
        if changes.is_empty() {
            return Ok(true);
        }
        let mut conn = self.vault.connection()?;
        let tx = super::immediate(&mut conn)?;
        for (rel, stamp) in changes {
            let known: Option<FileStamp> = tx
                .query_row(
                    "SELECT size, mtime_ns FROM notes WHERE path = ?1",
                    [&rel],
                    |r| {
                        Ok(FileStamp {
                            size: r.get(0)?,
                            mtime_ns: r.get(1)?,
                        })
                    },
                )
                .optional()
                .map_err(|e| VaultError::Index(e.to_string()))?;
            match stamp {
                Some(stamp) if known != Some(stamp) => {
                    let text = index::read_small(&self.vault.root().join(&rel), &stamp);
                    index::upsert(&tx, &rel, stamp, &text)?;
                }
                Some(_) => {}
                None if known.is_some() => index::remove(&tx, &rel)?,
                None => {}
            }
        }
        tx.commit().map_err(|e| VaultError::Index(e.to_string()))?;
        Ok(true)
    }
}
