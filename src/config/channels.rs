//! `[[channels.telegram]]` and `[[channels.discord]]`: parsed from the merged config and validated into
//! [`ChannelAccounts`]; every error names its key (`channels.telegram[0].token_env`).
//! Tokens are resolved here (environment) or at each channel start (file) and never logged.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use troupe_actors::channels::{
    ChannelAccounts, DiscordSettings, DmPolicy, GroupPolicy, TelegramSettings, TokenSource,
};
use troupe_actors::gateway::Secret;

/// The `[channels]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChannels {
    #[serde(default)]
    telegram: Vec<RawTelegram>,
    #[serde(default)]
    discord: Vec<RawDiscord>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelegram {
    account: Option<String>,
    token_env: Option<String>,
    token_file: Option<String>,
    api_url: Option<String>,
    agent: Option<String>,
    dm_policy: Option<String>,
    #[serde(default)]
    allow_from: Vec<serde_json::Value>,
    group_policy: Option<String>,
    poll_timeout_secs: Option<u64>,
}

const DEFAULT_API_URL: &str = "https://api.telegram.org";
const DEFAULT_TOKEN_ENV: &str = "TELEGRAM_BOT_TOKEN";
const DEFAULT_POLL_TIMEOUT_SECS: u64 = 10;
const DEFAULT_DISCORD_API_URL: &str = "https://discord.com";
const DEFAULT_DISCORD_TOKEN_ENV: &str = "DISCORD_BOT_TOKEN";

/// One `[[channels.discord]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscord {
    account: Option<String>,
    token_env: Option<String>,
    token_file: Option<String>,
    api_url: Option<String>,
    agent: Option<String>,
    dm_policy: Option<String>,
    #[serde(default)]
    allow_from: Vec<serde_json::Value>,
    group_policy: Option<String>,
}

/// The keys every platform's account shares, as written.
struct RawCommon {
    account: Option<String>,
    token_env: Option<String>,
    token_file: Option<String>,
    api_url: Option<String>,
    agent: Option<String>,
    dm_policy: Option<String>,
    allow_from: Vec<serde_json::Value>,
    group_policy: Option<String>,
}

/// The keys every platform's account shares, validated.
struct Common {
    account: String,
    token: Option<TokenSource>,
    api_url: String,
    agent: String,
    dm_policy: DmPolicy,
    allow_from: Vec<String>,
    group_policy: GroupPolicy,
}

/// Where a platform's accounts live and their defaults.
struct Platform {
    table: &'static str,
    default_api_url: &'static str,
    default_token_env: &'static str,
}

/// Validates the channel accounts, reporting each problem through `bad(key, why)`.
pub(super) fn accounts(
    raw: RawChannels,
    env: &HashMap<String, String>,
    bad: &mut impl FnMut(&str, String),
) -> ChannelAccounts {
    let mut out = ChannelAccounts::default();
    let mut seen = HashSet::new();
    let telegram = Platform {
        table: "telegram",
        default_api_url: DEFAULT_API_URL,
        default_token_env: DEFAULT_TOKEN_ENV,
    };
    for (i, t) in raw.telegram.into_iter().enumerate() {
        let raw_common = RawCommon {
            account: t.account,
            token_env: t.token_env,
            token_file: t.token_file,
            api_url: t.api_url,
            agent: t.agent,
            dm_policy: t.dm_policy,
            allow_from: t.allow_from,
            group_policy: t.group_policy,
        };
        let c = common(&telegram, i, raw_common, &mut seen, env, bad);
        let poll_timeout_secs = t.poll_timeout_secs.unwrap_or(DEFAULT_POLL_TIMEOUT_SECS);
        if !(1..=50).contains(&poll_timeout_secs) {
            bad(
                &format!("channels.telegram[{i}].poll_timeout_secs"),
                format!("{poll_timeout_secs} must be between 1 and 50"),
            );
        }
        if let Some(token) = c.token {
            out.telegram.push(TelegramSettings {
                account: c.account,
                token,
                api_url: c.api_url,
                agent: c.agent,
                dm_policy: c.dm_policy,
                allow_from: c.allow_from,
                group_policy: c.group_policy,
                poll_timeout: Duration::from_secs(poll_timeout_secs),
            });
        }
    }
    let discord = Platform {
        table: "discord",
        default_api_url: DEFAULT_DISCORD_API_URL,
        default_token_env: DEFAULT_DISCORD_TOKEN_ENV,
    };
    let mut seen = HashSet::new();
    for (i, d) in raw.discord.into_iter().enumerate() {
        let raw_common = RawCommon {
            account: d.account,
            token_env: d.token_env,
            token_file: d.token_file,
            api_url: d.api_url,
            agent: d.agent,
            dm_policy: d.dm_policy,
            allow_from: d.allow_from,
            group_policy: d.group_policy,
        };
        let c = common(&discord, i, raw_common, &mut seen, env, bad);
        if let Some(token) = c.token {
            out.discord.push(DiscordSettings {
                account: c.account,
                token,
                api_url: c.api_url,
                agent: c.agent,
                dm_policy: c.dm_policy,
                allow_from: c.allow_from,
                group_policy: c.group_policy,
            });
        }
    }
    out
}

