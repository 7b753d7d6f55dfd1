//! The vault's search index: one SQLite file beside the vault (never inside it) holding each
//! note's metadata, its links and an FTS5 table. It is a cache of the files: a note written
//! through Troupe is indexed at once, and [`reconcile`] brings in edits made outside Troupe
//! by comparing each file's size and mtime with what was indexed. An index that cannot be
//! opened or has an older schema is deleted and rebuilt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::VaultError;
use super::note::{self, ParsedNote};

/// Bump when the schema changes: an older index is rebuilt from the files.
const SCHEMA_VERSION: &str = "1";
/// Notes indexed per write transaction while reconciling.
const BATCH: usize = 500;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notes(
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    stem TEXT NOT NULL,
    title TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    tags TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notes_stem ON notes(stem);
CREATE TABLE IF NOT EXISTS links(
    src INTEGER NOT NULL,
    target TEXT NOT NULL,
    stem TEXT NOT NULL,
    heading TEXT,
    alias TEXT,
    embed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS links_src ON links(src);
CREATE INDEX IF NOT EXISTS links_stem ON links(stem);
CREATE VIRTUAL TABLE IF NOT EXISTS notes_fts USING fts5(
    title, tags, body, tokenize = 'porter unicode61 remove_diacritics 2'
);
";

/// What the index knows of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Size in bytes.
    pub size: i64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
}

impl FileStamp {
    /// The stamp of a file's metadata.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        Self {
            size: meta.len() as i64,
            mtime_ns,
        }
    }
}

fn index_err(e: rusqlite::Error) -> VaultError {
    VaultError::Index(e.to_string())
}

/// Opens (creating or rebuilding) the index file.
pub fn open(path: &Path) -> Result<Connection, VaultError> {
    match try_open(path) {
        Ok(conn) => Ok(conn),
        Err(first) => {
            tracing::warn!(index = %path.display(), error = %first, "vault index unusable; rebuilding it");
            for suffix in ["", "-wal", "-shm"] {
                let mut p = path.as_os_str().to_owned();
                p.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(p));
            }
            try_open(path).map_err(index_err)
        }
    }
}

fn try_open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let version: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })
        .optional()
        .or_else(|e| match e {
            rusqlite::Error::SqliteFailure(_, Some(ref m)) if m.contains("no such table") => {
                Ok(None)
            }
            e => Err(e),
        })?;
    match version.as_deref() {
        Some(SCHEMA_VERSION) => {}
        Some(_) => {
            conn.execute_batch(
                "DROP TABLE IF EXISTS notes; DROP TABLE IF EXISTS links; DROP TABLE IF EXISTS notes_fts; DROP TABLE IF EXISTS meta;",
            )?;
            init(&conn)?;
        }
        None => init(&conn)?,
    }
    Ok(conn)
}

fn init(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    conn.execute(
        "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema', ?1)",
        [SCHEMA_VERSION],
    )?;
    Ok(())
}

/// Every `.md` note under the vault: regular files only (symlinks are not followed, hidden
/// files and folders skipped), keyed by their `/`-separated path.
pub fn scan(root: &Path) -> HashMap<String, FileStamp> {
    let mut found = HashMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let rel = format!("{prefix}{name}");
            if kind.is_dir() {
                stack.push((entry.path(), format!("{rel}/")));
            } else if kind.is_file()
                && name.ends_with(".md")
                && let Ok(meta) = entry.metadata()
            {
                found.insert(rel, FileStamp::of(&meta));
            }
        }
    }
    found
}

/// What one reconcile did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Notes (re)indexed.
    pub indexed: usize,
    /// Notes dropped from the index (their files are gone).
    pub removed: usize,
}

