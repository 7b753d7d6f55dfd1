//! The PID file with an exclusive lock: a second gateway on the same home is refused; a PID
//! file nobody holds the lock on is stale and replaced.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Why the PID file could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    /// Another gateway holds the lock.
    #[error(
        "a gateway is already running on this home (pid {pid}, PID file {path}); stop it with `troupe gateway stop` or use another TROUPE_HOME"
    )]
    AlreadyRunning {
        /// Its pid, as written.
        pid: String,
        /// The PID file.
        path: String,
    },
    /// The file could not be opened or written.
    #[error("cannot write PID file {path}: {source}")]
    Io {
        /// The PID file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The held PID file; dropping it removes the file and releases the lock.
#[derive(Debug)]
pub struct PidFile {
    file: File,
    path: PathBuf,
    /// True when an old, unlocked PID file was found and replaced.
    pub replaced_stale: bool,
}

impl PidFile {
    /// Takes the lock and writes our pid.
    pub fn acquire(path: &Path) -> Result<Self, PidFileError> {
        let io = |source| PidFileError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(PidFileError::AlreadyRunning {
                    pid: pid.trim().to_string(),
                    path: path.display().to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut old = String::new();
        let _ = file.read_to_string(&mut old);
        let replaced_stale = !old.trim().is_empty();
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            replaced_stale,
        })
    }

    /// Whether some process holds the lock on `path` (a live gateway).
    pub fn is_locked(path: &Path) -> bool {
        let Ok(file) = File::open(path) else {
            return false;
        };
        matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}
