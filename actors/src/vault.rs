//! An agent's `memory/` as an Obsidian-compatible vault: markdown notes with YAML front
//! matter and `[[wikilinks]]`, confined to the folder, capped in size, searchable through
//! an FTS5 index kept beside the vault. The REST routes (`/api/vault/*`) and the memory
//! tools both go through [`Vault`]. Every operation does blocking file and SQLite I/O: call
//! it from `spawn_blocking` / `web::block`, never on an actor's arbiter.
//!
//! - [`paths`]: which paths are notes and the symlink-safe resolution;
//! - [`note`]: front matter, title, tags and wikilinks of one note (pure);
//! - [`index`]: the SQLite index and its reconciliation with the files;
//! - [`watch`]: a directory watcher per vault that keeps the index current with edits
//!   made outside Troupe, so reads do not walk the folder.

pub mod index;
pub mod note;
pub mod paths;
pub mod watch;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

pub use index::{NoteSummary, SearchHit};
use note::{WikiLink, key_stem, link_key};

/// The largest note, in bytes: reads, writes and appends past it are refused.
pub const MAX_NOTE_BYTES: u64 = 256 * 1024;
/// The name of the index file, in the folder that holds `memory/`.
pub const INDEX_FILE: &str = ".vault-index.sqlite";

/// Why a vault operation failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The path is not a note path inside the vault (400).
    #[error("{0}")]
    InvalidPath(String),
    /// The note's content is not acceptable, e.g. broken front matter (400).
    #[error("{0}")]
    InvalidNote(String),
    /// No such note (404).
    #[error("note {0:?} does not exist")]
    NotFound(String),
    /// The note would pass the size cap (413).
    #[error("{0}")]
    TooLarge(String),
    /// The vault folder cannot be used (503).
    #[error("{0}")]
    Unavailable(String),
    /// Reading or writing a file failed (500).
    #[error("{0}")]
    Io(String),
    /// The search index failed (500).
    #[error("vault index: {0}")]
    Index(String),
}

/// How a write treats an existing note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Replace it (atomically: readers see the old or the new note, never half).
    Replace,
    /// Add to its end.
    Append,
}

/// What a write did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Written {
    /// The note's normalized path.
    pub path: String,
    /// Whether the note did not exist before.
    pub created: bool,
    /// Its size now.
    pub size: u64,
}

/// A link as shown to clients: where it points and whether that note exists.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkView {
    /// The target as written.
    pub target: String,
    /// The note it resolves to (`None`: no such note yet, or an attachment).
    pub path: Option<String>,
    /// Heading or block after `#`.
    pub heading: Option<String>,
    /// Display text after `|`.
    pub alias: Option<String>,
    /// Whether it is an embed (`![[...]]`).
    pub embed: bool,
}

/// A note that links here.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backlink {
    /// Its path.
    pub path: String,
    /// Its title.
    pub title: String,
}

/// One note with everything `GET /api/vault/notes/{path}` shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NoteView {
    /// Path inside the vault.
    pub path: String,
    /// Title.
    pub title: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, milliseconds since the epoch.
    pub modified: i64,
    /// Tags.
    pub tags: Vec<String>,
    /// Front matter as JSON (`null`: none).
    pub front_matter: Value,
    /// Why the front matter could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub front_matter_error: Option<String>,
    /// The whole file.
    pub content: String,
    /// The text after the front matter.
    pub body: String,
    /// Links from this note.
    pub outgoing: Vec<LinkView>,
    /// Notes that link to this one.
    pub incoming: Vec<Backlink>,
}

/// A node of the link graph.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphNode {
    /// The note's path, or for a link to a note that does not exist, the link target.
    pub id: String,
    /// Title (the target for a missing note).
    pub title: String,
    /// Tags.
    pub tags: Vec<String>,
    /// True when no note exists there yet (a dangling link).
    pub missing: bool,
}

