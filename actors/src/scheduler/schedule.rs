//! Schedules of cron jobs and heartbeats, parsed and evaluated: a 5-field Unix cron
//! expression (translated for the `cron` crate: seconds prepended, weekdays renumbered
//! from its 1 = Sunday; with Unix cron's day rule, where a restricted day-of-month and a
//! restricted day-of-week each fire on their own), `@hourly`-style shorthands, `every <duration>` (anchored, so fires
//! never drift), and one-shot `at <RFC 3339>`. Local times are evaluated in the job's IANA
//! zone (or the host's); a local time skipped or repeated by a DST change fires once.

use std::str::FromStr;

use chrono::{DateTime, Local, LocalResult, NaiveDateTime, TimeZone, Utc};

/// An example of every accepted form, for error messages.
pub const EXAMPLES: &str =
    "\"30 9 * * 1-5\", \"*/15 * * * *\", \"@daily\", \"every 5m\" or \"at 2030-01-01T09:00:00Z\"";

/// A parsed schedule.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// A cron expression, translated for the `cron` crate: one, or two whose fires are
    /// merged (see [`translate`]).
    Cron(Vec<cron::Schedule>),
    /// Every so many milliseconds from an anchor.
    Every(i64),
    /// Once, at this instant (ms since the epoch).
    At(i64),
}

/// Where local times are evaluated.
#[derive(Clone, Copy, Debug)]
pub enum Zone {
    /// The host's zone.
    Host,
    /// An IANA zone.
    Named(chrono_tz::Tz),
}

impl Zone {
    /// Parses an optional IANA zone name.
    pub fn parse(tz: Option<&str>) -> Result<Self, String> {
        match tz.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(Zone::Host),
            Some(name) => chrono_tz::Tz::from_str(name).map(Zone::Named).map_err(|_| {
                format!("unknown time zone {name:?}; use an IANA name such as \"Europe/Paris\"")
            }),
        }
    }
}

/// Why a schedule was refused, with an example of a valid one.
fn refuse(why: impl std::fmt::Display) -> String {
    format!("{why}; examples of valid schedules: {EXAMPLES}")
}

impl Schedule {
    /// Parses a schedule as users write it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("every ") {
            let ms = parse_duration_ms(rest.trim()).map_err(refuse)?;
            return Ok(Schedule::Every(ms));
        }
        if let Some(rest) = text.strip_prefix("at ") {
            let at = DateTime::parse_from_rfc3339(rest.trim())
                .map_err(|e| refuse(format!("{:?} is not an RFC 3339 time ({e})", rest.trim())))?;
            return Ok(Schedule::At(at.timestamp_millis()));
        }
        let parsed = translate(text)
            .map_err(refuse)?
            .iter()
            .map(|translated| cron::Schedule::from_str(translated))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| refuse(format!("{text:?} is not a valid cron expression ({e})")))?;
        Ok(Schedule::Cron(parsed))
    }

    /// The first fire strictly after `after_ms`; `anchor_ms` anchors `every` schedules.
    pub fn next_after(&self, after_ms: i64, anchor_ms: i64, zone: Zone) -> Option<i64> {
        match self {
            Schedule::Every(every) => {
                let every = (*every).max(1);
                if after_ms < anchor_ms {
                    return Some(anchor_ms);
                }
                // A fire past the end of time (i64 milliseconds) never comes.
                let k = after_ms.checked_sub(anchor_ms)? / every + 1;
                anchor_ms.checked_add(k.checked_mul(every)?)
            }
            Schedule::At(at) => (*at > after_ms).then_some(*at),
            Schedule::Cron(crons) => crons
                .iter()
                .filter_map(|cron| match zone {
                    Zone::Host => next_cron(cron, after_ms, &Local),
                    Zone::Named(tz) => next_cron(cron, after_ms, &tz),
                })
                .min(),
        }
    }
}

