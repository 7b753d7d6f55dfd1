//! Logging: `tracing` to stdout and to `logs/troupe.log`.

use std::io::IsTerminal;
use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the subscriber; keep the guard alive so the file writer flushes on exit.
pub fn init(level: &str, logs_dir: &Path) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let file = tracing_appender::rolling::never(logs_dir, "troupe.log");
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
    registry.try_init().ok().map(|_| guard)
}
