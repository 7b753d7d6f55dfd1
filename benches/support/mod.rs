//! Shared pieces of the load benchmarks (`gateway_load`, `turn_load`): one `main`
//! ([`bench_main`]) and its environment knobs, the WebSocket client, the child server
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

/// The `main` every load benchmark shares: unless `TROUPE_BENCH_QUICK` is set or cargo
/// passed `--bench`, it prints that it skipped itself (so `cargo test --benches` stays
/// quick); else it reads the scale, runs `measure` on a multi-thread runtime, prints the
/// table it returns, and fails once the table is printed if a part of it failed.
pub fn bench_main<S, F, Fut>(
    name: &str,
    scale: impl FnOnce(bool) -> BenchResult<S>,
    measure: F,
) -> Result<(), BoxError>
where
    F: FnOnce(S) -> Fut,
    Fut: std::future::Future<Output = report::Table>,
{
    let quick = env_flag("TROUPE_BENCH_QUICK");
    if !quick && !std::env::args().any(|arg| arg == "--bench") {
        println!("{name}: skipped; run `cargo bench --bench {name}` or set TROUPE_BENCH_QUICK=1");
        return Ok(());
    }
    let scale = scale(quick)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let table = runtime.block_on(measure(scale));
    table.print();
    if table.has_errors() {
        return Err("some measurements failed (see above)".into());
    }
    Ok(())
}

/// Whether an environment variable is set to something other than empty, `0` or `false`.
pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// A numeric environment variable, if set; an error if set but not a number.
pub fn env_number<T: std::str::FromStr>(name: &str) -> BenchResult<Option<T>> {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{name}={text} is not a number").into()),
        _ => Ok(None),
    }
}
