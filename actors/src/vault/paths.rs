//! Where a note may live: a relative `.md` path inside the vault, never through `..`, an
//! absolute path, a hidden folder (`.obsidian/`) or a symlink that leads outside.

use std::path::{Component, Path, PathBuf};

use super::VaultError;

/// Checks a note path lexically (relative, no `..`, no hidden parts, ending in `.md`) and
/// returns it normalized (`a//./b.md` is `a/b.md`), the form the index keys notes by.
pub fn check_note_path(rel: &str) -> Result<String, VaultError> {
    let bad = |why: &str| VaultError::InvalidPath(format!("note path {rel:?} {why}"));
    if rel.is_empty() {
        return Err(bad("is empty"));
    }
    if rel.contains('\0') || rel.contains('\\') {
        return Err(bad("contains a NUL or backslash"));
    }
    let path = Path::new(rel);
    if path.is_absolute() {
        return Err(bad(
            "is absolute; note paths are relative to memory/ (the vault)",
        ));
    }
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) if name.to_string_lossy().starts_with('.') => {
                return Err(bad(
                    "names a hidden file or folder (like .obsidian/); those are not notes",
                ));
            }
            Component::Normal(name) => parts.push(name.to_string_lossy().into_owned()),
            Component::ParentDir => {
                return Err(bad(
                    "contains ..; it must be relative, inside memory/ (the vault)",
                ));
            }
            _ => {
                return Err(bad(
                    "must be relative, inside memory/ (the vault), without . or ..",
                ));
            }
        }
    }
    let normalized = parts.join("/");
    let stem_empty = parts.last().is_none_or(|name| name == ".md");
    if !normalized.ends_with(".md") || stem_empty {
        return Err(bad(
            "is not a markdown note; only .md notes live in the vault",
        ));
    }
    Ok(normalized)
}

/// Resolves a note path to where it really is, following symlinks, and refuses it unless it
/// stays inside the vault. The part of the path that does not exist yet (a note about to be
/// written) is appended to the resolved part, so it cannot pass through a symlink either.
pub fn resolve_note(root: &Path, rel: &str) -> Result<PathBuf, VaultError> {
    let lexical = root.join(check_note_path(rel)?);
    let real_root = std::fs::canonicalize(root).map_err(|e| {
        VaultError::Unavailable(format!(
            "memory directory {} is unavailable: {e}",
            root.display()
        ))
    })?;
    let mut existing = lexical.as_path();
    let mut missing = Vec::new();
    while std::fs::symlink_metadata(existing).is_err() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) if existing != root => {
                missing.push(name.to_owned());
                existing = parent;
            }
            _ => break,
        }
    }
    let real = std::fs::canonicalize(existing).map_err(|e| {
        VaultError::InvalidPath(format!("path {rel:?} cannot be resolved ({e}); refused"))
    })?;
    if !real.starts_with(&real_root) {
        return Err(VaultError::InvalidPath(format!(
            "path {rel:?} leads outside memory/ (the vault) through a symlink; refused"
        )));
    }
    Ok(missing.iter().rev().fold(real, |p, name| p.join(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_relative_markdown_paths_inside_the_vault_pass() {
        for ok in ["a.md", "people/alice.md", "Daily Notes/2024-01-01.md"] {
            assert_eq!(check_note_path(ok).ok().as_deref(), Some(ok));
        }
        assert_eq!(check_note_path("a//./b.md").ok().as_deref(), Some("a/b.md"));
        for bad in [
            "",
            "../x.md",
            "a/../../x.md",
            "/etc/passwd.md",
            "./a.md",
            "a.txt",
            ".obsidian/app.md",
            "a/.md",
            "a\\b.md",
        ] {
            assert!(check_note_path(bad).is_err(), "{bad}");
        }
    }
}