/// The next cron fire after `after_ms`, walking local wall-clock times: a wall time in a
/// DST gap fires once at the end of the gap, a repeated one fires once (its first instant).
fn next_cron<Z: TimeZone>(cron: &cron::Schedule, after_ms: i64, tz: &Z) -> Option<i64> {
    let after = DateTime::<Utc>::from_timestamp_millis(after_ms)?;
    let local = after.with_timezone(tz).naive_local();
    // Wall-clock times, as if in a zone without DST.
    let mut walk = cron.after(&Utc.from_utc_datetime(&local));
    for _ in 0..10_000 {
        let wall = walk.next()?.naive_utc();
        let instant = first_instant(tz, wall)?;
        if instant > after_ms {
            return Some(instant);
        }
    }
    None
}

/// The first instant showing wall time `wall`, or the end of the gap it falls in.
fn first_instant<Z: TimeZone>(tz: &Z, wall: NaiveDateTime) -> Option<i64> {
    let mut probe = wall;
    for _ in 0..(4 * 60) {
        match tz.from_local_datetime(&probe) {
            LocalResult::Single(t) => return Some(t.timestamp_millis()),
            LocalResult::Ambiguous(first, _) => return Some(first.timestamp_millis()),
            LocalResult::None => probe += chrono::Duration::minutes(1),
        }
    }
    None
}

/// Parses `30s`, `5m`, `2h`, `1d`, `1h30m`, `500ms` into milliseconds (at least 1 s).
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not a duration such as 30s, 5m, 1h30m or 1d");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: i64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ms = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if total < 1_000 {
        return Err(format!(
            "{text:?} is shorter than the smallest interval, 1s"
        ));
    }
    Ok(total)
}

/// Translates a 5-field Unix cron expression (or a shorthand) to the `cron` crate's
/// 6 fields: seconds `0` prepended, weekdays renumbered (Unix 0-7, 0 and 7 = Sunday, to
/// its 1-7, 1 = Sunday), names kept. Unix cron fires on a day matching *either* day field
/// when both are restricted (neither starts with `*`), the `cron` crate only on a day
/// matching both: such an expression becomes two, one per day field, whose fires are
/// merged (`0 9 1 * MON` is the 1st of the month and every Monday).
pub fn translate(expr: &str) -> Result<Vec<String>, String> {
    let expr = match expr {
        "@hourly" => "0 * * * *",
        "@daily" | "@midnight" => "0 0 * * *",
        "@weekly" => "0 0 * * 0",
        "@monthly" => "0 0 1 * *",
        "@yearly" | "@annually" => "0 0 1 1 *",
        other if other.starts_with('@') => {
            return Err(format!(
                "unknown shorthand {other:?} (use @hourly, @daily, @weekly, @monthly or @yearly)"
            ));
        }
        other => other,
    };
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "{expr:?} has {} fields; a cron expression has 5 (minute hour day-of-month month day-of-week)",
            fields.len()
        ));
    }
    let dow = weekdays(fields[4])?;
    let (minute, hour, dom, month) = (fields[0], fields[1], fields[2], fields[3]);
    let unrestricted = |f: &str| f.starts_with('*') || f == "?";
    if unrestricted(dom) || unrestricted(fields[4]) {
        return Ok(vec![format!("0 {minute} {hour} {dom} {month} {dow}")]);
    }
    Ok(vec![
        format!("0 {minute} {hour} {dom} {month} *"),
        format!("0 {minute} {hour} * {month} {dow}"),
    ])
}

/// A Unix weekday (0-7 or a name) as 0-6, 0 = Sunday.
fn weekday(text: &str) -> Result<u32, String> {
    const NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    if let Some(i) = NAMES.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(i as u32);
    }
    match text.parse::<u32>() {
        Ok(n) if n <= 7 => Ok(n % 7),
        _ => Err(format!(
            "day-of-week {text:?} is not 0-7 or a name (SUN, MON, ...)"
        )),
    }
}

