//! Watches the config file's directory (editors replace a file by writing a temporary one
//! and renaming it over the original, which a watch on the file itself would lose) and
//! reports, debounced, that the file may have changed. Whether the content really changed
//! is decided by its hash.
//!
//! The watch asks inotify only for the events that end a change: a file written and
//! closed, created, deleted, or renamed in or out. Not for every write (`IN_MODIFY`): the
//! directory is also the state dir, where the database and its WAL are written several
//! times a turn, and a watch on writes woke a thread for each of them (a tenth of the
//! gateway's CPU per turn). A file written in place is reported when its writer closes it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::mpsc::Sender;

/// Quiet time after the last event before a change is reported.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// Keeps the watch alive; dropping it stops watching (and its threads end).
pub struct FileWatch {
    watches: Watches,
    wd: Option<WatchDescriptor>,
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        if let Some(wd) = self.wd.take() {
            // The reader gets IN_IGNORED for it and ends.
            let _ = self.watches.remove(wd);
        }
    }
}

/// Starts watching `file`'s directory; each burst of changes to `file` sends one `()`.
pub fn watch(file: &Path, changed: Sender<()>) -> Result<FileWatch, String> {
    let dir: PathBuf = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = file
        .file_name()
        .ok_or_else(|| format!("config path {} names no file", file.display()))?
        .to_os_string();
    let inotify = Inotify::init().map_err(|e| format!("cannot watch the config file: {e}"))?;
    let mut watches = inotify.watches();
    let mask = WatchMask::CLOSE_WRITE
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO;
    let wd = watches
        .add(&dir, mask)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    let watch = FileWatch {
        watches,
        wd: Some(wd),
    };
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("config-watch".into())
        .spawn(move || debounce(rx, changed))
        .map_err(|e| format!("cannot start the config watch thread: {e}"))?;
    std::thread::Builder::new()
        .name("config-inotify".into())
        .stack_size(64 * 1024)
        .spawn(move || read_events(inotify, &name, &tx))
        .map_err(|e| format!("cannot start the config watch thread: {e}"))?;
    Ok(watch)
}

/// Reads the directory's events until the watch is removed; one `()` per event that
/// names the config file.
fn read_events(mut inotify: Inotify, name: &OsString, tx: &mpsc::Sender<()>) {
    let mut buffer = [0u8; 4096];
    loop {
        let Ok(events) = inotify.read_events_blocking(&mut buffer) else {
            return;
        };
        for event in events {
            if event.mask.contains(EventMask::IGNORED) {
                return;
            }
            if event.name == Some(name.as_os_str()) && tx.send(()).is_err() {
                return;
            }
        }
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
