//! Strict types for configuration values. The `config` crate coerces freely (`"yes"`,
//! `"on"` and `1` become `true`; `1.5` becomes `2`; `true` becomes `1`); here every merged
//! value is checked against the kind of its embedded default before deserializing, so a
//! boolean must be `true`/`false` and a number must be a number. Environment values are
//! strings, parsed by the `config` crate into `true`/`false`/integers/floats first, so
//! `TROUPE__DEBUG__FAULT_INJECTION=true` still works while `=yes` or `=1` is refused.
//!
//! Durations are bounded too, so that no deadline computed from them can overflow:
//! keys ending in `_ms` may be at most a day, keys ending in `_secs` at most a year.

use std::path::Path;

use config::{Map, Value, ValueKind};

use super::ConfigError;

/// The largest value of a `*_ms` key: one day.
pub const MAX_MS: u64 = 24 * 60 * 60 * 1000;
/// The largest value of a `*_secs` key: one year.
pub const MAX_SECS: u64 = 366 * 24 * 60 * 60;

/// The kinds a key inside an array of tables (`[[agents]]`, `[[pricing]]`) must have.
const ARRAY_FIELDS: &[(&str, &[(&str, Kind)])] = &[
    (
        "agents",
        &[
            ("temperature", Kind::Float),
            ("max_tokens", Kind::Integer),
            ("max_iterations", Kind::Integer),
        ],
    ),
    (
        "mcp",
        &[
            ("enabled", Kind::Boolean),
            ("call_timeout_secs", Kind::Integer),
        ],
    ),
    (
        "pricing",
        &[
            ("input_per_mtok", Kind::Float),
            ("output_per_mtok", Kind::Float),
        ],
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Boolean,
    Integer,
    Float,
    Other,
}

fn kind_of(value: &ValueKind) -> Kind {
    match value {
        ValueKind::Boolean(_) => Kind::Boolean,
        ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_) => {
            Kind::Integer
        }
        ValueKind::Float(_) => Kind::Float,
        _ => Kind::Other,
    }
}

fn describe(value: &ValueKind) -> String {
    match value {
        ValueKind::Nil => "nothing".into(),
        ValueKind::Boolean(b) => format!("the boolean {b}"),
        ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_) => {
            format!("the integer {value}")
        }
        ValueKind::Float(f) => format!("the number {f}"),
        ValueKind::String(s) => format!("the string {s:?}"),
        ValueKind::Table(_) => "a table".into(),
        ValueKind::Array(_) => "an array".into(),
    }
}

fn integer(value: &ValueKind) -> Option<i128> {
    match value {
        ValueKind::I64(n) => Some(i128::from(*n)),
        ValueKind::I128(n) => Some(*n),
        ValueKind::U64(n) => Some(i128::from(*n)),
        ValueKind::U128(n) => i128::try_from(*n).ok(),
        _ => None,
    }
}

/// Checks one value against the kind it must have; pushes an error naming `key`.
fn check_value(key: &str, want: Kind, got: &ValueKind, errors: &mut Vec<ConfigError>) {
    let bad = |why: String| ConfigError {
        key: key.to_string(),
        why,
    };
    match (want, kind_of(got)) {
        (Kind::Boolean, Kind::Boolean) | (Kind::Float, Kind::Float | Kind::Integer) => {}
        (Kind::Boolean, _) => {
            errors.push(bad(format!("must be true or false, got {}", describe(got))))
        }
        (Kind::Integer, Kind::Integer) => {
            let limit = if key.ends_with("_ms") {
                Some((MAX_MS, "milliseconds (one day)"))
            } else if key.ends_with("_secs") {
                Some((MAX_SECS, "seconds (one year)"))
            } else {
                None
            };
            if let (Some((max, unit)), Some(n)) = (limit, integer(got))
                && n > i128::from(max)
            {
                errors.push(bad(format!("{n} is too large: at most {max} {unit}")));
            }
        }
        (Kind::Integer, Kind::Float) if matches!(got, ValueKind::Float(f) if f.fract() == 0.0) => {
            errors.push(bad(format!("{got} is too large for a whole number")))
        }
        (Kind::Integer, _) => errors.push(bad(format!(
            "must be a whole number, got {}",
            describe(got)
        ))),
        (Kind::Float, _) => errors.push(bad(format!("must be a number, got {}", describe(got)))),
        (Kind::Other, _) => {}
    }
}

/// Checks every merged value whose default is a boolean or a number (and the numeric
/// fields of `[[agents]]` and `[[pricing]]`) for its kind and range.
pub fn check(defaults: &Map<String, Value>, merged: &Map<String, Value>) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    check_table("", defaults, merged, &mut errors);
    for (array, fields) in ARRAY_FIELDS {
        let Some(ValueKind::Array(items)) = merged.get(*array).map(|v| &v.kind) else {
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let ValueKind::Table(table) = &item.kind else {
                continue;
            };
            for (field, want) in *fields {
                if let Some(value) = table.get(*field) {
                    check_value(
                        &format!("{array}[{i}].{field}"),
                        *want,
                        &value.kind,
                        &mut errors,
                    );
                }
            }
        }
    }
    errors
}

