//! Tool names as the model sees them: `<server>__<tool>`, made valid for OpenAI and
//! Anthropic (`^[a-zA-Z0-9_-]{1,64}$`). Characters outside that set become `_`; a name
//! still too long is cut and ends in a short hash of the full name, so two long tools of one
//! server stay apart. Pure functions.

/// The longest tool name providers accept.
pub const MAX_TOOL_NAME: usize = 64;

/// The separator between the server and the tool in an exposed name.
pub const SEPARATOR: &str = "__";

/// Whether `name` is a valid server name: 1..=32 of `[a-zA-Z0-9_-]`, without `__` (the
/// separator), so an exposed name says which server it belongs to.
pub fn valid_server_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !name.contains(SEPARATOR)
        && !name.ends_with('_')
}

/// The name the model sees for `tool` of `server` (a valid server name).
pub fn exposed_name(server: &str, tool: &str) -> String {
    let clean: String = tool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let full = format!("{server}{SEPARATOR}{clean}");
    if full.len() <= MAX_TOOL_NAME && !clean.is_empty() {
        return full;
    }
    // Too long (or nothing left of the tool's name): cut, and keep it unique with a hash of
    // the original name.
    let hash = format!("{:08x}", fnv1a(tool.as_bytes()) as u32);
    let keep = MAX_TOOL_NAME - hash.len() - 1;
    let cut: String = full.chars().take(keep).collect();
    format!("{cut}_{hash}")
}

/// The server an exposed name belongs to, among `servers` (the longest match wins).
pub fn server_of<'a>(exposed: &str, servers: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    servers
        .filter(|s| {
            exposed
                .strip_prefix(s)
                .is_some_and(|rest| rest.starts_with(SEPARATOR))
        })
        .max_by_key(|s| s.len())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_for_providers(name: &str) -> bool {
        (1..=MAX_TOOL_NAME).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    #[test]
    fn exposed_names_are_prefixed_and_valid_for_providers() {
        assert_eq!(exposed_name("calc", "add"), "calc__add");
        assert_eq!(exposed_name("fs", "read.file/v2"), "fs__read_file_v2");
        assert_eq!(exposed_name("x", "héllo wörld"), "x__h_llo_w_rld");
        let long = "t".repeat(100);
        let a = exposed_name("server", &long);
        let b = exposed_name("server", &format!("{long}x"));
        assert!(
            valid_for_providers(&a) && valid_for_providers(&b),
            "{a} {b}"
        );
        assert_ne!(a, b);
        assert!(a.starts_with("server__"));
        assert!(valid_for_providers(&exposed_name("s", "")));
    }

    #[test]
    fn server_names_exclude_the_separator_and_the_longest_prefix_wins() {
        assert!(valid_server_name("git-hub_1"));
        for bad in ["", "a__b", "a_", "a b", "a.b", &"x".repeat(33)] {
            assert!(!valid_server_name(bad), "{bad:?}");
        }
        let servers = ["a", "a-b", "c"];
        assert_eq!(server_of("a-b__x", servers.into_iter()), Some("a-b"));
        assert_eq!(server_of("a__x", servers.into_iter()), Some("a"));
        assert_eq!(server_of("current_time", servers.into_iter()), None);
        assert_eq!(server_of("ab__x", servers.into_iter()), None);
    }
}
