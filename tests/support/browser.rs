//! Headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`) for
//! the control UI's end-to-end tests and benchmark. The packages are installed with
//! `apt-get` when missing (once, behind a lock); if that fails the caller panics with the
//! reason, never skips. Chromium runs with the flags that keep it off the network
//! (no background networking, component updates, sync or QUIC) and a fresh profile.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

/// Where Debian puts the browser and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The WebDriver server for it.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn installed() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

fn apt(args: &[&str]) -> Result<(), String> {
    let out = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "apt-get {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        ))
    }
}

/// Installs `chromium` and `chromium-driver` when missing; panics saying why it could not.
pub fn ensure_installed() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let result = DONE.get_or_init(|| {
        if installed() {
            return Ok(());
        }
        // Other test binaries may be installing too: one apt at a time.
        let lock = std::fs::File::create(std::env::temp_dir().join("troupe-ui-apt.lock"))
            .map_err(|e| format!("cannot create the install lock: {e}"))?;
        lock.lock()
            .map_err(|e| format!("cannot take the install lock: {e}"))?;
        if installed() {
            return Ok(());
        }
        let packages = ["install", "-y", "chromium", "chromium-driver"];
        if apt(&packages).is_err() {
            apt(&["update"])?;
            apt(&packages)?;
        }
        if installed() {
            Ok(())
        } else {
            Err(format!(
                "apt-get installed chromium and chromium-driver but {CHROMIUM} or {CHROMEDRIVER} is missing"
            ))
        }
    });
    if let Err(why) = result {
        panic!(
            "the control UI tests need Chromium: `apt-get install -y chromium chromium-driver` (as root) did not work: {why}"
        );
    }
}

/// A chromedriver process (in its own process group, with the Chromium it starts) and a
/// WebDriver session in a fresh profile; killed on drop.
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window of `width` x `height`.
    pub async fn start(width: u32, height: u32) -> Browser {
        ensure_installed();
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = reqwest::get(format!("{url}/status"))
                .await
                .ok()
                .map(|r| r.json::<Value>());
            if let Some(body) = ready
                && let Ok(body) = body.await
                && body["value"]["ready"] == true
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not get ready on port {port} within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut options = json!({ "binary": CHROMIUM, "args": args });
        if width < 500 {
            // A headless window is at least 500 px wide: emulate a phone's screen instead.
            options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": width, "height": height, "pixelRatio": 2.0, "touch": true },
            });
        }
        let caps = json!({ "browserName": "chrome", "goog:chromeOptions": options });
        let caps = match caps {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a WebDriver session in Chromium");
        Browser {
            client,
            driver,
            profile,
        }
    }

    /// Runs `script` (a function body; `arguments` as given) and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns something other than `null`/`false`, or panics with
    /// `what` (and the page's visible text) after `timeout`.
    pub async fn wait_for(&self, timeout: Duration, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.js(script).await;
            if !(v.is_null() || v == false) {
                return v;
            }
            if Instant::now() >= deadline {
                let text = self.js("return document.body.innerText").await;
                let size = self
                    .js("return [window.innerWidth, document.documentElement.scrollWidth]")
                    .await;
                panic!(
                    "timed out after {timeout:?} waiting for: {what}\n[innerWidth, scrollWidth] = {size}\npage text:\n{text}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG of the window under `target/ui-artifacts/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-artifacts");
        std::fs::create_dir_all(&dir).expect("artifact dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// Ends the WebDriver session (Chromium quits), then chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the Chromium it started share its process group.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.driver.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.driver.wait();
    }
}
