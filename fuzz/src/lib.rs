//! The bodies of Troupe's fuzz targets: each takes the fuzzer's bytes to one real entry
//! point of the gateway (the same functions the daemon calls), and checks what must hold
//! for every input beyond "does not panic". The targets in `fuzz_targets/` only call these.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use troupe::gateway::ws::protocol::{ConnectParams, ErrorShape, RequestFrame, ResponseFrame, Scope};
use troupe_actors::provider::sse::{SseEvent, SseReader};
use troupe_actors::scheduler::schedule::{Schedule, Zone, translate};
use troupe_actors::session_key::{MAX_KEY_BYTES, resolve};
use troupe::gateway::ws::session::methods::{self, parse};
use troupe::gateway::ws::session::session_params::{
    AbortParams, HistoryParams, ListParams, ModelsListParams, SessionParams,
};
use troupe::gateway::ws::session::turn_params::{AgentParams, ChatSendParams};

/// The agents configured while fuzzing session keys and turn params.
/// Attachments a fuzzed frame carries are stored under the state dir; this one does not
/// exist, so storing one fails with an error and a run writes no files.
const NO_STATE_DIR: &str = "/nonexistent/troupe-fuzz-state";

fn agents() -> Vec<String> {
    vec!["main".into(), "ops".into()]
}

/// A failed answer must serialize (it is what the client reads).
fn answer(id: &str, result: Result<(), ErrorShape>) {
    if let Err(error) = result {
        let frame = ResponseFrame::err(id, error);
        assert!(serde_json::to_string(&frame).is_ok(), "response serializes");
    }
}

/// A text frame as `WsSessionActor::on_text` decodes it, then the params of its method as
/// the dispatcher (`methods.rs`, `chat.rs`, `channels`, `scheduler::api`) decodes them.
pub fn frame(text: &str) {
    let Ok(frame) = serde_json::from_str::<RequestFrame>(text) else {
        return;
    };
    let RequestFrame {
        id, method, params, ..
    } = frame;
    if !methods::names().contains(&method.as_str()) {
        return;
    }
    let key = |k: &str| {
        resolve(k, &agents())
            .map(|_| ())
            .map_err(ErrorShape::invalid)
    };
    let result: Result<(), ErrorShape> = match method.as_str() {
        "chat.send" => parse::<ChatSendParams>(&method, params).and_then(|p| {
            key(&p.session_key)?;
            p.options(std::path::Path::new(NO_STATE_DIR)).map(|_| ())
        }),
        "agent" => parse::<AgentParams>(&method, params).and_then(|p| {
            if let Some(k) = &p.session_key {
                key(k)?;
            }
            let admin = p.message.len() % 2 == 0;
            p.options("echo", admin, std::path::Path::new(NO_STATE_DIR)).map(|_| ())
        }),
        "chat.history" => parse::<HistoryParams>(&method, params).and_then(|p| key(&p.session_key)),
        "chat.abort" => parse::<AbortParams>(&method, params).and_then(|p| key(&p.session_key)),
        "sessions.reset" | "sessions.delete" => {
            parse::<SessionParams>(&method, params).and_then(|p| key(&p.session_key))
        }
        "sessions.list" => parse::<ListParams>(&method, params).map(|_| ()),
        "models.list" => parse::<ModelsListParams>(&method, params).map(|_| ()),
        "send" => {
            parse::<troupe_actors::channels::operator_send::SendParams>(&method, params).map(|_| ())
        }
        "cron.add" => cron_job(params.unwrap_or(Value::Null)),
        _ => Ok(()),
    };
    answer(&id, result);
}

/// `cron.add`'s job: decoded, its schedule and zone parsed, its next fire computed.
fn cron_job(params: Value) -> Result<(), ErrorShape> {
    let job = params.get("job").cloned().unwrap_or(Value::Null);
    let job: troupe_actors::store::cron::CronJob =
        serde_json::from_value(job).map_err(|e| ErrorShape::invalid(e.to_string()))?;
    let schedule = Schedule::parse(&job.schedule).map_err(ErrorShape::invalid)?;
    let zone = Zone::parse(job.tz.as_deref()).map_err(ErrorShape::invalid)?;
    let _ = schedule.next_after(1_800_000_000_000, 1_700_000_000_000, zone);
    Ok(())
}