/// An edge of the link graph (one per linked pair, whatever the count of links).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct GraphEdge {
    /// Linking note.
    pub source: String,
    /// Linked note (a node id).
    pub target: String,
}

/// The vault's link graph.
#[derive(Debug, Clone, Serialize)]
pub struct Graph {
    /// Notes, then missing link targets.
    pub nodes: Vec<GraphNode>,
    /// Links between them.
    pub edges: Vec<GraphEdge>,
}

/// One agent's vault: the folder and its index file.
#[derive(Debug, Clone)]
pub struct Vault {
    root: PathBuf,
    index: PathBuf,
}

/// Picks the note a link key names among candidates (paths): the exact path first, else
/// the shortest path ending in `/<key>.md` (ties: alphabetical), as Obsidian does.
fn resolve_among<'a>(
    key: &str,
    candidates: impl Iterator<Item = &'a String>,
) -> Option<&'a String> {
    let suffix = format!("/{key}");
    let mut best: Option<&String> = None;
    for path in candidates {
        let k = link_key(path);
        if k == key {
            return Some(path);
        }
        if k.ends_with(&suffix)
            && best.is_none_or(|b| (path.len(), path.as_str()) < (b.len(), b.as_str()))
        {
            best = Some(path);
        }
    }
    best
}

/// A write transaction that takes the lock at once (waiting its turn behind others).
fn immediate(conn: &mut rusqlite::Connection) -> Result<rusqlite::Transaction<'_>, VaultError> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| VaultError::Index(e.to_string()))
}

