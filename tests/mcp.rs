//! MCP tool servers: a small rmcp server (`examples/mcp_test_server.rs`, stdio) supervised
//! as `mcp:<name>`, its tools offered to the model and called through the gateway; a killed
//! server is restarted while calls in the gap get an error result; REST enable / disable /
//! add / delete edit the config file and restart only that child; a hung call times out.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/fake_llm.rs"]
mod fake_llm;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fake_llm::{FakeLlm, Script};
use serde_json::{Value, json};
use support::*;

/// The test server binary (`cargo test` builds examples beside the test binaries).
fn server_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let debug = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = debug.join("examples").join("mcp_test_server");
    assert!(bin.exists(), "{} not built", bin.display());
    bin
}

/// A shell wrapper around the server: while `<home>/mcp-down` exists it fails to start
/// (so a restart gap lasts as long as the test wants).
fn wrapper(home: &Path) -> PathBuf {
    let script = home.join("mcp-server.sh");
    let body = format!(
        "#!/bin/sh\nif [ -f '{down}' ]; then echo down >&2; exit 1; fi\nexec '{bin}' --pid-file '{pid}'\n",
        down = home.join("mcp-down").display(),
        bin = server_bin().display(),
        pid = home.join("mcp.pid").display(),
    );
    std::fs::write(&script, body).expect("wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

fn calc_toml(home: &Path, timeout_secs: u64) -> String {
    format!(
        "[[mcp]]\nname = \"calc\"\ncommand = \"{}\"\ncall_timeout_secs = {timeout_secs}\nenv = {{ MCP_TEST_GREETING = \"hello-from-env\" }}\n",
        wrapper(home).display()
    )
}

fn start(fake: &FakeLlm, mcp_toml: impl FnOnce(&Path) -> String) -> TestGateway {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("agents").join("oa");
    std::fs::create_dir_all(dir.join("memory")).expect("agent dir");
    std::fs::write(
        dir.join("agent.toml"),
        "provider = \"openai\"\nmodel = \"fake-model\"\ntools = [\"current_time\"]\n",
    )
    .expect("agent.toml");
    let config = mcp_toml(home.path());
    std::fs::write(home.path().join("config.toml"), config).expect("config");
    TestGateway::builder()
        .env(
            "TROUPE__PROVIDERS__OPENAI__BASE_URL",
            &format!("{}/v1", fake.base_url()),
        )
        .env("OPENAI_API_KEY", "sk-test-openai")
        .env("TROUPE__PROVIDERS__HTTP__FIRST_BYTE_TIMEOUT_MS", "30000")
        .env("TROUPE__PROVIDERS__HTTP__IDLE_TIMEOUT_MS", "30000")
        .start_in(home)
}

async fn run_turn(c: &mut WsClient, message: &str, idem: &str) -> Value {
    let key = format!("agent:oa:test:dm:{idem}");
    let ack = c
        .request(
            "chat.send",
            Some(json!({ "sessionKey": key, "message": message, "idempotencyKey": idem })),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let run_id = ack["payload"]["runId"].as_str().expect("runId").to_string();
    let done = c
        .request(
            "agent.wait",
            Some(json!({ "runId": run_id, "timeoutMs": 30_000 })),
        )
        .await;
    done["payload"].clone()
}

/// The tool names the model was offered in a recorded request.
fn offered(body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t["function"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The `role: tool` message contents of a recorded request.
fn tool_results(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| m["role"] == "tool")
                .map(|m| m["content"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn mcp_tools(c: &mut WsClient) -> Vec<String> {
    let list = c.request("agents.list", None).await;
    list["payload"]["agents"][0]["mcpTools"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_for_tools(c: &mut WsClient) -> Vec<String> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let tools = mcp_tools(c).await;
        if tools.contains(&"calc__add".to_string()) {
            return tools;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "calc tools never listed: {tools:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn api(
    gw: &TestGateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, gw.http(path))
        .bearer_auth(&gw.token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json::<Value>().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tool_results_reach_the_model_and_errors_are_flagged() {
    let fake = FakeLlm::start();
    let gw = start(&fake, |home| calc_toml(home, 30));
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let tools = wait_for_tools(&mut c).await;
    for t in [
        "calc__add",
        "calc__sleep",
        "calc__fail",
        "calc__greeting",
        "calc__exit",
    ] {
        assert!(tools.contains(&t.to_string()), "{t} in {tools:?}");
    }
    fake.push(Script::tool_call("c1", "calc__add", r#"{"a":2,"b":40}"#, 2));
    fake.push(Script::tool_call("c2", "calc__greeting", "{}", 1));
    fake.push(Script::tool_call("c3", "calc__fail", "{}", 1));
    fake.push(Script::reply("all done", 1));
    let done = run_turn(&mut c, "use the calculator", "basic").await;
    assert_eq!(done["status"], "ok", "{done}");
    assert_eq!(done["summary"], "all done");
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 4);
    let names = offered(&reqs[0].body);
    assert!(names.contains(&"calc__add".to_string()), "{names:?}");
    assert!(names.contains(&"current_time".to_string()), "{names:?}");
    let add = reqs[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == "calc__add")
        .unwrap()
        .clone();
    assert!(
        add["function"]["parameters"]["properties"]["a"].is_object(),
        "the server's input schema reaches the model: {add}"
    );
    let results = tool_results(&reqs[3].body);
    assert_eq!(results.len(), 3, "{results:?}");
    assert_eq!(results[0], "sum=42");
    assert_eq!(
        results[1], "hello-from-env",
        "env reaches the server process"
    );
    assert!(
        results[2].contains("it failed on purpose"),
        "{}",
        results[2]
    );
    assert!(
        results[2].contains("error"),
        "isError honoured: {}",
        results[2]
    );
    let status = api(&gw, reqwest::Method::GET, "/api/mcps", None).await;
    assert_eq!(status.0, 200);
    let calc = &status.1["mcps"][0];
    assert_eq!(calc["name"], "calc");
    assert_eq!(calc["state"], "running");
    assert_eq!(calc["transport"], "stdio");
    assert!(
        !status.1.to_string().contains("hello-from-env"),
        "env values never shown: {}",
        status.1
    );
    let status = c.request("status", None).await;
    assert_eq!(
        status["payload"]["mcp"][0]["tools"]
            .as_array()
            .map(Vec::len),
        Some(5),
        "status lists the server's tools: {status}"
    );
    let config = c.request("config.get", None).await;
    assert!(
        !config.to_string().contains("hello-from-env"),
        "config.get redacts env values: {config}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_restarts_and_a_call_in_the_gap_is_an_error_result() {
    let fake = FakeLlm::start();
    let gw = start(&fake, |home| calc_toml(home, 30));
    gw.wait_ready().await;
    let mut c = gw.client().await;
    wait_for_tools(&mut c).await;
    // Restarts fail until the flag goes: the gap lasts as long as the test needs.
    std::fs::write(gw.home().join("mcp-down"), "").expect("flag");
    let pid: i32 = std::fs::read_to_string(gw.home().join("mcp.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the server");
    eventually(WAIT, "mcp:calc down after the kill", || async {
        let tree = gw.tree().await;
        let n = node(&tree, "mcp:calc")?;
        (n["state"] != "running" && n["restarts"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    fake.push(Script::tool_call("g1", "calc__add", r#"{"a":1,"b":1}"#, 1));
    fake.push(Script::reply("went on", 1));
    let done = run_turn(&mut c, "add during the gap", "gap").await;
    assert_eq!(done["status"], "ok", "the turn completes: {done}");
    assert_eq!(done["summary"], "went on");
    let reqs = fake.requests();
    let gap = tool_results(&reqs[reqs.len() - 1].body);
    assert!(
        gap[0].contains("mcp server 'calc' is unavailable"),
        "an error result during the gap: {gap:?}"
    );
    std::fs::remove_file(gw.home().join("mcp-down")).expect("unflag");
    eventually(
        Duration::from_secs(60),
        "mcp:calc running again",
        || async {
            let tree = gw.tree().await;
            let n = node(&tree, "mcp:calc")?;
            (n["state"] == "running" && n["restarts"].as_u64() >= Some(1)).then_some(())
        },
    )
    .await;
    wait_for_tools(&mut c).await;
    fake.push(Script::tool_call(
        "n1",
        "calc__add",
        r#"{"a":20,"b":22}"#,
        1,
    ));
    fake.push(Script::reply("back", 1));
    let done = run_turn(&mut c, "add again", "after").await;
    assert_eq!(done["status"], "ok", "{done}");
    let reqs = fake.requests();
    assert_eq!(tool_results(&reqs[reqs.len() - 1].body), ["sum=42"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_call_times_out_with_an_error_result() {
    let fake = FakeLlm::start();
    let gw = start(&fake, |home| calc_toml(home, 1));
    gw.wait_ready().await;
    let mut c = gw.client().await;
    wait_for_tools(&mut c).await;
    fake.push(Script::tool_call("h1", "calc__sleep", r#"{"ms":60000}"#, 1));
    fake.push(Script::reply("gave up waiting", 1));
    let done = run_turn(&mut c, "sleep a minute", "hang").await;
    assert_eq!(done["status"], "ok", "{done}");
    assert_eq!(done["summary"], "gave up waiting");
    let reqs = fake.requests();
    let results = tool_results(&reqs[1].body);
    assert!(
        results[0].contains("did not answer within 1 s"),
        "{results:?}"
    );
    // The server itself is fine: the next call answers.
    fake.push(Script::tool_call("h2", "calc__add", r#"{"a":1,"b":2}"#, 1));
    fake.push(Script::reply("ok", 1));
    let done = run_turn(&mut c, "add", "after-hang").await;
    assert_eq!(done["status"], "ok", "{done}");
    assert_eq!(tool_results(&fake.requests()[3].body), ["sum=3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_and_enable_over_rest_apply_live_without_dropping_a_client() {
    let fake = FakeLlm::start();
    let gw = start(&fake, |home| calc_toml(home, 30));
    gw.wait_ready().await;
    let mut c = gw.client().await;
    wait_for_tools(&mut c).await;
    let agent_before = node(&gw.tree().await, "agent:oa").cloned().expect("agent");

    let (code, body) = api(&gw, reqwest::Method::POST, "/api/mcps/calc/disable", None).await;
    assert_eq!(code, 200, "{body}");
    let file = std::fs::read_to_string(gw.home().join("config.toml")).expect("config");
    assert!(file.contains("enabled = false"), "{file}");
    assert!(
        file.contains("MCP_TEST_GREETING"),
        "the rest of the entry is kept: {file}"
    );
    eventually(WAIT, "mcp:calc gone from the tree", || async {
        node(&gw.tree().await, "mcp:calc").is_none().then_some(())
    })
    .await;
    assert!(mcp_tools(&mut c).await.is_empty());
    fake.push(Script::reply("no tools", 1));
    let done = run_turn(&mut c, "anything?", "disabled").await;
    assert_eq!(
        done["status"], "ok",
        "the same WS client still works: {done}"
    );
    let names = offered(&fake.requests()[0].body);
    assert!(!names.iter().any(|n| n.starts_with("calc__")), "{names:?}");
    let (_, list) = api(&gw, reqwest::Method::GET, "/api/mcps", None).await;
    assert_eq!(list["mcps"][0]["state"], "disabled", "{list}");

    let (code, body) = api(&gw, reqwest::Method::POST, "/api/mcps/calc/enable", None).await;
    assert_eq!(code, 200, "{body}");
    wait_for_tools(&mut c).await;
    let agent_after = node(&gw.tree().await, "agent:oa").cloned().expect("agent");
    assert_eq!(
        agent_before["startedAt"], agent_after["startedAt"],
        "the agent was not restarted"
    );
    let (code, _) = api(&gw, reqwest::Method::POST, "/api/mcps/nope/enable", None).await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_added_and_deleted_over_rest_persist_in_the_config_file() {
    let fake = FakeLlm::start();
    let gw = start(&fake, |_| "# my servers\n".to_string());
    gw.wait_ready().await;
    let mut c = gw.client().await;
    assert!(mcp_tools(&mut c).await.is_empty());
    let server = json!({
        "name": "calc",
        "command": server_bin().display().to_string(),
        "call_timeout_secs": 5,
        "env": { "MCP_TEST_GREETING": "secret-greeting" },
    });
    let (code, body) = api(
        &gw,
        reqwest::Method::POST,
        "/api/mcps",
        Some(server.clone()),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    wait_for_tools(&mut c).await;
    let file = std::fs::read_to_string(gw.home().join("config.toml")).expect("config");
    assert!(
        file.contains("# my servers") && file.contains("[[mcp]]"),
        "{file}"
    );
    let (code, body) = api(&gw, reqwest::Method::POST, "/api/mcps", Some(server)).await;
    assert_eq!(code, 409, "a taken name: {body}");
    let (code, body) = api(
        &gw,
        reqwest::Method::POST,
        "/api/mcps",
        Some(json!({ "name": "both", "command": "x", "url": "http://127.0.0.1:1/mcp" })),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.to_string().contains("mcp[1].command"), "{body}");
    let (code, body) = api(
        &gw,
        reqwest::Method::POST,
        "/api/mcps",
        Some(json!({ "name": "x", "command": "y", "colour": "blue" })),
    )
    .await;
    assert_eq!(code, 400, "unknown keys refused: {body}");
    let (code, body) = api(&gw, reqwest::Method::DELETE, "/api/mcps/calc", None).await;
    assert_eq!(code, 200, "{body}");
    eventually(WAIT, "mcp:calc removed", || async {
        node(&gw.tree().await, "mcp:calc").is_none().then_some(())
    })
    .await;
    let file = std::fs::read_to_string(gw.home().join("config.toml")).expect("config");
    assert!(!file.contains("[[mcp]]"), "{file}");
    let (code, _) = api(&gw, reqwest::Method::DELETE, "/api/mcps/calc", None).await;
    assert_eq!(code, 404);
}

/// Kills the HTTP test server when the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamable_http_server_offers_its_tools_and_answers_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port_file = dir.path().join("port");
    let _server = KillOnDrop(
        std::process::Command::new(server_bin())
            .arg("--http-port-file")
            .arg(&port_file)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the HTTP server"),
    );
    let port: u16 = eventually_sync(WAIT, "the HTTP server's port", || {
        std::fs::read_to_string(&port_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    let fake = FakeLlm::start();
    let gw = start(&fake, |_| {
        format!(
            "[[mcp]]\nname = \"calc\"\nurl = \"http://127.0.0.1:{port}/mcp\"\nheaders = {{ \"X-Test\" = \"1\" }}\n"
        )
    });
    gw.wait_ready().await;
    let mut c = gw.client().await;
    wait_for_tools(&mut c).await;
    fake.push(Script::tool_call("w1", "calc__add", r#"{"a":5,"b":6}"#, 1));
    fake.push(Script::reply("over http", 1));
    let done = run_turn(&mut c, "add over http", "http").await;
    assert_eq!(done["status"], "ok", "{done}");
    assert_eq!(tool_results(&fake.requests()[1].body), ["sum=11"]);
    let (_, list) = api(&gw, reqwest::Method::GET, "/api/mcps", None).await;
    assert_eq!(list["mcps"][0]["transport"], "http", "{list}");
}
