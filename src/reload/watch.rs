//! Watches the config file's directory (editors replace a file by writing a temporary one
//! and renaming it over the original, which a watch on the file itself would lose) and
//! reports, debounced, that the file may have changed. Opening or reading the file (our
//! own reads) is not a change; whether the content really changed is decided by its hash.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::Sender;

/// Quiet time after the last event before a change is reported.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// Keeps the watch alive; dropping it stops watching.
pub struct FileWatch {
    _watcher: RecommendedWatcher,
}

/// Starts watching `file`'s directory; each burst of changes to `file` sends one `()`.
pub fn watch(file: &Path, changed: Sender<()>) -> Result<FileWatch, String> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = file
        .file_name()
        .ok_or_else(|| format!("config path {} names no file", file.display()))?
        .to_os_string();
    let (tx, rx) = mpsc::channel::<()>();
    let target: PathBuf = dir.join(&name);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else {
            return;
        };
        let ours = event
            .paths
            .iter()
            .any(|p| p.file_name() == Some(name.as_os_str()) || p == &target);
        if ours && is_change(&event.kind) {
            let _ = tx.send(());
        }
    })
    .map_err(|e| format!("cannot watch the config file: {e}"))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    std::thread::Builder::new()
        .name("config-watch".into())
        .spawn(move || debounce(rx, changed))
        .map_err(|e| format!("cannot start the config watch thread: {e}"))?;
    Ok(FileWatch { _watcher: watcher })
}

/// A write, create, rename or removal; not an open, a read or a metadata change.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        _ => false,
    }
}

/// One report per burst: waits for [`DEBOUNCE`] of quiet after the last event.
fn debounce(rx: mpsc::Receiver<()>, changed: Sender<()>) {
    while rx.recv().is_ok() {
        loop {
            match rx.recv_timeout(DEBOUNCE) {
                Ok(()) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        if changed.blocking_send(()).is_err() {
            return;
        }
    }
}
