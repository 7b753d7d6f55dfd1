//! The `troupe` binary: parse the command line and hand it to [`troupe::dispatch`].

use clap::Parser;

/// With the `mimalloc` feature, mimalloc serves every allocation (see docs/resilience.md for
/// what it changes in RSS and throughput).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = troupe::cli::Cli::parse();
    std::process::exit(troupe::dispatch(cli));
}
