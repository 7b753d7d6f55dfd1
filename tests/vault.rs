//! The vault REST surface (docs/vault.md): notes with front matter and wikilinks, the graph,
//! full-text search kept current with edits made on disk, and paths that cannot leave
//! `agents/<id>/memory/`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::path::PathBuf;

use serde_json::{Value, json};
use support::*;

fn memory(gw: &TestGateway) -> PathBuf {
    gw.home().join("agents/main/memory")
}

async fn call(gw: &TestGateway, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client
        .request(method.parse().unwrap(), gw.http(path))
        .bearer_auth(&gw.token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Waits until `GET /api/vault/search?q=` finds exactly `expected` (any order).
async fn search_finds(gw: &TestGateway, q: &str, expected: &[&str]) {
    let mut want: Vec<String> = expected.iter().map(|p| p.to_string()).collect();
    want.sort();
    eventually(WAIT, &format!("search {q:?} finds {want:?}"), || async {
        let (_, found) = call(gw, "GET", &format!("/api/vault/search?q={q}"), None).await;
        let mut paths: Vec<String> = found["results"]
            .as_array()?
            .iter()
            .filter_map(|r| r["path"].as_str().map(String::from))
            .collect();
        paths.sort();
        (paths == want).then_some(())
    })
    .await
}

/// Sends the request line exactly as given (no client-side normalization of `..`).
fn raw(gw: &TestGateway, method: &str, target: &str, body: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        gw.port,
        gw.token,
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

#[tokio::test]
async fn notes_round_trip_with_links_graph_and_search() {
    let gw = TestGateway::builder().start();
    let (status, body) = call(
        &gw,
        "PUT",
        "/api/vault/notes/people/alice.md",
        Some(json!({ "content": "---\ntitle: Alice Liddell\ntags: [person]\n---\nAlice drinks oolong with [[Bob|her friend]] #tea\n" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        &gw,
        "PUT",
        "/api/vault/notes/bob.md",
        Some(json!({ "frontMatter": { "tags": ["person"] }, "body": "Bob met [[people/alice#Tea]] and [[Nobody]].\n" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, again) = call(
        &gw,
        "PUT",
        "/api/vault/notes/bob.md",
        Some(json!({ "frontMatter": { "tags": ["person"] }, "body": "Bob met [[people/alice#Tea]] and [[Nobody]].\n" })),
    )
    .await;
    assert_eq!(status, 200, "a replace is 200: {again}");

    let (status, alice) = call(&gw, "GET", "/api/vault/notes/people/alice.md", None).await;
    assert_eq!(status, 200, "{alice}");
    assert_eq!(alice["title"], "Alice Liddell");
    assert_eq!(alice["frontMatter"]["tags"], json!(["person"]));
    assert_eq!(alice["tags"], json!(["person", "tea"]));
    assert_eq!(alice["outgoing"][0]["path"], "bob.md");
    assert_eq!(alice["outgoing"][0]["alias"], "her friend");
    assert_eq!(
        alice["incoming"],
        json!([{ "path": "bob.md", "title": "bob" }])
    );

    let (status, list) = call(&gw, "GET", "/api/vault/notes", None).await;
    assert_eq!(status, 200, "{list}");
    let paths: Vec<&str> = list["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["bob.md", "people/alice.md"]);
    assert!(list["notes"][1]["size"].as_u64().unwrap() > 0);
    assert!(list["notes"][1]["modified"].as_u64().unwrap() > 0);

    let (_, graph) = call(&gw, "GET", "/api/vault/graph", None).await;
    let edges = graph["edges"].as_array().unwrap();
    assert!(edges.contains(&json!({ "source": "bob.md", "target": "people/alice.md" })));
    assert!(edges.contains(&json!({ "source": "people/alice.md", "target": "bob.md" })));
    assert!(
        graph["nodes"]
            .as_array()
            .unwrap()
            .contains(&json!({ "id": "nobody", "title": "nobody", "tags": [], "missing": true }))
    );

    let (status, found) = call(&gw, "GET", "/api/vault/search?q=oolong", None).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["results"][0]["path"], "people/alice.md");
    assert!(
        found["results"][0]["snippet"]
            .as_str()
            .unwrap()
            .contains("**oolong**")
    );

    let (status, _) = call(&gw, "DELETE", "/api/vault/notes/bob.md", None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&gw, "GET", "/api/vault/notes/bob.md", None).await;
    assert_eq!(status, 404);
    let (_, alice) = call(&gw, "GET", "/api/vault/notes/people/alice.md", None).await;
    assert_eq!(alice["incoming"], json!([]));
    let (status, _) = call(&gw, "GET", "/api/vault/notes?agent=ghost", None).await;
    assert_eq!(status, 404, "an unknown agent has no vault");
}

#[tokio::test]
async fn a_note_edited_on_disk_is_found_by_search() {
    let gw = TestGateway::builder().start();
    let (status, _) = call(
        &gw,
        "PUT",
        "/api/vault/notes/journal.md",
        Some(json!({ "content": "nothing special\n" })),
    )
    .await;
    assert_eq!(status, 201);
    let (_, found) = call(&gw, "GET", "/api/vault/search?q=zeppelin", None).await;
    assert_eq!(found["results"], json!([]));
    std::fs::write(
        memory(&gw).join("journal.md"),
        "Saw a zeppelin over the harbour, a big one\n",
    )
    .unwrap();
    std::fs::create_dir_all(memory(&gw).join("trips")).unwrap();
    std::fs::write(
        memory(&gw).join("trips/2024.md"),
        "# Trip\nzeppelin museum\n",
    )
    .unwrap();
    // The vault's watcher reindexes what changed on disk (debounced): wait for it.
    search_finds(&gw, "zeppelin", &["journal.md", "trips/2024.md"]).await;
    std::fs::remove_file(memory(&gw).join("journal.md")).unwrap();
    search_finds(&gw, "zeppelin", &["trips/2024.md"]).await;
    let (status, _) = call(&gw, "GET", "/api/vault/search?q=", None).await;
    assert_eq!(status, 400, "an empty query is refused");
}

#[tokio::test]
async fn notes_created_changed_renamed_and_deleted_outside_troupe_are_reflected_in_search() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let dir = memory(&gw);
    eventually(
        WAIT,
        "the agent's vault folder exists (watched)",
        || async { dir.is_dir().then_some(()) },
    )
    .await;
    // Created.
    std::fs::write(
        dir.join("ideas.md"),
        "# Ideas\nan airship made of quokkas\n",
    )
    .unwrap();
    search_finds(&gw, "quokkas", &["ideas.md"]).await;
    // Changed (in place, then by an editor's write-and-rename).
    std::fs::write(
        dir.join("ideas.md"),
        "# Ideas\nan airship made of wombats\n",
    )
    .unwrap();
    search_finds(&gw, "wombats", &["ideas.md"]).await;
    search_finds(&gw, "quokkas", &[]).await;
    std::fs::write(dir.join(".ideas.md.swp"), "# Ideas\nnumbats everywhere\n").unwrap();
    std::fs::rename(dir.join(".ideas.md.swp"), dir.join("ideas.md")).unwrap();
    search_finds(&gw, "numbats", &["ideas.md"]).await;
    // Renamed, into a new folder.
    std::fs::create_dir_all(dir.join("archive")).unwrap();
    std::fs::rename(dir.join("ideas.md"), dir.join("archive/old-ideas.md")).unwrap();
    search_finds(&gw, "numbats", &["archive/old-ideas.md"]).await;
    let (status, _) = call(&gw, "GET", "/api/vault/notes/ideas.md", None).await;
    assert_eq!(status, 404);
    // A whole folder moved.
    std::fs::rename(dir.join("archive"), dir.join("attic")).unwrap();
    search_finds(&gw, "numbats", &["attic/old-ideas.md"]).await;
    // Deleted.
    std::fs::remove_file(dir.join("attic/old-ideas.md")).unwrap();
    search_finds(&gw, "numbats", &[]).await;
    let (_, listed) = call(&gw, "GET", "/api/vault/notes", None).await;
    assert_eq!(listed["notes"], json!([]), "{listed}");
}

#[tokio::test]
async fn traversal_absolute_paths_and_symlinks_out_of_the_vault_are_refused() {
    let gw = TestGateway::builder().start();
    std::fs::create_dir_all(memory(&gw)).unwrap();
    let outside = gw.home().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.md"), "the secret password\n").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.md"), memory(&gw).join("leak.md")).unwrap();
    std::os::unix::fs::symlink(&outside, memory(&gw).join("elsewhere")).unwrap();

    for target in [
        "/api/vault/notes/../../config.md",
        "/api/vault/notes/%2e%2e/%2e%2e/outside/secret.md",
        "/api/vault/notes/..%2F..%2Foutside%2Fsecret.md",
        "/api/vault/notes/%2Fetc%2Fpasswd.md",
        "/api/vault/notes//etc/passwd.md",
    ] {
        let (status, response) = raw(&gw, "GET", target, "");
        assert!(
            status == 400 || status == 404,
            "{target}: expected a refusal, got {response}"
        );
        assert!(!response.contains("password"), "{target}: {response}");
        if status == 400 {
            assert!(response.contains("INVALID_PATH"), "{target}: {response}");
        }
    }
    // The encoded forms reach the handler as a path with `..` or `/` and are named as such.
    let (status, response) = raw(&gw, "GET", "/api/vault/notes/%2e%2e/outside/secret.md", "");
    assert_eq!(status, 400, "{response}");
    assert!(response.contains("contains .."), "{response}");
    let (status, response) = raw(&gw, "GET", "/api/vault/notes/%2Fetc%2Fpasswd.md", "");
    assert_eq!(status, 400, "{response}");
    assert!(response.contains("absolute"), "{response}");

    let (status, body) = call(&gw, "GET", "/api/vault/notes/leak.md", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("outside memory/"),
        "{body}"
    );
    let (status, body) = call(
        &gw,
        "PUT",
        "/api/vault/notes/elsewhere/planted.md",
        Some(json!({ "content": "x" })),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(!outside.join("planted.md").exists());
    let (status, body) = call(
        &gw,
        "PUT",
        "/api/vault/notes/notes.txt",
        Some(json!({ "content": "x" })),
    )
    .await;
    assert_eq!(status, 400, "only .md notes: {body}");
    let (_, found) = call(&gw, "GET", "/api/vault/search?q=password", None).await;
    assert_eq!(found["results"], json!([]), "search stays inside: {found}");
}

#[tokio::test]
async fn a_note_over_the_size_cap_is_refused_with_413() {
    let gw = TestGateway::builder().start();
    let big = "x".repeat(256 * 1024 + 1);
    let (status, body) = call(
        &gw,
        "PUT",
        "/api/vault/notes/big.md",
        Some(json!({ "content": big })),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 262144 bytes"),
        "{body}"
    );
    assert!(!memory(&gw).join("big.md").exists());
    let (status, body) = call(
        &gw,
        "PUT",
        "/api/vault/notes/broken.md",
        Some(json!({ "content": "---\ntitle: [unclosed\n---\n" })),
    )
    .await;
    assert_eq!(status, 400, "broken front matter: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("front matter"),
        "{body}"
    );
}