/// Brings the index in line with the files: new and changed notes are (re)indexed, notes
/// whose files are gone are dropped. Writes nothing when nothing changed.
pub fn reconcile(conn: &mut Connection, root: &Path) -> Result<Reconciled, VaultError> {
    let on_disk = scan(root);
    let mut known: HashMap<String, FileStamp> = HashMap::new();
    {
        let mut stmt = conn
            .prepare_cached("SELECT path, size, mtime_ns FROM notes")
            .map_err(index_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    FileStamp {
                        size: r.get(1)?,
                        mtime_ns: r.get(2)?,
                    },
                ))
            })
            .map_err(index_err)?;
        for row in rows {
            let (path, stamp) = row.map_err(index_err)?;
            known.insert(path, stamp);
        }
    }
    let gone: Vec<&String> = known.keys().filter(|p| !on_disk.contains_key(*p)).collect();
    let mut changed: Vec<(&String, &FileStamp)> = on_disk
        .iter()
        .filter(|(p, s)| known.get(*p) != Some(*s))
        .collect();
    changed.sort_by(|a, b| a.0.cmp(b.0));
    let done = Reconciled {
        indexed: changed.len(),
        removed: gone.len(),
    };
    if !gone.is_empty() {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(index_err)?;
        for path in gone {
            remove(&tx, path)?;
        }
        tx.commit().map_err(index_err)?;
    }
    for batch in changed.chunks(BATCH) {
        let notes: Vec<_> = batch
            .iter()
            .map(|(rel, stamp)| (rel.as_str(), **stamp, read_small(&root.join(rel), stamp)))
            .collect();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(index_err)?;
        for (rel, stamp, text) in notes {
            upsert(&tx, rel, stamp, &text)?;
        }
        tx.commit().map_err(index_err)?;
    }
    Ok(done)
}

/// The text of a note for indexing; a note over the size cap is indexed by name only.
pub(super) fn read_small(path: &Path, stamp: &FileStamp) -> String {
    if stamp.size as u64 > super::MAX_NOTE_BYTES {
        return String::new();
    }
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The file name without `.md`.
pub fn file_stem(rel: &str) -> &str {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.strip_suffix(".md").unwrap_or(name)
}

/// Indexes (or re-indexes) one note.
pub fn upsert(
    conn: &Connection,
    rel: &str,
    stamp: FileStamp,
    text: &str,
) -> Result<ParsedNote, VaultError> {
    let parsed = note::parse(text, file_stem(rel));
    let tags = serde_json::to_string(&parsed.tags).unwrap_or_else(|_| "[]".into());
    let stem = file_stem(rel).to_lowercase();
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO notes(path, stem, title, size, mtime_ns, tags) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(path) DO UPDATE SET stem = ?2, title = ?3, size = ?4, mtime_ns = ?5, tags = ?6
             RETURNING id",
        )
        .and_then(|mut s| {
            s.query_row(
                params![rel, stem, parsed.title, stamp.size, stamp.mtime_ns, tags],
                |r| r.get(0),
            )
        })
        .map_err(index_err)?;
    conn.prepare_cached("DELETE FROM notes_fts WHERE rowid = ?1")
        .and_then(|mut s| s.execute([id]))
        .map_err(index_err)?;
    conn.prepare_cached("INSERT INTO notes_fts(rowid, title, tags, body) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut s| {
            s.execute(params![
                id,
                parsed.title,
                parsed.tags.join(" "),
                &text[parsed.body_start..]
            ])
        })
        .map_err(index_err)?;
    conn.prepare_cached("DELETE FROM links WHERE src = ?1")
        .and_then(|mut s| s.execute([id]))
        .map_err(index_err)?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO links(src, target, stem, heading, alias, embed) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(index_err)?;
    for link in &parsed.links {
        let key = link.key();
        insert
            .execute(params![
                id,
                key,
                note::key_stem(&key),
                link.heading,
                link.alias,
                link.embed
            ])
            .map_err(index_err)?;
    }
    Ok(parsed)
}

/// Drops one note from the index.
pub fn remove(conn: &Connection, rel: &str) -> Result<(), VaultError> {
    let id: Option<i64> = conn
        .query_row("SELECT id FROM notes WHERE path = ?1", [rel], |r| r.get(0))
        .optional()
        .map_err(index_err)?;
    if let Some(id) = id {
        conn.execute("DELETE FROM notes_fts WHERE rowid = ?1", [id])
            .map_err(index_err)?;
        conn.execute("DELETE FROM links WHERE src = ?1", [id])
            .map_err(index_err)?;
        conn.execute("DELETE FROM notes WHERE id = ?1", [id])
            .map_err(index_err)?;
    }
    Ok(())
}

/// A note as listed.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NoteSummary {
    /// Path inside the vault (`people/alice.md`).
    pub path: String,
    /// Title.
    pub title: String,
    /// Size in bytes.
    pub size: i64,
    /// Last modification, milliseconds since the epoch.
    pub modified: i64,
    /// Tags.
    pub tags: Vec<String>,
}

