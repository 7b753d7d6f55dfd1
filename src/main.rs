//! The `troupe` binary: parse the command line and hand it to [`troupe::dispatch`].

use clap::Parser;

fn main() {
    let cli = troupe::cli::Cli::parse();
    std::process::exit(troupe::dispatch(cli));
}
