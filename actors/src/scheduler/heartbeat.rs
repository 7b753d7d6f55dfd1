//! Agent heartbeats (DESIGN §9): every `every`, within `active_hours` (host local time), a
//! turn with `message` in `agent:<id>:main`. A reply of exactly `NO_REPLY` delivers
//! nothing; otherwise the reply goes to clients as a `heartbeat` event. A heartbeat never
//! waits behind another: while one is active, the next is skipped.

use chrono::{Local, Timelike};

/// The heartbeat of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatSettings {
    /// The agent.
    pub agent_id: String,
    /// Interval, ms.
    pub every_ms: i64,
    /// The message of each heartbeat turn.
    pub message: String,
    /// Minutes after local midnight between which heartbeats run (`None`: always);
    /// `start > end` wraps past midnight.
    pub active_hours: Option<(u32, u32)>,
}

/// The reply that means "nothing to say".
pub const NO_REPLY: &str = "NO_REPLY";

/// Parses `HH:MM-HH:MM` into minutes after midnight.
pub fn parse_active_hours(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{text:?} is not a range such as \"08:00-22:00\"");
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let minutes = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
    };
    Ok((minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?))
}

impl HeartbeatSettings {
    /// Whether a heartbeat may run now (host local time).
    pub fn active_now(&self) -> bool {
        let now = Local::now();
        self.active_at(now.hour() * 60 + now.minute())
    }

    /// Whether a heartbeat may run at `minute` after local midnight.
    pub fn active_at(&self, minute: u32) -> bool {
        match self.active_hours {
            None => true,
            Some((start, end)) if start <= end => minute >= start && minute < end,
            Some((start, end)) => minute >= start || minute < end,
        }
    }
}

/// Whether a reply delivers nothing.
pub fn is_no_reply(reply: &str) -> bool {
    reply.trim() == NO_REPLY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_hours_parse_and_wrap_past_midnight() {
        let mut hb = HeartbeatSettings {
            agent_id: "main".into(),
            every_ms: 1000,
            message: "hi".into(),
            active_hours: Some(parse_active_hours("08:00-22:00").unwrap()),
        };
        assert!(hb.active_at(8 * 60));
        assert!(!hb.active_at(22 * 60));
        assert!(!hb.active_at(3 * 60));
        hb.active_hours = Some(parse_active_hours("22:00-06:30").unwrap());
        assert!(hb.active_at(23 * 60));
        assert!(hb.active_at(6 * 60));
        assert!(!hb.active_at(12 * 60));
        assert!(parse_active_hours("8-22").is_err());
        assert!(is_no_reply("NO_REPLY\n"));
        assert!(!is_no_reply("NO_REPLY please"));
    }
}
