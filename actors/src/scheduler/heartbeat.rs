//! Agent heartbeats (DESIGN §9): every `every`, within `active_hours` (host local time), a
//! turn with `message` in `agent:<id>:main`. A reply of exactly `NO_REPLY` delivers
//! nothing; otherwise the reply goes to clients as a `heartbeat` event. A heartbeat never
//! waits behind another: while one is active, the next is skipped.

use actix::prelude::*;
use chrono::{Local, Timelike};
use serde_json::json;

use super::SchedulerActor;
use super::fire::{Turn, run_turn};
use crate::messages::{AgentId, SessionKey};

/// The heartbeat of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatSettings {
    /// The agent.
    pub agent_id: AgentId,
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

/// A heartbeat as the scheduler runs it.
pub(super) struct HeartbeatState {
    pub(super) settings: HeartbeatSettings,
    pub(super) next: i64,
    pub(super) active: bool,
}

impl SchedulerActor {
    pub(super) fn beat(&mut self, i: usize, now: i64, ctx: &mut Context<Self>) {
        let hb = &mut self.heartbeats[i];
        let every = hb.settings.every_ms.max(1);
        let scheduled = hb.next;
        hb.next = scheduled + ((now - scheduled) / every + 1) * every;
        if hb.settings.active_now() {
            self.start_beat(i, format!("{scheduled}"), ctx);
        }
    }

    /// Starts heartbeat `i` unless one is active already; false when it was.
    fn start_beat(&mut self, i: usize, key: String, ctx: &mut Context<Self>) -> bool {
        let Some(hb) = self.heartbeats.get_mut(i) else {
            return false;
        };
        let agent_id = hb.settings.agent_id.clone();
        if hb.active {
            tracing::debug!(agent_id = %agent_id, "heartbeat skipped: the previous one is still active");
            return false;
        }
        hb.active = true;
        let turn = Turn {
            session_key: SessionKey(format!("agent:{agent_id}:main")),
            agent_id: agent_id.clone(),
            text: hb.settings.message.clone(),
            idempotency_key: format!("heartbeat:{agent_id}:{key}"),
        };
        let root = self.root.clone();
        let work = async move { run_turn(&root, turn, |_| {}).await };
        ctx.spawn(work.into_actor(self).map(move |result, act, _| {
            if let Some(hb) = act.heartbeats.get_mut(i) {
                hb.active = false;
            }
            let payload = match result {
                Ok(s) if s.status == crate::messages::RunStatus::Ok && is_no_reply(&s.summary) => {
                    json!({"agentId": agent_id, "runId": s.run_id, "status": s.status, "delivered": false})
                }
                Ok(s) if s.status == crate::messages::RunStatus::Ok => {
                    json!({"agentId": agent_id, "runId": s.run_id, "status": s.status, "delivered": true, "text": s.summary})
                }
                Ok(s) => {
                    json!({"agentId": agent_id, "runId": s.run_id, "status": s.status, "delivered": false, "error": s.error})
                }
                // The one place a failed heartbeat's error becomes text: its event.
                Err(why) => {
                    json!({"agentId": agent_id, "status": "error", "delivered": false, "error": why.to_string()})
                }
            };
            crate::event_bus::publish("heartbeat", payload);
        }));
        true
    }
}

/// Runs an agent's heartbeat now (`POST /hooks/wake`), outside its active hours too;
/// `None` wakes every agent that has one. Answers the agents woken (one already running is
/// not started twice).
#[derive(Message, Debug)]
#[rtype(result = "Vec<AgentId>")]
pub struct WakeHeartbeat {
    /// The agent, or all.
    pub agent_id: Option<AgentId>,
}

impl Handler<WakeHeartbeat> for SchedulerActor {
    type Result = Vec<AgentId>;
    fn handle(&mut self, msg: WakeHeartbeat, ctx: &mut Self::Context) -> Vec<AgentId> {
        let mut woken = Vec::new();
        for i in 0..self.heartbeats.len() {
            let agent = self.heartbeats[i].settings.agent_id.clone();
            if msg.agent_id.as_ref().is_some_and(|a| *a != agent) {
                continue;
            }
            let key = format!("wake:{}", uuid::Uuid::new_v4());
            if self.start_beat(i, key, ctx) {
                woken.push(agent);
            }
        }
        woken
    }
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