/// `connect` params as the handshake decodes them, and the scope they are granted.
pub fn connect(text: &str) {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let Ok(params) = serde_json::from_value::<ConnectParams>(value) else {
        return;
    };
    let scope = match &params.scopes {
        Some(list) => list.iter().filter_map(|s| Scope::parse(s)).max(),
        None => Some(Scope::Write),
    };
    if let Some(scope) = scope {
        assert_eq!(
            Scope::parse(scope.name()),
            Some(scope),
            "scope names round-trip"
        );
    }
}

/// A session key: resolved, and resolving the result changes nothing.
pub fn session_key(text: &str) {
    let agents = agents();
    if let Ok(first) = resolve(text, &agents) {
        assert!(first.key.len() <= MAX_KEY_BYTES);
        assert!(agents.contains(&first.agent), "{first:?}");
        let again = resolve(&first.key, &agents);
        assert_eq!(
            again.as_ref(),
            Ok(&first),
            "resolve is idempotent on {text:?}"
        );
    }
}

/// Config file text through the whole loader: TOML syntax, strict kinds, validation.
pub fn config(text: &str) {
    let _ = troupe::config::Config::from_toml_str(text);
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime for the SSE target")
    })
}

/// Every event of `chunks`, then how the stream ended (`None`: at its end; else the error).
fn read_all(chunks: Vec<Bytes>, limit: usize) -> (Vec<SseEvent>, Option<String>) {
    let items: Vec<reqwest::Result<Bytes>> = chunks.into_iter().map(Ok).collect();
    let mut reader = SseReader::new(
        futures_util::stream::iter(items),
        "fuzz",
        Duration::from_secs(60),
    )
    .with_max_event_bytes(limit);
    runtime().block_on(async move {
        let mut events = Vec::new();
        loop {
            match reader.next().await {
                Ok(Some(event)) => events.push(event),
                Ok(None) => return (events, None),
                Err(e) => return (events, Some(e.to_string())),
            }
        }
    })
}

/// An SSE body read whole, then cut into chunks where the input says: the same events
/// and the same ending either way. The first two bytes pick the event size limit and the
/// cut points.
pub fn sse(data: &[u8]) {
    let [a, b, body @ ..] = data else {
        return;
    };
    let limit = 1 + usize::from(*a) * 4;
    let whole = read_all(vec![Bytes::copy_from_slice(body)], limit);
    let step = 1 + usize::from(*b % 16);
    let mut chunks = Vec::new();
    let mut rest = body;
    let mut i = 0usize;
    while !rest.is_empty() {
        let n = (step + (i * 7) % 5).min(rest.len());
        chunks.push(Bytes::copy_from_slice(&rest[..n]));
        rest = &rest[n..];
        i += 1;
    }
    let split = read_all(chunks, limit);
    assert_eq!(whole, split, "chunking changed what was read");
}

/// A schedule (cron expression, shorthand, `every`, `at`): parsed, translated, and its
/// next fires strictly increasing.
pub fn cron(text: &str) {
    let _ = translate(text);
    let Ok(schedule) = Schedule::parse(text) else {
        return;
    };
    let name = if text.len() % 2 == 0 {
        "UTC"
    } else {
        "America/New_York"
    };
    let zone = Zone::parse(Some(name)).expect("a known zone");
    let mut at = 1_800_000_000_000i64;
    for _ in 0..4 {
        match schedule.next_after(at, 1_700_000_000_000, zone) {
            Some(next) => {
                assert!(next > at, "{text:?}: next fire {next} is not after {at}");
                at = next;
            }
            None => break,
        }
    }
}