/// Every indexed note, by path.
pub fn list(conn: &Connection) -> Result<Vec<NoteSummary>, VaultError> {
    let mut stmt = conn
        .prepare_cached("SELECT path, title, size, mtime_ns, tags FROM notes ORDER BY path")
        .map_err(index_err)?;
    let rows = stmt
        .query_map([], |r| {
            let tags: String = r.get(4)?;
            Ok(NoteSummary {
                path: r.get(0)?,
                title: r.get(1)?,
                size: r.get(2)?,
                modified: r.get::<_, i64>(3)? / 1_000_000,
                tags: serde_json::from_str(&tags).unwrap_or_default(),
            })
        })
        .map_err(index_err)?;
    rows.collect::<Result<_, _>>().map_err(index_err)
}

/// Every link: (source path, target key).
pub fn all_links(conn: &Connection) -> Result<Vec<(String, String)>, VaultError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT n.path, l.target FROM links l JOIN notes n ON n.id = l.src ORDER BY n.path",
        )
        .map_err(index_err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(index_err)?;
    rows.collect::<Result<_, _>>().map_err(index_err)
}

/// Paths of the notes whose file name (lower case, no `.md`) is `stem`.
pub fn notes_with_stem(conn: &Connection, stem: &str) -> Result<Vec<String>, VaultError> {
    let mut stmt = conn
        .prepare_cached("SELECT path FROM notes WHERE stem = ?1")
        .map_err(index_err)?;
    let rows = stmt.query_map([stem], |r| r.get(0)).map_err(index_err)?;
    rows.collect::<Result<_, _>>().map_err(index_err)
}

/// Links (source path, target key, title of the source) whose target ends in `stem`.
pub fn links_to_stem(
    conn: &Connection,
    stem: &str,
) -> Result<Vec<(String, String, String)>, VaultError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT DISTINCT n.path, l.target, n.title FROM links l JOIN notes n ON n.id = l.src
             WHERE l.stem = ?1 ORDER BY n.path",
        )
        .map_err(index_err)?;
    let rows = stmt
        .query_map([stem], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(index_err)?;
    rows.collect::<Result<_, _>>().map_err(index_err)
}

/// One search result.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchHit {
    /// Path inside the vault.
    pub path: String,
    /// Title.
    pub title: String,
    /// Relevance (higher is better; BM25, title weighted above tags above body).
    pub score: f64,
    /// The matching passage, matches wrapped in `**`.
    pub snippet: String,
}

/// Turns what a person typed into an FTS5 query: each word a quoted term (so `AND`, `-`,
/// `:` and quotes are text, not syntax), all required, the last one a prefix.
pub fn fts_query(q: &str) -> Option<String> {
    let words: Vec<String> = q
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
        .map(|w| format!("\"{}\"", w.replace('"', "")))
        .collect();
    let last = words.len().checked_sub(1)?;
    Some(
        words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if i == last {
                    format!("{w}*")
                } else {
                    w.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Full-text search, best first.
pub fn search(conn: &Connection, query: &str, limit: u32) -> Result<Vec<SearchHit>, VaultError> {
    let Some(fts) = fts_query(query) else {
        return Ok(Vec::new());
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT n.path, n.title, bm25(notes_fts, 5.0, 3.0, 1.0) AS rank,
                    snippet(notes_fts, 2, '**', '**', '…', 12)
             FROM notes_fts JOIN notes n ON n.id = notes_fts.rowid
             WHERE notes_fts MATCH ?1 ORDER BY rank LIMIT ?2",
        )
        .map_err(index_err)?;
    let rows = stmt
        .query_map(params![fts, limit], |r| {
            Ok(SearchHit {
                path: r.get(0)?,
                title: r.get(1)?,
                score: -r.get::<_, f64>(2)?,
                snippet: r.get(3)?,
            })
        })
        .map_err(index_err)?;
    rows.collect::<Result<_, _>>().map_err(index_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_queries_become_safe_fts_terms() {
        assert_eq!(
            fts_query("tea AND \"x").as_deref(),
            Some("\"tea\" \"AND\" \"x\"*")
        );
        assert_eq!(fts_query("  -:() ").as_deref(), None);
        assert_eq!(fts_query("alice's").as_deref(), Some("\"alice's\"*"));
    }
}