fn check_table(
    prefix: &str,
    defaults: &Map<String, Value>,
    merged: &Map<String, Value>,
    errors: &mut Vec<ConfigError>,
) {
    let mut keys: Vec<&String> = defaults.keys().collect();
    keys.sort();
    for name in keys {
        let (Some(default), Some(value)) = (defaults.get(name), merged.get(name)) else {
            continue;
        };
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match (&default.kind, &value.kind) {
            (ValueKind::Table(d), ValueKind::Table(m)) => check_table(&key, d, m, errors),
            (d, m) => check_value(&key, kind_of(d), m, errors),
        }
    }
}

/// Parses a config file as TOML on its own so that a syntax error (such as a number too
/// large for any integer) names the key on the offending line, not just the file.
pub fn check_file_syntax(path: &Path) -> Result<(), ConfigError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    check_text_syntax(&text, &path.display().to_string())
}

/// Refuses a key holding `[` or `]` (such as `"z[99999999999]" = 0`): the `config` crate
/// reads a key as a path and would grow a list to that index, panicking or exhausting
/// memory (found by the `config` fuzz target). Keys are names, never paths.
fn check_key_names(table: &toml::Table, prefix: &str) -> Result<(), ConfigError> {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if name.contains(['[', ']']) {
            return Err(ConfigError {
                key,
                why: "a key cannot contain '[' or ']': keys are names, not paths".into(),
            });
        }
        let tables: Vec<&toml::Table> = match value {
            toml::Value::Table(t) => vec![t],
            toml::Value::Array(items) => items.iter().filter_map(|v| v.as_table()).collect(),
            _ => Vec::new(),
        };
        for (i, inner) in tables.into_iter().enumerate() {
            let inner_key = if value.is_array() {
                format!("{key}[{i}]")
            } else {
                key.clone()
            };
            check_key_names(inner, &inner_key)?;
        }
    }
    Ok(())
}

/// [`check_file_syntax`] on text already read; `origin` names it in the error.
pub fn check_text_syntax(text: &str, origin: &str) -> Result<(), ConfigError> {
    let err = match toml::from_str::<toml::Table>(text) {
        Ok(table) => return check_key_names(&table, ""),
        Err(err) => err,
    };
    let line_no = err
        .span()
        .and_then(|span| text.get(..span.start))
        .map(|before| before.matches('\n').count())
        .unwrap_or(0);
    let lines: Vec<&str> = text.lines().collect();
    let name = lines
        .get(line_no)
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let section = lines[..line_no.min(lines.len())]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = match (section, name) {
        (Some(s), Some(n)) => format!("{s}.{n}"),
        (None, Some(n)) => n,
        _ => origin.to_string(),
    };
    Err(ConfigError {
        key,
        why: format!("{} (in {} line {})", err.message(), origin, line_no + 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(toml: &str) -> Map<String, Value> {
        config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .expect("toml")
            .try_deserialize()
            .expect("map")
    }

    /// Regression (config fuzz target): a quoted key read as a path with a huge index made
    /// the `config` crate grow a list to that index and panic (capacity overflow), or
    /// with a smaller index exhaust memory.
    #[test]
    fn a_key_holding_a_list_index_is_refused_before_the_config_crate_sees_it() {
        let crash = "\"z[000000000000000000000002049638230412172384]\"=0";
        let err = check_text_syntax(crash, "config").expect_err("refused");
        assert!(err.key.starts_with("z["), "{err:?}");
        assert!(err.why.contains("cannot contain"), "{err:?}");
        let nested = "[gateway]\n\"x[99999999]\" = 1\n";
        assert_eq!(
            check_text_syntax(nested, "c").expect_err("refused").key,
            "gateway.x[99999999]"
        );
        let in_list = "[[agents]]\nid = \"a\"\n\"p[5]\" = 1\n";
        assert_eq!(
            check_text_syntax(in_list, "c").expect_err("refused").key,
            "agents[0].p[5]"
        );
        assert!(check_text_syntax("[gateway]\nport = 1\n", "c").is_ok());
        let whole = crate::config::Config::from_toml_str(crash).expect_err("refused, no panic");
        assert!(whole.to_string().contains("cannot contain"), "{whole}");
    }

    #[test]
    fn booleans_and_numbers_must_have_their_default_kind() {
        let defaults = table("[d]\nflag = false\ncount = 1\nratio = 0.5\nname = \"x\"\n");
        let ok = table("[d]\nflag = true\ncount = 7\nratio = 2\nname = \"y\"\n");
        assert!(check(&defaults, &ok).is_empty());
        let bad = table("[d]\nflag = \"yes\"\ncount = 1.5\nratio = \"lots\"\nname = \"y\"\n");
        let keys: Vec<_> = check(&defaults, &bad).into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["d.count", "d.flag", "d.ratio"]);
        let one = table("[d]\nflag = 1\n");
        assert_eq!(check(&defaults, &one)[0].key, "d.flag");
    }

    #[test]
    fn durations_are_bounded() {
        let defaults = table("wait_ms = 1\nperiod_secs = 1\n");
        let huge = table(&format!(
            "wait_ms = {}\nperiod_secs = {}\n",
            MAX_MS + 1,
            MAX_SECS + 1
        ));
        let keys: Vec<_> = check(&defaults, &huge).into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["period_secs", "wait_ms"]);
    }

    #[test]
    fn syntax_errors_name_the_key_on_their_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[gateway]\nshutdown_timeout_ms = 99999999999999999999\n",
        )
        .expect("write");
        let err = check_file_syntax(&file).expect_err("overflow");
        assert_eq!(err.key, "gateway.shutdown_timeout_ms", "{err}");
    }
}
