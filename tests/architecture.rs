//! The layering DESIGN.md §3 promises, checked on the sources: the core crate
//! (`troupe-actors`) has no HTTP or WebSocket dependency and produces no OpenClaw frames;
//! nothing outside the store names SQL connection types.

use std::path::Path;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn core_crate_depends_on_no_http_server_or_websocket_transport() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = read(&root.join("actors/Cargo.toml"));
    for dep in ["actix-web", "actix-ws", "actix-web-actors"] {
        assert!(
            !manifest.lines().any(|l| l.trim_start().starts_with(dep)),
            "actors/Cargo.toml depends on {dep}; the protocol belongs to the edge (src/gateway/)"
        );
    }
}

#[test]
fn openclaw_frames_are_built_only_at_the_edge() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("actors/src"), &mut files);
    for file in files {
        let text = read(&file);
        for needle in [
            "\"type\": \"res\"",
            "\"type\": \"event\"",
            "ResponseFrame",
            "EventFrame",
        ] {
            assert!(
                !text.contains(needle),
                "{} contains {needle}: OpenClaw frames are made in src/gateway/ws/",
                file.display()
            );
        }
    }
}

#[test]
fn no_edge_file_names_sql_connection_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    for file in files {
        let text = read(&file);
        for needle in ["sqlx", "SqlitePool", "rusqlite"] {
            assert!(
                !text.contains(needle),
                "{} names {needle}: callers reach the store through its typed operations",
                file.display()
            );
        }
    }
}
