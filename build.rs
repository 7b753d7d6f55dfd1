//! Build script of the `troupe` binary: in a release build, asks the linker to place the
//! functions that run at start and on a turn next to each other (`build/symbol-order.txt`,
//! made by `build/symbol-order.sh`). Code is mapped into memory in blocks of 64 KiB
//! around each first use, so start-up code scattered over 24 MB of code keeps ~11 MB of it
//! resident at rest; packed together, ~4 MB (docs/architecture.md, "Why RSS at rest").
//!
//! Only where the linker is LLD, Rust's default for `x86_64-unknown-linux-gnu` since
//! 1.90, and no other linker is configured; `TROUPE_SYMBOL_ORDER=0` turns it off. Names in
//! the list that the binary does not have (changed code, other versions of dependencies)
//! are skipped: the layout then packs less, and nothing else changes. The names carry
//! hashes of the dependency versions and of the toolchain, so the list is stamped with the
//! `Cargo.lock` and `rustc` it was made with (`build/symbol-order.stamp`); a release build
//! with others warns that the list should be made again.

use std::env;
use std::path::Path;
use std::process::Command;

const ORDER_FILE: &str = "build/symbol-order.txt";
const STAMP_FILE: &str = "build/symbol-order.stamp";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-changed={STAMP_FILE}");
    println!("cargo:rerun-if-changed=Cargo.lock");
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
        let root = Path::new(&dir);
        if stamp(root).as_deref()
            != std::fs::read_to_string(root.join(STAMP_FILE))
                .ok()
                .as_deref()
        {
            println!(
                "cargo:warning={ORDER_FILE} was made with another Cargo.lock or rustc: \
                 the binary is laid out less tightly (more memory at rest) until \
                 build/symbol-order.sh makes it again"
            );
        }
    }
}

/// What the list depends on: the FNV-1a hash of `Cargo.lock` and `rustc --version`, one
/// per line (as `build/symbol-order.sh` writes it).
fn stamp(root: &Path) -> Option<String> {
    let lock = std::fs::read(root.join("Cargo.lock")).ok()?;
    let hash = lock.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    Some(format!(
        "Cargo.lock fnv1a64 {hash:016x}\n{}\n",
        rustc_version()?
    ))
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

/// `rustc --version` of the rustc that builds this, e.g. `rustc 1.95.0 (59807616e 2026-04-14)`.
fn rustc_version() -> Option<String> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}

/// The minor version of the rustc that builds this (`rustc 1.95.0 (...)` → 95).
fn rustc_minor() -> Option<u32> {
    let text = rustc_version()?;
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.');
    (parts.next()? == "1").then_some(())?;
    parts.next()?.parse().ok()
}
