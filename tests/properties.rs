//! Property tests (proptest, a bounded number of cases each) of the entry points the fuzz
//! targets in `fuzz/` reach: WS request frames and their method params, `connect` params,
//! session keys, config text, the SSE reader and cron schedules. Arbitrary input never
//! panics; where a round trip or invariant exists, it holds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use actix_web::web::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};
use troupe::config::Config;
use troupe::gateway::ws::protocol::{ConnectParams, RequestFrame, Scope};
use troupe::gateway::ws::session::methods::{self, parse};
use troupe::gateway::ws::session::session_params::{
    AbortParams, HistoryParams, ListParams, ModelsListParams, SessionParams,
};
use troupe::gateway::ws::session::turn_params::{AgentParams, ChatSendParams};
use troupe_actors::provider::sse::{SseEvent, SseReader};
use troupe_actors::scheduler::schedule::{Schedule, Zone, translate};
use troupe_actors::session_key::{MAX_KEY_BYTES, resolve};

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn agents() -> Vec<String> {
    vec!["main".into(), "ops".into()]
}

/// Any JSON value, nested a few levels, with the field names the params use.
fn json_value() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        Just("sessionKey".to_string()),
        Just("message".to_string()),
        Just("idempotencyKey".to_string()),
        Just("key".to_string()),
        Just("limit".to_string()),
        Just("deliver".to_string()),
        Just("model".to_string()),
        Just("provider".to_string()),
        Just("timeout".to_string()),
        Just("timeoutMs".to_string()),
        Just("queueMode".to_string()),
        ".{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("agent:main:main"),
            Just("steer"),
            Just("followup"),
            Just("collect")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(name.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Decodes `params` as every method that takes typed params does; never panics.
fn dispatch(method: &str, params: Option<Value>) {
    let agents = agents();
    // Attachments with content are saved under the state dir's uploads/: a fresh one each time.
    let state = tempfile::tempdir().expect("tempdir");
    let home = state.path();
    match method {
        "chat.send" => {
            if let Ok(p) = parse::<ChatSendParams>(method, params) {
                let _ = resolve(&p.session_key, &agents);
                let _ = p.options(home);
            }
        }
        "agent" => {
            if let Ok(p) = parse::<AgentParams>(method, params) {
                let _ = p.options("echo", true, home);
                let _ = p.options("echo", false, home);
            }
        }
        "chat.history" => drop(parse::<HistoryParams>(method, params)),
        "chat.abort" => drop(parse::<AbortParams>(method, params)),
        "sessions.reset" | "sessions.delete" => drop(parse::<SessionParams>(method, params)),
        "sessions.list" => drop(parse::<ListParams>(method, params)),
        "models.list" => drop(parse::<ModelsListParams>(method, params)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn arbitrary_text_frames_never_panic(text in ".{0,200}") {
        let _ = serde_json::from_str::<RequestFrame>(&text);
    }

    #[test]
    fn arbitrary_params_of_every_method_never_panic(
        method in prop::sample::select(methods::names()),
        params in json_value(),
    ) {
        let frame = json!({ "type": "req", "id": "1", "method": method, "params": params });
        let frame: RequestFrame = serde_json::from_value(frame).expect("a request frame");
        dispatch(&frame.method, frame.params);
    }

    #[test]
    fn connect_params_decode_or_are_refused_and_scopes_round_trip(
        min in any::<i64>(),
        max in any::<i64>(),
        role in prop::option::of(".{0,10}"),
        scopes in prop::option::of(prop::collection::vec(
            prop_oneof![Just("operator.read".to_string()), Just("operator.write".to_string()),
                Just("operator.admin".to_string()), ".{0,14}"], 0..4)),
        extra in json_value(),
    ) {
        let value = json!({
            "minProtocol": min, "maxProtocol": max, "role": role, "scopes": scopes,
            "client": extra, "auth": { "token": "t" },
        });
        match serde_json::from_value::<ConnectParams>(value) {
            Ok(p) => {
                prop_assert!(u32::try_from(min).is_ok() && u32::try_from(max).is_ok());
                for s in p.scopes.unwrap_or_default() {
                    if let Some(scope) = Scope::parse(&s) {
                        prop_assert_eq!(scope.name(), s.as_str());
                    }
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

/// Session keys: prefixes that matter, then anything.
fn session_key() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        Just(""),
        Just("agent:"),
        Just("agent:main:"),
        Just("agent:ops:"),
        Just("agent:nobody:"),
        Just("cron:"),
        Just("hook:"),
        Just(":"),
    ];
    (prefix, "\\PC{0,40}|.{0,300}").prop_map(|(p, rest)| format!("{p}{rest}"))
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn session_key_resolution_is_idempotent(key in session_key()) {
        let agents = agents();
        if let Ok(first) = resolve(&key, &agents) {
            prop_assert!(first.key.len() <= MAX_KEY_BYTES);
            prop_assert!(agents.contains(&first.agent));
            prop_assert_eq!(resolve(&first.key, &agents), Ok(first));
        }
    }
}

/// A valid Unix cron field of numbers in `lo..=hi` (`*` and steps span `lo..=top`), with
/// its allowed values.
fn field(lo: u32, hi: u32, top: u32) -> impl Strategy<Value = (String, Vec<u32>)> {
    let all: Vec<u32> = (lo..=top).collect();
    let one = (lo..=hi).prop_map(|n| (n.to_string(), vec![n]));
    let range = (lo..=hi, lo..=hi).prop_map(|(a, b)| {
        let (a, b) = (a.min(b), a.max(b));
        (format!("{a}-{b}"), (a..=b).collect())
    });
    let step = (1..=(hi - lo)).prop_map(move |s| {
        (
            format!("*/{s}"),
            (lo..=top).step_by(s as usize).collect::<Vec<_>>(),
        )
    });
    prop_oneof![Just(("*".to_string(), all)), one, range, step]
}

/// A valid day-of-week field (Unix: 0-7, 7 and 0 both Sunday, or names) and its days
/// (0 = Sunday).
fn dow_field() -> impl Strategy<Value = (String, Vec<u32>)> {
    const NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let item = prop_oneof![
        (0u32..=7).prop_map(|d| (d.to_string(), vec![d % 7])),
        (0usize..7).prop_map(|d| (NAMES[d].to_lowercase(), vec![d as u32])),
        (0u32..=7, 0u32..=7).prop_map(|(a, b)| {
            let (a, b) = (a.min(b), a.max(b));
            (format!("{a}-{b}"), (a..=b).map(|d| d % 7).collect())
        }),
        (0u32..=6, 1u32..=8).prop_map(|(a, s)| {
            (
                format!("{a}/{s}"),
                (a..=6).step_by(s as usize).collect::<Vec<_>>(),
            )
        }),
        (1u32..=9).prop_map(|s| (
            format!("*/{s}"),
            (0..=6).step_by(s as usize).collect::<Vec<_>>()
        )),
    ];
    prop_oneof![
        Just(("*".to_string(), (0..7).collect())),
        prop::collection::vec(item, 1..4).prop_map(|items| {
            let text: Vec<String> = items.iter().map(|(t, _)| t.clone()).collect();
            let days = items.into_iter().flat_map(|(_, d)| d).collect();
            (text.join(","), days)
        }),
    ]
}

/// The first minute after `after_ms` (UTC) that Unix cron fires: minute, hour and month
/// must match; of day-of-month and day-of-week, both when either is `*`, else either one.
/// Looks 30 years ahead: a date falls on a given weekday again within 28 years (this
/// range never crosses 2100), so e.g. `* * */7 3 7` (a 1st/8th/.../29th of March that is a
/// Sunday, both fields ANDed) after 2026-03-29 is 2037-03-01, 11 years on.
fn unix_next(
    after_ms: i64,
    minutes: &[u32],
    hours: &[u32],
    (doms, dom_star): (&[u32], bool),
    months: &[u32],
    (dows, dow_star): (&[u32], bool),
) -> Option<i64> {
    let after = DateTime::<Utc>::from_timestamp_millis(after_ms)?;
    let mut day = after.date_naive();
    for _ in 0..(366 * 30) {
        let dom_ok = doms.contains(&day.day());
        let dow_ok = dows.contains(&day.weekday().num_days_from_sunday());
        let day_ok = if dom_star || dow_star {
            dom_ok && dow_ok
        } else {
            dom_ok || dow_ok
        };
        if day_ok && months.contains(&day.month()) {
            for h in 0..24 {
                for m in 0..60 {
                    if !hours.contains(&h) || !minutes.contains(&m) {
                        continue;
                    }
                    let t = day.and_hms_opt(h, m, 0)?.and_utc().timestamp_millis();
                    if t > after_ms {
                        return Some(t);
                    }
                }
            }
        }
        day = day.succ_opt()?;
    }
    None
}

/// Found by `valid_cron_fires_...`: the next fire of `* * */7 3 7` after 2026-03-29 23:59
/// is 11 years away; the scheduler found it, the reference looked only 8 years ahead.
#[test]
fn a_fire_eleven_years_away_is_found_by_both_the_scheduler_and_the_reference() {
    let schedule = Schedule::parse("* * */7 3 7").unwrap();
    let utc = Zone::parse(Some("UTC")).unwrap();
    let after = 1_774_828_740_000;
    let all = |lo: u32, hi: u32| (lo..=hi).collect::<Vec<_>>();
    let doms: Vec<u32> = (1..=31).step_by(7).collect();
    let expected = unix_next(
        after,
        &all(0, 59),
        &all(0, 23),
        (&doms, true),
        &[3],
        (&[0], false),
    );
    assert_eq!(
        expected,
        Some(2_119_478_400_000),
        "2037-03-01 00:00 UTC, a Sunday"
    );
    assert_eq!(schedule.next_after(after, 0, utc), expected);
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn arbitrary_schedules_never_panic(text in "\\PC{0,40}|(every|at) .{0,30}|[0-9*/,-]{0,6}( [0-9*/,A-Za-z-]{0,6}){4}") {
        let _ = translate(&text);
        if let Ok(s) = Schedule::parse(&text) {
            let zone = Zone::parse(Some("America/New_York")).unwrap();
            if let Some(next) = s.next_after(1_800_000_000_000, 1_700_000_000_000, zone) {
                prop_assert!(next > 1_800_000_000_000);
            }
        }
    }

    #[test]
    fn valid_cron_fires_are_increasing_and_on_allowed_times(
        (minute, minutes) in field(0, 59, 59),
        (hour, hours) in field(0, 23, 23),
        (dom, doms) in field(1, 28, 31),
        (month, months) in field(1, 12, 12),
        (dow, dows) in dow_field(),
        start in 1_700_000_000_000i64..1_900_000_000_000,
    ) {
        let expr = format!("{minute} {hour} {dom} {month} {dow}");
        prop_assert!(translate(&expr).is_ok(), "{expr}");
        let schedule = Schedule::parse(&expr).map_err(|e| TestCaseError::fail(format!("{expr}: {e}")))?;
        let utc = Zone::parse(Some("UTC")).unwrap();
        let mut at = start;
        for _ in 0..5 {
            let next = schedule.next_after(at, 0, utc);
            let Some(next) = next else {
                return Err(TestCaseError::fail(format!("{expr}: no fire after {at}")));
            };
            prop_assert!(next > at, "{expr}: {next} is not after {at}");
            let expected = unix_next(at, &minutes, &hours, (&doms, dom.starts_with('*')), &months, (&dows, dow.starts_with('*')));
            prop_assert_eq!(Some(next), expected, "{}: the first fire after {} as Unix cron has it", expr, at);
            let t = DateTime::<Utc>::from_timestamp_millis(next).unwrap();
            prop_assert!(minutes.contains(&t.minute()), "{expr}: minute of {t}");
            prop_assert!(hours.contains(&t.hour()), "{expr}: hour of {t}");
            prop_assert!(months.contains(&t.month()), "{expr}: month of {t}");
            // Unix cron: when both are restricted, either day field may match.
            let day_ok = doms.contains(&t.day());
            let weekday_ok = dows.contains(&t.weekday().num_days_from_sunday());
            let either = !dom.starts_with('*') && !dow.starts_with('*');
            prop_assert!(if either { day_ok || weekday_ok } else { day_ok && weekday_ok },
                "{expr}: day of {t}");
            at = next;
        }
    }
}

/// Every event of `chunks`, then the error that ended the stream, if any.
fn read_all(chunks: Vec<Vec<u8>>, limit: usize) -> (Vec<SseEvent>, Option<String>) {
    let items: Vec<reqwest::Result<Bytes>> =
        chunks.into_iter().map(|c| Ok(Bytes::from(c))).collect();
    let mut reader = SseReader::new(
        futures_util::stream::iter(items),
        "prop",
        Duration::from_secs(60),
    )
    .with_max_event_bytes(limit);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut events = Vec::new();
        loop {
            match reader.next().await {
                Ok(Some(e)) => events.push(e),
                Ok(None) => return (events, None),
                Err(e) => return (events, Some(e.to_string())),
            }
        }
    })
}

/// An SSE body: field lines, comments, blank lines, CRLF, and some raw bytes.
fn sse_body() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        "data: [ -~]{0,20}",
        "data:[ -~]{0,20}",
        "event: [a-z_]{0,10}",
        ": [ -~]{0,10}",
        "id: [0-9]{0,4}",
        "data",
        "",
        "[ -~]{0,12}",
        "\\PC{0,6}",
    ];
    let ending = prop_oneof![Just("\n"), Just("\r\n"), Just("\r"), Just("")];
    let raw = prop::collection::vec(any::<u8>(), 0..6);
    prop::collection::vec((line, ending, prop::option::weighted(0.1, raw)), 0..24).prop_map(
        |parts| {
            let mut body = Vec::new();
            for (line, ending, raw) in parts {
                body.extend_from_slice(line.as_bytes());
                body.extend_from_slice(ending.as_bytes());
                if let Some(raw) = raw {
                    body.extend_from_slice(&raw);
                }
            }
            body
        },
    )
}

/// `body` cut at `cuts` (positions taken modulo its length).
fn split(body: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    at.push(0);
    at.push(body.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| body[w[0]..w[1]].to_vec()).collect()
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn sse_chunk_boundaries_never_change_the_events(
        body in sse_body(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        limit in prop_oneof![Just(8 * 1024 * 1024), 1usize..64],
    ) {
        let whole = read_all(vec![body.clone()], limit);
        let chunked = read_all(split(&body, &cuts), limit);
        prop_assert_eq!(&whole, &chunked);
        let bytes: Vec<Vec<u8>> = body.iter().map(|b| vec![*b]).collect();
        prop_assert_eq!(&whole, &read_all(bytes, limit));
    }
}

/// A config file whose every value is valid, with the keys it sets.
fn valid_config() -> impl Strategy<Value = String> {
    let gateway = (
        0u16..=65535,
        prop::sample::select(vec!["loopback", "127.0.0.1", "0.0.0.0", "::1"]),
        0usize..=256,
        0u64..=86_400_000,
        1usize..100_000,
        1usize..10_000,
        1u64..=86_400_000,
    );
    let ws = (
        1024usize..16 << 20,
        0usize..16 << 20,
        1u64..=86_400_000,
        1u64..=86_400_000,
    );
    let supervisor = (0u32..1000, 1u64..=31_622_400, 1u64..=60_000, 0u64..=60_000);
    let rest = (
        (1usize..100, 1usize..10_000, 0u64..100_000, 0usize..1000),
        prop::sample::select(vec!["info", "debug", "warn", "troupe=debug,info"]),
        prop::sample::select(vec!["daily", "hourly", "never"]),
        (1usize..100, 0u64..=36_500, any::<bool>()),
        prop::collection::btree_set("[a-z][a-z0-9_-]{0,8}", 1..4),
        prop::option::of("[A-Za-z0-9]{16,32}"),
    );
    (gateway, ws, supervisor, rest).prop_map(|(g, w, s, r)| {
        let ((lanes, waiting, dedupe, history), level, rotation, (files, retention, fault), ids, token) = r;
        let token = token.map(|t| format!("token = \"{t}\"\n")).unwrap_or_default();
        let agents: String = ids
            .iter()
            .map(|id| format!("[[agents]]\nid = \"{id}\"\nprovider = \"echo\"\nmodel = \"echo\"\n"))
            .collect();
        format!(
            "[gateway]\nport = {}\nbind = \"{}\"\nworkers = {}\nshutdown_timeout_ms = {}\n\
             max_connections = {}\nmax_connections_per_ip = {}\nrequest_timeout_ms = {}\n\
             [gateway.auth]\nmode = \"token\"\n{token}\
             [gateway.ws]\nmax_payload = {}\nmax_buffered_bytes = {}\ntick_interval_ms = {}\nhandshake_timeout_ms = {}\n\
             [supervisor]\nmax_restarts = {}\nperiod_secs = {}\nping_interval_ms = {}\nhang_timeout_ms = {}\n\
             [sessions]\nlane_capacity = {lanes}\nmax_waiting_turns = {waiting}\ndedupe_window_secs = {dedupe}\nhistory_limit = {history}\n\
             [logging]\nlevel = \"{level}\"\nrotation = \"{rotation}\"\nmax_files = {files}\n\
             [store]\nretention_days = {retention}\n[debug]\nfault_injection = {fault}\n{agents}",
            g.0, g.1, g.2, g.3, g.4, g.5, g.6,
            w.0, w.0 + w.1, w.2, w.3,
            s.0, s.1, s.2, s.2 + s.3,
        )
    })
}

/// Numeric and boolean keys of the defaults, with a value of the wrong kind for each.
const TYPED_KEYS: &[(&str, &str, &str)] = &[
    ("gateway", "port", "\"8080\""),
    ("gateway", "workers", "true"),
    ("gateway", "shutdown_timeout_ms", "1.5"),
    ("gateway", "max_connections", "\"many\""),
    ("gateway", "request_timeout_ms", "[1]"),
    ("gateway.auth", "max_failures_per_minute", "false"),
    ("gateway.ws", "max_payload", "\"1MB\""),
    ("gateway.ws", "tick_interval_ms", "{ a = 1 }"),
    ("supervisor", "max_restarts", "2.5"),
    ("supervisor", "period_secs", "\"60\""),
    ("supervisor.agents", "period_secs", "true"),
    ("sessions", "lane_capacity", "\"20\""),
    ("sessions", "history_limit", "0.5"),
    ("providers.echo", "delta_delay_ms", "\"0\""),
    ("providers.http", "max_retries", "true"),
    ("debug", "fault_injection", "1"),
    ("debug", "fault_injection", "\"yes\""),
    ("logging", "max_files", "\"14\""),
    ("store", "retention_days", "[]"),
];

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn any_valid_config_loads(text in valid_config()) {
        if let Err(e) = Config::from_toml_str(&text) {
            return Err(TestCaseError::fail(format!("{e}\n{text}")));
        }
    }

    #[test]
    fn a_wrong_kind_is_refused_naming_its_key(
        which in 0..TYPED_KEYS.len(),
        text in valid_config(),
    ) {
        let (section, key, wrong) = TYPED_KEYS[which];
        // The valid file with that one key replaced (appended as its own table when absent).
        let header = format!("[{section}]\n");
        let line = format!("{key} = {wrong}\n");
        let mut replaced = String::new();
        let mut in_section = false;
        let mut done = false;
        for l in text.lines() {
            if l.starts_with('[') {
                in_section = l == header.trim_end();
            }
            if in_section && l.starts_with(&format!("{key} =")) {
                continue;
            }
            replaced.push_str(l);
            replaced.push('\n');
            if in_section && l == header.trim_end() {
                replaced.push_str(&line);
                done = true;
            }
        }
        if !done {
            replaced = format!("{header}{line}{replaced}");
        }
        let full = format!("{section}.{key}");
        match Config::from_toml_str(&replaced) {
            Ok(_) => return Err(TestCaseError::fail(format!("{full} = {wrong} was accepted"))),
            Err(e) => prop_assert!(e.0.iter().any(|e| e.key == full), "{full}: {e}"),
        }
    }

    #[test]
    fn arbitrary_config_text_never_panics(text in "(\\[[a-z.]{0,12}\\]\n|[a-z_]{1,12} = (\"[ -~]{0,8}\"|-?[0-9]{1,22}|[0-9.e+-]{1,8}|true|\\[\\]|\\{\\})\n|\\PC{0,20}\n){0,8}") {
        let _ = Config::from_toml_str(&text);
    }
}
