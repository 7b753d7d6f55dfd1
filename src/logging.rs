//! Logging: `tracing` to stdout and to `logs/`, rotated daily (or hourly, or never) with a
//! bounded number of files kept; `logs/troupe.log` always names the current file.

use std::io::IsTerminal;
use std::path::Path;

use std::sync::OnceLock;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The current log file's name under `logs/` (a symlink when rotating).
pub const LOG_FILE_NAME: &str = "troupe.log";

/// How often the log file is rotated (`logging.rotation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogRotation {
    /// A new `troupe.<YYYY-MM-DD>.log` each day (the default).
    Daily,
    /// A new `troupe.<YYYY-MM-DD-HH>.log` each hour.
    Hourly,
    /// One `troupe.log` that grows without bound.
    Never,
}

impl LogRotation {
    /// Parses the config value; the error says what is accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "daily" => Ok(Self::Daily),
            "hourly" => Ok(Self::Hourly),
            "never" => Ok(Self::Never),
            other => Err(format!("{other:?} is not one of daily, hourly, never")),
        }
    }
}

/// Where the file layer writes, and how it rotates.
#[derive(Debug, Clone, Copy)]
pub struct FileLog<'a> {
    /// The `logs/` directory.
    pub dir: &'a Path,
    /// Rotation period.
    pub rotation: LogRotation,
    /// Files kept, the current one included.
    pub max_files: usize,
}

/// Builds the file appender. A plain `troupe.log` left by `rotation = "never"` is renamed
/// aside (to `troupe.previous.log`, pruned like the rest) so the link can take its name.
fn appender(log: FileLog<'_>) -> Result<RollingFileAppender, String> {
    let rotation = match log.rotation {
        LogRotation::Daily => Rotation::DAILY,
        LogRotation::Hourly => Rotation::HOURLY,
        LogRotation::Never => Rotation::NEVER,
    };
    // The link to the current file is made from this path: absolute, so that it resolves
    // even when TROUPE_HOME is relative.
    let dir = std::fs::canonicalize(log.dir).unwrap_or_else(|_| log.dir.to_path_buf());
    let mut builder = RollingFileAppender::builder()
        .rotation(rotation)
        .filename_prefix("troupe")
        .filename_suffix("log");
    if log.rotation != LogRotation::Never {
        let current = dir.join(LOG_FILE_NAME);
        if std::fs::symlink_metadata(&current).is_ok_and(|m| m.is_file()) {
            let _ = std::fs::rename(&current, dir.join("troupe.previous.log"));
        }
        builder = builder
            .max_log_files(log.max_files)
            .latest_symlink(LOG_FILE_NAME);
    }
    builder
        .build(&dir)
        .map_err(|e| format!("cannot open the log file in {}: {e}", log.dir.display()))
}

/// Changes the level filter of the installed subscriber (config reload of `logging.level`).
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Sets the log filter live (`logging.level` changed in a config reload); the error says
/// why (an invalid filter, or no subscriber installed by [`init`]).
pub fn set_level(level: &str) -> Result<(), String> {
    let filter =
        EnvFilter::try_new(level).map_err(|e| format!("{level:?} is not a valid filter: {e}"))?;
    let handle = LEVEL
        .get()
        .ok_or_else(|| "no log subscriber is installed".to_string())?;
    handle
        .reload(filter)
        .map_err(|e| format!("cannot change the log level: {e}"))
}

/// Installs the subscriber; keep the guard alive so the file writer flushes on exit.
pub fn init(level: &str, log: FileLog<'_>) -> Result<Option<WorkerGuard>, String> {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let _ = LEVEL.set(handle);
    let file = appender(log)?;
    // 4,096 lines of buffer instead of the default 128,000: the default preallocates ~4 MB.
    let (file_writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(4096)
        .finish(file);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(std::io::stdout().is_terminal()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(file_writer),
        );
    Ok(registry.try_init().ok().map(|_| guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_names_are_checked() {
        assert_eq!(LogRotation::parse("daily"), Ok(LogRotation::Daily));
        assert_eq!(LogRotation::parse("never"), Ok(LogRotation::Never));
        let err = LogRotation::parse("weekly-ish").expect_err("unknown");
        assert!(err.contains("daily, hourly, never"), "{err}");
    }

    #[test]
    fn daily_rotation_keeps_at_most_max_files_and_links_the_current_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        for day in 1..=5 {
            std::fs::write(
                dir.path().join(format!("troupe.2020-01-0{day}.log")),
                "old\n",
            )
            .expect("old log");
        }
        std::fs::write(dir.path().join("daemon.out"), "kept\n").expect("other file");
        let log = FileLog {
            dir: dir.path(),
            rotation: LogRotation::Daily,
            max_files: 3,
        };
        drop(appender(log).expect("appender"));
        let mut logs: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("troupe."))
            .collect();
        logs.sort();
        assert_eq!(logs.len(), 3, "{logs:?}");
        assert!(dir.path().join("daemon.out").exists());
        let link = std::fs::read_link(dir.path().join(LOG_FILE_NAME)).expect("symlink");
        assert!(
            link.to_string_lossy().contains("troupe.20"),
            "links the dated file: {link:?}"
        );
    }
}