impl Vault {
    /// A vault at `root` indexed into `index`.
    pub fn new(root: impl Into<PathBuf>, index: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            index: index.into(),
        }
    }

    /// The vault of an agent's `memory/` folder, indexed into [`INDEX_FILE`] beside it.
    pub fn for_memory_dir(dir: &Path) -> Self {
        let index = match dir.parent() {
            Some(parent) => parent.join(INDEX_FILE),
            None => dir.with_extension("vault-index.sqlite"),
        };
        Self::new(dir, index)
    }

    /// The vault folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn connection(&self) -> Result<rusqlite::Connection, VaultError> {
        if let Some(parent) = self.index.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                VaultError::Unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        index::open(&self.index)
    }

    /// The index, reconciled with the files (an absent vault is an empty one). A vault
    /// kept current by a live [`watch`] is not walked.
    fn current_index(&self) -> Result<rusqlite::Connection, VaultError> {
        let mut conn = self.connection()?;
        if !watch::is_current(&self.root) {
            let token = watch::reconcile_token(&self.root);
            index::reconcile(&mut conn, &self.root)?;
            watch::reconciled(&self.root, token);
        }
        Ok(conn)
    }

    /// Walks the whole folder and brings the index in line with the files.
    pub fn reconcile(&self) -> Result<index::Reconciled, VaultError> {
        let mut conn = self.connection()?;
        index::reconcile(&mut conn, &self.root)
    }

    /// A note's text (symlinks inside the vault are followed; out of it, refused).
    pub fn read_text(&self, rel: &str) -> Result<(String, std::fs::Metadata), VaultError> {
        use std::io::Read;
        if !self.root.exists() {
            paths::check_note_path(rel)?;
            return Err(VaultError::NotFound(rel.into()));
        }
        let path = paths::resolve_note(&self.root, rel)?;
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VaultError::NotFound(rel.into()));
            }
            Err(e) => return Err(VaultError::Io(format!("cannot read {rel}: {e}"))),
        };
        if !meta.is_file() {
            return Err(VaultError::InvalidPath(format!(
                "cannot read {rel}: not a regular file"
            )));
        }
        if meta.len() > MAX_NOTE_BYTES {
            return Err(VaultError::TooLarge(format!(
                "note {rel} is {} bytes; notes are read up to at most {MAX_NOTE_BYTES} bytes",
                meta.len()
            )));
        }
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_NOTE_BYTES).read_to_end(&mut bytes))
            .map_err(|e| VaultError::Io(format!("cannot read {rel}: {e}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| VaultError::InvalidNote(format!("note {rel} is not UTF-8 text")))?;
        Ok((text, meta))
    }

    /// A note with its front matter and its outgoing and incoming links.
    pub fn read(&self, rel: &str) -> Result<NoteView, VaultError> {
        let normalized = paths::check_note_path(rel)?;
        let (content, meta) = self.read_text(&normalized)?;
        let stem = index::file_stem(&normalized);
        let parsed = note::parse(&content, stem);
        let conn = self.current_index()?;
        let outgoing = parsed
            .links
            .iter()
            .map(|l| self.link_view(&conn, l))
            .collect::<Result<_, _>>()?;
        let mut incoming = Vec::new();
        let mut candidates: HashMap<String, Vec<String>> = HashMap::new();
        for (src, target, title) in index::links_to_stem(&conn, &stem.to_lowercase())? {
            let among = match candidates.get(key_stem(&target)) {
                Some(c) => c,
                None => candidates
                    .entry(key_stem(&target).to_string())
                    .or_insert(index::notes_with_stem(&conn, key_stem(&target))?),
            };
            if resolve_among(&target, among.iter()) == Some(&normalized)
                && !incoming.iter().any(|b: &Backlink| b.path == src)
            {
                incoming.push(Backlink { path: src, title });
            }
        }
        Ok(NoteView {
            path: normalized,
            title: parsed.title,
            size: meta.len(),
            modified: index::FileStamp::of(&meta).mtime_ns / 1_000_000,
            tags: parsed.tags,
            front_matter: parsed.front_matter,
            front_matter_error: parsed.front_matter_error,
            body: content[parsed.body_start..].to_string(),
            content,
            outgoing,
            incoming,
        })
    }

    fn link_view(
        &self,
        conn: &rusqlite::Connection,
        link: &WikiLink,
    ) -> Result<LinkView, VaultError> {
        let key = link.key();
        let path = if note::is_attachment(&link.target) {
            None
        } else {
            let candidates = index::notes_with_stem(conn, key_stem(&key))?;
            resolve_among(&key, candidates.iter()).cloned()
        };
        Ok(LinkView {
            target: link.target.clone(),
            path,
            heading: link.heading.clone(),
            alias: link.alias.clone(),
            embed: link.embed,
        })
    }

    /// Writes a note (creating folders), then indexes it. The content, or the note after
    /// an append, must fit [`MAX_NOTE_BYTES`]; front matter, if any, must be valid YAML.
    pub fn write(&self, rel: &str, content: &str, mode: WriteMode) -> Result<Written, VaultError> {
        let normalized = paths::check_note_path(rel)?;
        if content.len() as u64 > MAX_NOTE_BYTES {
            return Err(VaultError::TooLarge(format!(
                "content is {} bytes; a note may hold at most {MAX_NOTE_BYTES} bytes",
                content.len()
            )));
        }
        std::fs::create_dir_all(&self.root).map_err(|e| {
            VaultError::Unavailable(format!(
                "cannot create memory directory {}: {e}",
                self.root.display()
            ))
        })?;
        let path = paths::resolve_note(&self.root, &normalized)?;
        let existing = std::fs::metadata(&path).ok();
        if let Some(meta) = &existing {
            if !meta.is_file() {
                return Err(VaultError::InvalidPath(format!(
                    "cannot write {normalized}: not a regular file"
                )));
            }
            if mode == WriteMode::Append && meta.len() + content.len() as u64 > MAX_NOTE_BYTES {
                return Err(VaultError::TooLarge(format!(
                    "appending {} bytes to {normalized} ({} bytes) would pass the {MAX_NOTE_BYTES}-byte limit of a note",
                    content.len(),
                    meta.len()
                )));
            }
        }
        if mode == WriteMode::Replace || existing.is_none() {
            note::validate(content).map_err(VaultError::InvalidNote)?;
        }
        let io = |e: std::io::Error| VaultError::Io(format!("cannot write {normalized}: {e}"));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        match mode {
            WriteMode::Append => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(content.as_bytes()))
                .map_err(io)?,
            WriteMode::Replace => {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let tmp = path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4()));
                let written =
                    std::fs::write(&tmp, content).and_then(|()| std::fs::rename(&tmp, &path));
                if written.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                written.map_err(io)?;
            }
        }
        let meta = std::fs::metadata(&path).map_err(io)?;
        let text = match mode {
            WriteMode::Replace => content.to_string(),
            WriteMode::Append => std::fs::read_to_string(&path).map_err(io)?,
        };
        let mut conn = self.connection()?;
        let tx = immediate(&mut conn)?;
        index::upsert(&tx, &normalized, index::FileStamp::of(&meta), &text)?;
        tx.commit().map_err(|e| VaultError::Index(e.to_string()))?;
        Ok(Written {
            path: normalized,
            created: existing.is_none(),
            size: meta.len(),
        })
    }

    /// Deletes a note and drops it from the index.
    pub fn delete(&self, rel: &str) -> Result<(), VaultError> {
        let normalized = paths::check_note_path(rel)?;
        let path = paths::resolve_note(&self.root, &normalized).map_err(|e| match e {
            VaultError::Unavailable(_) => VaultError::NotFound(normalized.clone()),
            e => e,
        })?;
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => {
                return Err(VaultError::InvalidPath(format!(
                    "cannot delete {normalized}: not a regular file"
                )));
            }
            Err(_) => return Err(VaultError::NotFound(normalized)),
        }
        std::fs::remove_file(&path)
            .map_err(|e| VaultError::Io(format!("cannot delete {normalized}: {e}")))?;
        let mut conn = self.connection()?;
        let tx = immediate(&mut conn)?;
        index::remove(&tx, &normalized)?;
        tx.commit().map_err(|e| VaultError::Index(e.to_string()))
    }

    /// Every note, by path.
    pub fn list(&self) -> Result<Vec<NoteSummary>, VaultError> {
        index::list(&self.current_index()?)
    }

    /// Notes and the links between them; links to notes that do not exist yet become
    /// `missing` nodes; links to attachments are left out.
    pub fn graph(&self) -> Result<Graph, VaultError> {
        let conn = self.current_index()?;
        let notes = index::list(&conn)?;
        let mut by_stem: HashMap<String, Vec<String>> = HashMap::new();
        for n in &notes {
            by_stem
                .entry(index::file_stem(&n.path).to_lowercase())
                .or_default()
                .push(n.path.clone());
        }
        let mut edges = BTreeSet::new();
        let mut missing = BTreeSet::new();
        for (src, key) in index::all_links(&conn)? {
            if note::is_attachment(&key) {
                continue;
            }
            let target = by_stem
                .get(key_stem(&key))
                .and_then(|c| resolve_among(&key, c.iter()))
                .cloned();
            let target = match target {
                Some(path) => path,
                None => {
                    missing.insert(key.clone());
                    key
                }
            };
            edges.insert(GraphEdge {
                source: src,
                target,
            });
        }
        let mut nodes: Vec<GraphNode> = notes
            .into_iter()
            .map(|n| GraphNode {
                id: n.path,
                title: n.title,
                tags: n.tags,
                missing: false,
            })
            .collect();
        nodes.extend(missing.into_iter().map(|key| GraphNode {
            title: key.clone(),
            id: key,
            tags: Vec::new(),
            missing: true,
        }));
        Ok(Graph {
            nodes,
            edges: edges.into_iter().collect(),
        })
    }

    /// Full-text search over titles, tags and bodies, best first; edits made outside
    /// Troupe are seen (through the vault's watch, or by walking when none runs).
    pub fn search(&self, query: &str, limit: u32) -> Result<Vec<SearchHit>, VaultError> {
        index::search(&self.current_index()?, query, limit)
    }
}

#[cfg(test)]
mod tests;
