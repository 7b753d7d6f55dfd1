//! Build script of the `troupe` binary: in a release build, asks the linker to place the
//! functions that run at start and on a turn next to each other (`build/symbol-order.txt`,
//! made by `build/symbol-order.sh`). Code is mapped into memory in blocks of 64 KiB
//! around each first use, so start-up code scattered over 24 MB of code keeps ~11 MB of it
//! resident at rest; packed together, ~4 MB (docs/architecture.md, "Why RSS at rest").
//!
//! Only where the linker is LLD, Rust's default for `x86_64-unknown-linux-gnu` since
//! 1.90, and no other linker is configured; `TROUPE_SYMBOL_ORDER=0` turns it off. Names in
//! the list that the binary does not have (changed code, other versions of dependencies)
//! are skipped: the layout then packs less, and nothing else changes.

use std::env;
use std::path::Path;
use std::process::Command;

const ORDER_FILE: &str = "build/symbol-order.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-env-changed=TROUPE_SYMBOL_ORDER");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let Ok(dir) = env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let order = Path::new(&dir).join(ORDER_FILE);
    if order.is_file() && linker_is_default_lld() {
        println!(
            "cargo:rustc-link-arg-bin=troupe=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=troupe=-Wl,--no-warn-symbol-ordering");
    }
}

/// A release build for x86-64 Linux with rustc's own LLD (1.90 or later, no linker chosen
/// through the environment or flags), and not turned off.
fn linker_is_default_lld() -> bool {
    let var = |name: &str| env::var(name).unwrap_or_default();
    if var("TROUPE_SYMBOL_ORDER") == "0"
        || var("PROFILE") != "release"
        || var("TARGET") != "x86_64-unknown-linux-gnu"
        || env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
    {
        return false;
    }
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    if ["linker", "link-self-contained", "link-arg"]
        .iter()
        .any(|f| flags.contains(f))
    {
        return false;
    }
    rustc_minor().is_some_and(|minor| minor >= 90)
}

/// The minor version of the rustc that builds this (`rustc 1.95.0 (...)` → 95).
fn rustc_minor() -> Option<u32> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.');
    (parts.next()? == "1").then_some(())?;
    parts.next()?.parse().ok()
}