/// The day-of-week field, rewritten as the `cron` crate numbers days (1 = Sunday).
fn weekdays(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok("*".into());
    }
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 =
                    s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("day-of-week step {s:?} is not a positive number")
                    })?;
                (r, Some(step))
            }
            None => (item, None),
        };
        let (from, to) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => {
                    // 7 ends a range as Sunday (`5-7`) and starts one as Sunday (`7-7`).
                    let seven = |t: &str| if t == "7" { Ok(7) } else { weekday(t) };
                    let (a, b) = (seven(a)?, seven(b)?);
                    if b < a {
                        return Err(format!("day-of-week range {r:?} runs backwards"));
                    }
                    (a, b)
                }
                // `N/step` runs from N to Saturday (`1/1` too, not just Monday).
                None if step.is_some() => (weekday(r)?, 6),
                None => {
                    let d = weekday(r)?;
                    (d, d)
                }
            },
        };
        let mut d = from;
        while d <= to {
            days[(d % 7) as usize] = true;
            d = d.saturating_add(step.unwrap_or(1));
        }
    }
    // Runs of consecutive days, in the cron crate's numbering.
    let mut parts = Vec::new();
    let mut i = 0;
    while i < 7 {
        if days[i] {
            let start = i;
            while i + 1 < 7 && days[i + 1] {
                i += 1;
            }
            parts.push(if start == i {
                format!("{}", start + 1)
            } else {
                format!("{}-{}", start + 1, i + 1)
            });
        }
        i += 1;
    }
    if parts.is_empty() {
        return Err(format!("day-of-week {field:?} names no day"));
    }
    Ok(parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_of_month_and_day_of_week_both_restricted_fire_on_either() {
        // `0 0 13 * 5`: every 13th and every Friday, at midnight UTC.
        let s = Schedule::parse("0 0 13 * 5").unwrap();
        let utc = Zone::parse(Some("UTC")).unwrap();
        let ms = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().timestamp_millis();
        let mut t = ms("2026-02-01T00:00:00Z");
        let mut fires = Vec::new();
        for _ in 0..6 {
            t = s.next_after(t, 0, utc).unwrap();
            fires.push(
                DateTime::<Utc>::from_timestamp_millis(t)
                    .unwrap()
                    .format("%a %d")
                    .to_string(),
            );
        }
        // February 2026: Fridays 6, 13 (also the 13th: once), 20, 27; then March 6, 13.
        assert_eq!(
            fires,
            ["Fri 06", "Fri 13", "Fri 20", "Fri 27", "Fri 06", "Fri 13"]
        );
        let mut t = ms("2026-03-14T00:00:00Z");
        let mut fires = Vec::new();
        for _ in 0..5 {
            t = s.next_after(t, 0, utc).unwrap();
            fires.push(
                DateTime::<Utc>::from_timestamp_millis(t)
                    .unwrap()
                    .format("%a %m-%d")
                    .to_string(),
            );
        }
        // March 20, 27; April 3, 10, 13 (a Monday: fires as the 13th).
        assert_eq!(
            fires,
            [
                "Fri 03-20",
                "Fri 03-27",
                "Fri 04-03",
                "Fri 04-10",
                "Mon 04-13"
            ]
        );
        // One restricted day field keeps the usual meaning (both must match: only one is set).
        let fridays = Schedule::parse("0 0 * * 5").unwrap();
        assert!(matches!(fridays, Schedule::Cron(_)));
        let t = fridays
            .next_after(ms("2026-04-10T00:00:00Z"), 0, utc)
            .unwrap();
        assert_eq!(t, ms("2026-04-17T00:00:00Z"));
    }

    #[test]
    fn unix_expressions_translate_to_the_cron_crate_numbering() {
        let table = [
            ("30 9 * * 1-5", "0 30 9 * * 2-6"),
            ("0 0 * * 0", "0 0 0 * * 1"),
            ("0 0 * * 7", "0 0 0 * * 1"),
            ("0 8 * * MON-FRI", "0 0 8 * * 2-6"),
            ("*/15 * * * *", "0 */15 * * * *"),
            ("0 0 1 * *", "0 0 0 1 * *"),
            ("0 0 * * 5-7", "0 0 0 * * 1,6-7"),
            ("0 0 * * sat,sun", "0 0 0 * * 1,7"),
            ("@hourly", "0 0 * * * *"),
            ("@weekly", "0 0 0 * * 1"),
        ];
        for (unix, expected) in table {
            assert_eq!(translate(unix).unwrap(), [expected], "{unix}");
            Schedule::parse(unix).unwrap();
        }
    }

    #[test]
    fn translated_weekdays_fire_on_the_right_days() {
        let tz = Zone::Named(chrono_tz::UTC);
        // 2026-11-27 is a Friday.
        let fri = Utc
            .with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
            .unwrap()
            .timestamp_millis();
        let next = |expr: &str| {
            let s = Schedule::parse(expr).unwrap();
            let t = s.next_after(fri, 0, tz).unwrap();
            DateTime::<Utc>::from_timestamp_millis(t)
                .unwrap()
                .to_rfc3339()
        };
        assert_eq!(next("0 9 * * 1-5"), "2026-11-30T09:00:00+00:00");
        assert_eq!(next("0 9 * * 0"), "2026-11-29T09:00:00+00:00");
        assert_eq!(next("0 9 * * 7"), "2026-11-29T09:00:00+00:00");
        assert_eq!(next("0 9 * * 6"), "2026-11-28T09:00:00+00:00");
        assert_eq!(next("0 0 1 * *"), "2026-12-01T00:00:00+00:00");
        assert_eq!(next("*/15 * * * *"), "2026-11-27T12:15:00+00:00");
    }

    /// Found by the property test `valid_cron_fires_are_increasing_and_on_allowed_times`:
    /// `* * 3 * 0` fired only on a 3rd that is a Sunday (the `cron` crate's rule), not on
    /// every 3rd and every Sunday (Unix cron's).
    #[test]
    fn restricted_day_of_month_and_day_of_week_each_fire_as_in_unix_cron() {
        assert_eq!(
            translate("0 9 3 * 0").unwrap(),
            ["0 0 9 3 * *", "0 0 9 * * 1"]
        );
        // Found by the same property: `0/1` was Sunday alone, while `0/2` ran to Saturday.
        assert_eq!(translate("0 9 * * 0/1").unwrap(), ["0 0 9 * * 1-7"]);
        assert_eq!(translate("0 9 * * 1/1").unwrap(), ["0 0 9 * * 2-7"]);
        // And `7-7` (Sunday to Sunday) was every day.
        assert_eq!(translate("0 9 * * 7-7").unwrap(), ["0 0 9 * * 1"]);
        // A field starting with `*` leaves the other alone, as in Vixie cron.
        assert_eq!(translate("0 9 */2 * 1").unwrap(), ["0 0 9 */2 * 2"]);
        let tz = Zone::Named(chrono_tz::UTC);
        let s = Schedule::parse("0 9 3 * 0").unwrap();
        // 2026-11-27 is a Friday: next Sunday the 29th, then Thursday 3 December.
        let mut t = Utc
            .with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
            .unwrap()
            .timestamp_millis();
        let mut fires = Vec::new();
        for _ in 0..3 {
            t = s.next_after(t, 0, tz).unwrap();
            fires.push(
                DateTime::<Utc>::from_timestamp_millis(t)
                    .unwrap()
                    .to_rfc3339(),
            );
        }
        assert_eq!(
            fires,
            [
                "2026-11-29T09:00:00+00:00",
                "2026-12-03T09:00:00+00:00",
                "2026-12-06T09:00:00+00:00"
            ]
        );
    }

    #[test]
    fn bad_expressions_say_why_and_give_an_example() {
        for bad in [
            "61 * * * *",
            "* * *",
            "0 0 * * 8",
            "every 0s",
            "at tomorrow",
            "@often",
        ] {
            let err = Schedule::parse(bad).unwrap_err();
            assert!(err.contains("examples of valid schedules"), "{bad}: {err}");
        }
    }

    #[test]
    fn every_is_anchored_and_never_drifts() {
        let s = Schedule::parse("every 5m").unwrap();
        let anchor = 1_000;
        assert_eq!(
            s.next_after(anchor + 1, anchor, Zone::Host),
            Some(anchor + 300_000)
        );
        assert_eq!(
            s.next_after(anchor + 300_000 + 17, anchor, Zone::Host),
            Some(anchor + 600_000)
        );
        assert_eq!(parse_duration_ms("1h30m").unwrap(), 5_400_000);
    }

    /// Found while writing the fuzz targets: arithmetic that overflowed (a panic in debug
    /// builds, a wrapped, wrong time in release) on huge steps and intervals.
    #[test]
    fn huge_steps_and_intervals_do_not_overflow() {
        assert_eq!(translate("0 9 * * 1/4294967295").unwrap(), ["0 0 9 * * 2"]);
        let s = Schedule::parse("every 9223372036854775807ms").unwrap();
        assert_eq!(
            s.next_after(1_800_000_000_000, 1_700_000_000_000, Zone::Host),
            None
        );
        assert_eq!(s.next_after(i64::MAX, i64::MIN, Zone::Host), None);
    }

    #[test]
    fn at_fires_once() {
        let s = Schedule::parse("at 2030-01-01T09:00:00Z").unwrap();
        let t = s.next_after(0, 0, Zone::Host).unwrap();
        assert_eq!(s.next_after(t, 0, Zone::Host), None);
    }

    /// Fires of `expr` in `tz` between two UTC instants.
    fn fires(expr: &str, tz: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
        let s = Schedule::parse(expr).unwrap();
        let zone = Zone::parse(Some(tz)).unwrap();
        let mut out = Vec::new();
        let mut t = from.timestamp_millis();
        while let Some(next) = s.next_after(t, 0, zone) {
            if next > to.timestamp_millis() {
                break;
            }
            let at = DateTime::<Utc>::from_timestamp_millis(next).unwrap();
            out.push(at.to_rfc3339());
            t = next;
        }
        out
    }

    #[test]
    fn a_local_time_skipped_or_repeated_by_dst_fires_once() {
        // New York springs forward on 2026-03-08 (02:00 -> 03:00 local, 07:00 UTC):
        // 02:30 does not exist that day and fires once, at 03:00 EDT.
        let spring = fires(
            "30 2 * * *",
            "America/New_York",
            Utc.with_ymd_and_hms(2026, 3, 7, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 9, 12, 0, 0).unwrap(),
        );
        assert_eq!(
            spring,
            [
                "2026-03-07T07:30:00+00:00",
                "2026-03-08T07:00:00+00:00",
                "2026-03-09T06:30:00+00:00"
            ]
        );
        // It falls back on 2026-11-01 (02:00 EDT -> 01:00 EST): 01:30 happens twice, fires once.
        let fall = fires(
            "30 1 * * *",
            "America/New_York",
            Utc.with_ymd_and_hms(2026, 10, 31, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 2, 12, 0, 0).unwrap(),
        );
        assert_eq!(
            fall,
            [
                "2026-10-31T05:30:00+00:00",
                "2026-11-01T05:30:00+00:00",
                "2026-11-02T06:30:00+00:00"
            ]
        );
        // Every 20 minutes through the repeated hour: each wall time once.
        let repeated = fires(
            "*/20 1 * * *",
            "America/New_York",
            Utc.with_ymd_and_hms(2026, 11, 1, 4, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap(),
        );
        assert_eq!(repeated.len(), 3, "{repeated:?}");
    }
}