/// Validates the keys every platform shares (`channels.<table>[i].<key>`).
fn common(
    platform: &Platform,
    i: usize,
    t: RawCommon,
    seen: &mut HashSet<String>,
    env: &HashMap<String, String>,
    bad: &mut impl FnMut(&str, String),
) -> Common {
    let table = platform.table;
    let key = |field: &str| format!("channels.{table}[{i}].{field}");
    let account = t.account.unwrap_or_else(|| "main".into());
    let valid_name = !account.is_empty()
        && account
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_name {
        bad(
            &key("account"),
            format!("{account:?} must be letters, digits, '-' or '_'"),
        );
    } else if !seen.insert(account.clone()) {
        bad(&key("account"), format!("{account:?} is configured twice"));
    }
    let token = match (t.token_env, t.token_file) {
        (Some(_), Some(_)) => {
            bad(
                &key("token_file"),
                "set token_env or token_file, not both".into(),
            );
            None
        }
        (None, Some(file)) if file.trim().is_empty() => {
            bad(&key("token_file"), "is empty".into());
            None
        }
        (None, Some(file)) => Some(TokenSource::File(PathBuf::from(file))),
        (env_name, None) => {
            let name = env_name.unwrap_or_else(|| platform.default_token_env.into());
            match env.get(&name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
                Some(v) => Some(TokenSource::Value(Secret(v.to_string()))),
                None => {
                    bad(
                        &key("token_env"),
                        format!("environment variable {name} is not set (or set token_file)"),
                    );
                    None
                }
            }
        }
    };
    let api_url = t
        .api_url
        .unwrap_or_else(|| platform.default_api_url.into())
        .trim_end_matches('/')
        .to_string();
    if !(api_url.starts_with("http://") || api_url.starts_with("https://"))
        || reqwest_like_host(&api_url).is_none()
    {
        bad(
            &key("api_url"),
            format!("{api_url:?} must be an http:// or https:// URL"),
        );
    }
    let agent = t.agent.unwrap_or_else(|| "main".into());
    if agent.trim().is_empty() {
        bad(&key("agent"), "must name an agent".into());
    }
    let dm_policy = match t.dm_policy.as_deref().unwrap_or("pairing") {
        "pairing" => DmPolicy::Pairing,
        "allowlist" => DmPolicy::Allowlist,
        "open" => DmPolicy::Open,
        "disabled" => DmPolicy::Disabled,
        other => {
            bad(
                &key("dm_policy"),
                format!("{other:?} is not one of pairing, allowlist, open, disabled"),
            );
            DmPolicy::Pairing
        }
    };
    let group_policy = match t.group_policy.as_deref().unwrap_or("mention") {
        "mention" => GroupPolicy::Mention,
        "all" => GroupPolicy::All,
        "disabled" => GroupPolicy::Disabled,
        other => {
            bad(
                &key("group_policy"),
                format!("{other:?} is not one of mention, all, disabled"),
            );
            GroupPolicy::Mention
        }
    };
    let mut allow_from = Vec::new();
    for (j, v) in t.allow_from.iter().enumerate() {
        let id = match v {
            serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
            serde_json::Value::String(s) if s.trim().parse::<i64>().is_ok() => s.trim().into(),
            other => {
                bad(
                    &format!("channels.{table}[{i}].allow_from[{j}]"),
                    format!("{other} is not a user id (a number)"),
                );
                continue;
            }
        };
        allow_from.push(id);
    }
    Common {
        account,
        token,
        api_url,
        agent,
        dm_policy,
        allow_from,
        group_policy,
    }
}

