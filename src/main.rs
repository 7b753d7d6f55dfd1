//! The `troupe` binary: parse the command line and hand it to [`troupe::dispatch`].

use clap::Parser;

/// With `--features jemalloc`: jemalloc as the allocator (docs/resilience.md; build with
/// `JEMALLOC_SYS_WITH_MALLOC_CONF` set so that freed pages go back to the system).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = troupe::cli::Cli::parse();
    std::process::exit(troupe::dispatch(cli));
}
