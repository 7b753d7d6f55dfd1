//! `GET /api/logs?level=&target=&since=&limit=`: recent events of the gateway's log file
//! (read through the same tail as `logs.tail`), parsed into `{ts, level, target, message}`
//! and filtered. Lines are `tracing`'s text format: `<RFC 3339 time> <LEVEL> [spans: ]
//! <target>: <message>`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use troupe_actors::log_tail;
use utoipa::{IntoParams, ToSchema};

use super::operator::{invalid, unavailable};
use super::{ApiError, authorize};
use crate::gateway::Gateway;

/// Events returned when the query names no limit.
const DEFAULT_LIMIT: usize = 200;

/// `GET /api/logs` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Least severe level kept: `trace`, `debug`, `info`, `warn` or `error`.
    pub level: Option<String>,
    /// Only events whose target starts with this (`troupe_actors::agent`).
    pub target: Option<String>,
    /// Only events at or after this time: ms since the epoch, or RFC 3339.
    pub since: Option<String>,
    /// Most events returned, newest kept (default 200, at most 5000).
    pub limit: Option<usize>,
}

/// One parsed log event.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogEvent {
    /// The time as written (RFC 3339, UTC).
    pub ts: String,
    /// The time in ms since the epoch.
    pub ts_ms: i64,
    /// `TRACE` … `ERROR`.
    pub level: String,
    /// The module that logged it.
    pub target: String,
    /// The message and its fields.
    pub message: String,
}

/// What `GET /api/logs` answers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogsPage {
    /// The log file read.
    pub file: String,
    /// Matching events, oldest first.
    pub events: Vec<LogEvent>,
    /// Older matching events were left out (by `limit` or the window read).
    pub truncated: bool,
}

/// `GET /api/logs`: recent log events, filtered.
#[utoipa::path(get, path = "/api/logs", tag = "operator", params(LogsQuery),
    responses((status = 200, description = "Matching events", body = LogsPage),
        (status = 400, description = "A bad filter", body = crate::http::openapi::ErrorBody),
        (status = 503, description = "The gateway logs to no file", body = crate::http::openapi::ErrorBody)))]
pub async fn recent(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    q: web::Query<LogsQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let min_level = match q.level.as_deref() {
        None | Some("") => 0,
        Some(l) => severity(l).ok_or_else(|| {
            invalid(format!(
                "level {l:?} is not one of trace, debug, info, warn, error"
            ))
        })?,
    };
    let since = match q.since.as_deref() {
        None | Some("") => None,
        Some(s) => Some(parse_since(s).ok_or_else(|| {
            invalid(format!(
                "since {s:?} is neither ms since the epoch nor an RFC 3339 time"
            ))
        })?),
    };
    let limit = q
        .limit
        .unwrap_or(DEFAULT_LIMIT)
        .clamp(1, log_tail::MAX_LIMIT);
    let Some(file) = gateway.edge.log_file.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NO_LOG_FILE",
            "this gateway does not log to a file",
        ));
    };
    let read = tokio::task::spawn_blocking(move || {
        log_tail::tail(
            &file,
            None,
            Some(log_tail::MAX_LIMIT),
            Some(log_tail::MAX_BYTES),
        )
        .map_err(|e| format!("cannot read the log {}: {e}", file.display()))
    });
    let tail = read
        .await
        .map_err(|e| unavailable(format!("the log reader failed: {e}")))?
        .map_err(unavailable)?;
    let target = q.target.as_deref().unwrap_or("");
    let mut events: Vec<LogEvent> = tail
        .lines
        .iter()
        .filter_map(|l| parse_line(l))
        .filter(|e| severity(&e.level).unwrap_or(0) >= min_level)
        .filter(|e| e.target.starts_with(target))
        .filter(|e| since.is_none_or(|s| e.ts_ms >= s))
        .collect();
    let mut truncated = tail.truncated;
    if events.len() > limit {
        events.drain(..events.len() - limit);
        truncated = true;
    }
    Ok(HttpResponse::Ok().json(LogsPage {
        file: tail.file,
        events,
        truncated,
    }))
}

/// 0 (trace) to 4 (error), any case.
fn severity(level: &str) -> Option<u8> {
    match level.to_ascii_lowercase().as_str() {
        "trace" => Some(0),
        "debug" => Some(1),
        "info" => Some(2),
        "warn" | "warning" => Some(3),
        "error" => Some(4),
        _ => None,
    }
}

/// ms since the epoch, or an RFC 3339 time.
fn parse_since(s: &str) -> Option<i64> {
    s.trim()
        .parse::<i64>()
        .ok()
        .or_else(|| rfc3339_ms(s.trim()))
}

/// One line of `tracing`'s text format, or `None` for a line that is not an event's first.
pub fn parse_line(line: &str) -> Option<LogEvent> {
    let (ts, rest) = line.split_once(' ')?;
    let ts_ms = rfc3339_ms(ts)?;
    let rest = rest.trim_start();
    let (level, rest) = rest.split_once(' ')?;
    severity(level)?;
    let mut rest = rest.trim_start();
    // Spans (`name{fields}:`) come before the target; the target has no braces.
    loop {
        let (head, tail) = rest.split_once(": ")?;
        if head.contains('{') || head.contains(' ') {
            rest = tail;
            continue;
        }
        return Some(LogEvent {
            ts: ts.to_string(),
            ts_ms,
            level: level.to_string(),
            target: head.to_string(),
            message: tail.to_string(),
        });
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` as ms since the epoch.
fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = s.get(start..i)?;
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        millis = digits.parse::<i64>().ok()?;
    }
    let offset_min = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 => {
            let sign = match &tz[..1] {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            sign * (tz.get(1..3)?.parse::<i64>().ok()? * 60 + tz.get(4..6)?.parse::<i64>().ok()?)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_min * 60;
    Some(secs * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_are_parsed_with_spans_skipped() {
        let e = parse_line(
            "2026-11-27T21:19:35.123456Z  WARN agent{agent_id=main}: troupe_actors::agent: slow call ms=12",
        )
        .expect("an event");
        assert_eq!(e.level, "WARN");
        assert_eq!(e.target, "troupe_actors::agent");
        assert_eq!(e.message, "slow call ms=12");
        assert_eq!(e.ts_ms, 1_795_814_375_123);
        assert_eq!(parse_line("  continuation of a multi-line message"), None);
    }

    #[test]
    fn since_takes_epoch_ms_or_rfc3339_with_an_offset() {
        assert_eq!(parse_since("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(
            parse_since("1970-01-01T01:00:00+01:00"),
            Some(0),
            "an offset is applied"
        );
        assert_eq!(parse_since("yesterday"), None);
        assert_eq!(parse_since("2026-13-01T00:00:00Z"), None);
    }
}
