//! Shared pieces of the `gateway_load` benchmark: the WebSocket client, the child server
//! processes, the bare baseline server and the report table.
//!
//! This lives in `benches/support/` rather than directly in `benches/` because cargo
//! auto-discovers every `benches/*.rs` file as a bench target of its own.

pub mod bare_ws_server;
pub mod client;
pub mod process;
pub mod report;
pub mod throughput;

/// Error type of the benchmark: any error, sendable across tasks.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Result type of the benchmark.
pub type BenchResult<T> = Result<T, BoxError>;

/// Awaits `fut` for at most `limit`; a timeout becomes an error naming `what`.
pub async fn within<T, E, F>(what: &str, limit: std::time::Duration, fut: F) -> BenchResult<T>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(format!("{what}: no answer within {limit:?}").into()),
    }
}