/// The host part of an http(s) URL, if there is one.
fn reqwest_like_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty() && !host.contains(char::is_whitespace)).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str, env: &[(&str, &str)]) -> (ChannelAccounts, Vec<String>) {
        let raw: RawChannels = toml::from_str(toml_text).expect("toml");
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut errors = Vec::new();
        let accounts = accounts(raw, &env, &mut |k, why| errors.push(format!("{k}: {why}")));
        (accounts, errors)
    }

    #[test]
    fn defaults_apply_and_the_token_comes_from_the_environment() {
        let (acc, errors) = parse("[[telegram]]\n", &[("TELEGRAM_BOT_TOKEN", "1:abc")]);
        assert!(errors.is_empty(), "{errors:?}");
        let t = &acc.telegram[0];
        assert_eq!(t.account, "main");
        assert_eq!(t.api_url, "https://api.telegram.org");
        assert_eq!(t.dm_policy, DmPolicy::Pairing);
        assert_eq!(t.group_policy, GroupPolicy::Mention);
        assert_eq!(t.poll_timeout, Duration::from_secs(10));
        assert!(matches!(&t.token, TokenSource::Value(s) if s.0 == "1:abc"));
        assert!(
            !format!("{t:?}").contains("1:abc"),
            "the token leaks through Debug"
        );
    }

    #[test]
    fn every_error_names_its_key() {
        let text = r#"
[[telegram]]
account = "a b"
token_env = "NOPE"
api_url = "ftp://x"
dm_policy = "friends"
group_policy = "loud"
allow_from = ["bob"]
poll_timeout_secs = 0
"#;
        let (_, errors) = parse(text, &[]);
        for key in [
            "channels.telegram[0].account",
            "channels.telegram[0].token_env",
            "channels.telegram[0].api_url",
            "channels.telegram[0].dm_policy",
            "channels.telegram[0].group_policy",
            "channels.telegram[0].allow_from[0]",
            "channels.telegram[0].poll_timeout_secs",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(key)),
                "no error for {key}: {errors:?}"
            );
        }
    }

    #[test]
    fn duplicate_accounts_and_two_token_sources_are_refused() {
        let text = "[[telegram]]\ntoken_file = \"/t\"\n[[telegram]]\ntoken_file = \"/t\"\ntoken_env = \"X\"\n";
        let (_, errors) = parse(text, &[]);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("channels.telegram[1].account")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("channels.telegram[1].token_file")),
            "{errors:?}"
        );
    }

    #[test]
    fn discord_accounts_have_their_own_defaults_and_keys() {
        let text = "[[discord]]\ndm_policy = \"open\"\n[[discord]]\naccount = \"main\"\ntoken_env = \"NOPE\"\n";
        let (acc, errors) = parse(text, &[("DISCORD_BOT_TOKEN", "d.tok")]);
        let d = &acc.discord[0];
        assert_eq!(d.api_url, "https://discord.com");
        assert_eq!(d.dm_policy, DmPolicy::Open);
        assert!(matches!(&d.token, TokenSource::Value(s) if s.0 == "d.tok"));
        for key in [
            "channels.discord[1].account",
            "channels.discord[1].token_env",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(key)),
                "no error for {key}: {errors:?}"
            );
        }
    }
}
