//! The OpenAPI document against the real gateway: `schemathesis` (PyPI, pinned) generates
//! requests for every documented operation from the document itself and checks that none
//! gets a server error (5xx). `POST /api/restart` is left out (it stops the gateway).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

/// The `schemathesis` release the test runs (pinned: a new release must not change what the
/// test checks without anyone noticing).
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// Test cases generated per operation and phase.
const MAX_EXAMPLES: &str = "20";

/// `target/py-schemathesis`, a virtualenv with the pinned `schemathesis`, created if
/// missing. A lock file next to it keeps two test processes from installing at once.
fn schemathesis() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .to_path_buf();
    let venv = target.join("py-schemathesis");
    let bin = venv.join("bin/schemathesis");
    let lock = std::fs::File::create(target.join("py-schemathesis.lock")).expect("lock file");
    lock.lock().expect("lock the venv");
    let installed = || {
        Command::new(&bin).arg("--version").output().is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(SCHEMATHESIS_VERSION)
        })
    };
    if installed() {
        return bin;
    }
    let run = |cmd: &mut Command| {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if !venv.join("bin/python").exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    }
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("schemathesis=={SCHEMATHESIS_VERSION}"),
    ]));
    assert!(installed(), "schemathesis runs after pip install");
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_in_the_documented_api() {
    let bin = tokio::task::spawn_blocking(schemathesis)
        .await
        .expect("venv setup");
    // Providers on a closed local port: a smoke test fails fast instead of going online.
    let gw = TestGateway::builder()
        .env(
            "TROUPE__PROVIDERS__OPENAI__BASE_URL",
            "http://127.0.0.1:1/v1",
        )
        .env(
            "TROUPE__PROVIDERS__ANTHROPIC__BASE_URL",
            "http://127.0.0.1:1",
        )
        .start();
    gw.wait_ready().await;
    let report = gw.home().join("schemathesis");
    let out = tokio::process::Command::new(&bin)
        .arg("run")
        .arg(gw.http("/api/openapi.json"))
        .args(["--checks", "not_a_server_error"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--exclude-path", "/api/restart"])
        .args(["--header", &format!("Authorization: Bearer {}", gw.token)])
        .args(["--request-timeout", "30", "--workers", "2", "--no-color"])
        .arg("--report-dir")
        .arg(&report)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .current_dir(gw.home())
        .output()
        .await
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{stderr}"
    );
    let health = reqwest::get(gw.http("/healthz"))
        .await
        .expect("GET /healthz");
    assert_eq!(
        health.status(),
        200,
        "the gateway still answers after the run"
    );
}
