//! Vault behaviour on a real temporary folder.

use super::*;

struct TempVault {
    base: PathBuf,
    vault: Vault,
}

impl TempVault {
    fn new() -> Self {
        let base = std::env::temp_dir().join(format!("troupe-vault-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(base.join("memory")).expect("memory dir");
        let vault = Vault::for_memory_dir(&base.join("memory"));
        Self { base, vault }
    }
}

impl Drop for TempVault {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

#[test]
fn notes_link_to_each_other_and_backlinks_are_found() {
    let t = TempVault::new();
    let v = &t.vault;
    v.write("people/alice.md", "---\ntags: [person]\n---\n# Alice\nWorks with [[Bob]] on [[Project X#plan|the project]].\n", WriteMode::Replace)
        .expect("alice");
    v.write(
        "bob.md",
        "Bob knows [[people/alice]].\n",
        WriteMode::Replace,
    )
    .expect("bob");
    let alice = v.read("people/alice.md").expect("read alice");
    assert_eq!(alice.title, "Alice");
    assert_eq!(alice.tags, vec!["person"]);
    assert_eq!(alice.outgoing[0].path.as_deref(), Some("bob.md"));
    assert_eq!(alice.outgoing[1].path, None, "Project X does not exist");
    assert_eq!(alice.outgoing[1].alias.as_deref(), Some("the project"));
    assert_eq!(alice.incoming.len(), 1);
    assert_eq!(alice.incoming[0].path, "bob.md");
    let graph = v.graph().expect("graph");
    assert_eq!(graph.nodes.len(), 3, "{graph:?}");
    assert!(graph.nodes.iter().any(|n| n.id == "project x" && n.missing));
    assert!(graph.edges.contains(&GraphEdge {
        source: "bob.md".into(),
        target: "people/alice.md".into()
    }));
    let hits = v.search("works project", 10).expect("search");
    assert_eq!(hits[0].path, "people/alice.md");
    v.delete("bob.md").expect("delete");
    assert!(v.read("people/alice.md").expect("read").incoming.is_empty());
    assert!(matches!(v.delete("bob.md"), Err(VaultError::NotFound(_))));
}

#[test]
fn edits_made_outside_are_indexed_before_a_search() {
    let t = TempVault::new();
    let v = &t.vault;
    v.write("a.md", "apples\n", WriteMode::Replace).expect("a");
    assert_eq!(v.search("apples", 10).expect("search").len(), 1);
    std::fs::write(v.root().join("a.md"), "bananas only now\n").expect("edit");
    std::fs::create_dir_all(v.root().join("sub")).expect("sub");
    std::fs::write(v.root().join("sub/b.md"), "more bananas\n").expect("new");
    let hits = v.search("bananas", 10).expect("search");
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(v.search("apples", 10).expect("search").is_empty());
    std::fs::remove_file(v.root().join("a.md")).expect("remove");
    assert_eq!(v.list().expect("list").len(), 1);
}

#[test]
fn symlinks_out_of_the_vault_and_oversized_notes_are_refused() {
    let t = TempVault::new();
    let outside = t.base.join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    std::fs::write(outside.join("secret.md"), "the secret password\n").expect("secret");
    std::os::unix::fs::symlink(outside.join("secret.md"), t.vault.root().join("leak.md"))
        .expect("symlink");
    let err = t.vault.read("leak.md").expect_err("leak");
    assert!(matches!(err, VaultError::InvalidPath(_)), "{err}");
    assert!(t.vault.search("password", 10).expect("search").is_empty());
    let big = "x".repeat(MAX_NOTE_BYTES as usize + 1);
    assert!(matches!(
        t.vault.write("big.md", &big, WriteMode::Replace),
        Err(VaultError::TooLarge(_))
    ));
    assert!(matches!(
        t.vault
            .write("bad.md", "---\nx: [\n---\n", WriteMode::Replace),
        Err(VaultError::InvalidNote(_))
    ));
}

/// Polls `cond` (up to a generous minute on a loaded machine) without asserting on time.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn found(v: &Vault, q: &str) -> Vec<String> {
    let mut paths: Vec<String> = v
        .search(q, 10)
        .expect("search")
        .into_iter()
        .map(|h| h.path)
        .collect();
    paths.sort();
    paths
}

#[test]
fn a_watched_vault_reindexes_outside_edits_without_walking_and_unwatches_on_drop() {
    let t = TempVault::new();
    let v = &t.vault;
    std::fs::write(t.base.join("memory/before.md"), "present at start: okapi\n").expect("write");
    assert!(!watch::is_current(v.root()), "no watch: reads walk");
    let w = watch::start(v).expect("watch");
    eventually("the first reconcile is done", || {
        watch::is_current(v.root())
    });
    assert_eq!(found(v, "okapi"), ["before.md"]);
    std::fs::write(t.base.join("memory/new.md"), "a narwhal\n").expect("write");
    eventually("the new note is found", || {
        found(v, "narwhal") == ["new.md"]
    });
    std::fs::rename(t.base.join("memory/new.md"), t.base.join("memory/moved.md")).expect("mv");
    eventually("the rename is seen", || found(v, "narwhal") == ["moved.md"]);
    std::fs::remove_file(t.base.join("memory/moved.md")).expect("rm");
    eventually("the removal is seen", || found(v, "narwhal").is_empty());
    // Nothing asked for a walk: the note changes came through the watcher alone.
    assert!(watch::is_current(v.root()), "the watch stayed current");
    drop(w);
    assert!(
        !watch::is_current(v.root()),
        "an unwatched vault walks again"
    );
    std::fs::write(t.base.join("memory/late.md"), "an axolotl\n").expect("write");
    assert_eq!(found(v, "axolotl"), ["late.md"], "walking finds it at once");
}
