//! A session's FIFO lane: at most one active run, then the waiting entries in arrival order.
//! Pure data, unit tested; the actor does the I/O.

use std::collections::VecDeque;

use crate::messages::{AgentId, QueueMode, RunId, TurnOptions};

/// A submitted turn waiting in a lane.
#[derive(Debug, Clone)]
pub struct Waiting {
    /// Arrival ticket (order of submission at the session-queue).
    pub ticket: u64,
    /// Run id once the store has accepted it (the entry cannot start before).
    pub run_id: Option<RunId>,
    /// Agent to run it.
    pub agent_id: AgentId,
    /// User message.
    pub input: String,
    /// Queue mode.
    pub mode: QueueMode,
    /// Per-turn settings (also stored with the run, for a restart).
    pub options: TurnOptions,
}

/// The run a lane is executing.
#[derive(Debug, Clone)]
pub struct Active {
    /// The run that carries the turn.
    pub run_id: RunId,
    /// Runs coalesced into it (collect mode).
    pub carried: Vec<RunId>,
    /// Agent running it.
    pub agent_id: AgentId,
    /// Per-run event sequence.
    pub seq: u64,
}

/// One session's lane.
#[derive(Debug, Default)]
pub struct Lane {
    /// The run in progress.
    pub active: Option<Active>,
    /// Turns waiting, oldest first.
    pub waiting: VecDeque<Waiting>,
}

impl Lane {
    /// True when nothing runs and the oldest waiting entry is accepted.
    pub fn can_start(&self) -> bool {
        self.active.is_none() && self.waiting.front().is_some_and(|w| w.run_id.is_some())
    }

    /// True when the lane holds nothing.
    pub fn is_idle(&self) -> bool {
        self.active.is_none() && self.waiting.is_empty()
    }

    /// Runs ahead of the entry with this ticket (the active run counts).
    pub fn position(&self, ticket: u64) -> usize {
        let ahead = self
            .waiting
            .iter()
            .take_while(|w| w.ticket != ticket)
            .count();
        ahead + usize::from(self.active.is_some())
    }

    /// Takes the next turn to run: the oldest entry, or in collect mode the oldest and every
    /// accepted collect entry right behind it (coalesced into one input).
    pub fn take_next(&mut self) -> Option<(Waiting, Vec<RunId>)> {
        if !self.can_start() {
            return None;
        }
        let mut first = self.waiting.pop_front()?;
        let mut carried = Vec::new();
        if first.mode == QueueMode::Collect {
            while let Some(next) = self.waiting.front() {
                let joinable = next.mode == QueueMode::Collect && next.agent_id == first.agent_id;
                let Some(id) = next.run_id.clone().filter(|_| joinable) else {
                    break;
                };
                let Some(next) = self.waiting.pop_front() else {
                    break;
                };
                first.input.push_str("\n\n");
                first.input.push_str(&next.input);
                // The coalesced messages' files come along.
                first.options.attachments.extend(next.options.attachments);
                carried.push(id);
            }
        }
        Some((first, carried))
    }

    /// Removes waiting entries (all, or all but the one with `keep` ticket); returns the run
    /// ids of those that had been accepted.
    pub fn clear_waiting(&mut self, keep: Option<u64>) -> Vec<RunId> {
        let mut dropped = Vec::new();
        self.waiting.retain(|w| {
            if Some(w.ticket) == keep {
                return true;
            }
            if let Some(id) = &w.run_id {
                dropped.push(id.clone());
            }
            false
        });
        dropped
    }

    /// Removes the entries that arrived before `ticket` (an interrupt supersedes older
    /// turns, never newer ones); returns the run ids of those that had been accepted.
    pub fn clear_before(&mut self, ticket: u64) -> Vec<RunId> {
        let mut dropped = Vec::new();
        self.waiting.retain(|w| {
            if w.ticket >= ticket {
                return true;
            }
            if let Some(id) = &w.run_id {
                dropped.push(id.clone());
            }
            false
        });
        dropped
    }

    /// Removes one waiting run by id; true if it was there.
    pub fn remove_run(&mut self, run_id: &RunId) -> bool {
        let before = self.waiting.len();
        self.waiting.retain(|w| w.run_id.as_ref() != Some(run_id));
        before != self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ticket: u64, mode: QueueMode, accepted: bool) -> Waiting {
        Waiting {
            ticket,
            run_id: accepted.then(|| RunId::from(format!("r{ticket}"))),
            agent_id: "main".into(),
            input: format!("m{ticket}"),
            mode,
            options: TurnOptions::default(),
        }
    }

    #[test]
    fn an_entry_not_yet_accepted_blocks_the_ones_behind_it() {
        let mut lane = Lane::default();
        lane.waiting.push_back(entry(1, QueueMode::Followup, false));
        lane.waiting.push_back(entry(2, QueueMode::Followup, true));
        assert!(!lane.can_start());
        assert!(lane.take_next().is_none());
        lane.waiting[0].run_id = Some(RunId::from("r1"));
        assert_eq!(lane.take_next().map(|(w, _)| w.ticket), Some(1));
    }

    #[test]
    fn followup_runs_one_at_a_time_in_order() {
        let mut lane = Lane::default();
        for t in 1..=3 {
            lane.waiting.push_back(entry(t, QueueMode::Followup, true));
        }
        let (first, carried) = lane.take_next().expect("first");
        assert_eq!((first.ticket, carried.len()), (1, 0));
        lane.active = Some(Active {
            run_id: "r1".into(),
            carried,
            agent_id: "main".into(),
            seq: 0,
        });
        assert!(lane.take_next().is_none(), "one active run per session");
        assert_eq!(lane.position(3), 2);
    }

    #[test]
    fn collect_coalesces_the_waiting_collect_entries() {
        let mut lane = Lane::default();
        lane.waiting.push_back(entry(1, QueueMode::Collect, true));
        let mut second = entry(2, QueueMode::Collect, true);
        let file = crate::attachments::AttachmentRef {
            kind: crate::attachments::AttachmentKind::File,
            mime_type: "text/plain".into(),
            file_name: "a.txt".into(),
            path: "uploads/x/a.txt".into(),
            size: 1,
            file: "/state/uploads/x/a.txt".into(),
        };
        second.options.attachments.push(file.clone());
        lane.waiting.push_back(second);
        lane.waiting.push_back(entry(3, QueueMode::Followup, true));
        let (first, carried) = lane.take_next().expect("collect");
        assert_eq!(first.input, "m1\n\nm2");
        assert_eq!(
            first.options.attachments,
            vec![file],
            "m2's file comes along"
        );
        assert_eq!(carried, vec![RunId::from("r2")]);
        assert_eq!(lane.waiting.len(), 1);
    }

    #[test]
    fn clear_before_keeps_the_interrupting_entry_and_newer_ones() {
        let mut lane = Lane::default();
        for t in 1..=4 {
            lane.waiting
                .push_back(entry(t, QueueMode::Followup, t != 2));
        }
        assert_eq!(lane.clear_before(3), vec![RunId::from("r1")]);
        assert_eq!(
            lane.waiting.iter().map(|w| w.ticket).collect::<Vec<_>>(),
            vec![3, 4]
        );
    }

    #[test]
    fn clear_waiting_keeps_the_interrupting_entry() {
        let mut lane = Lane::default();
        for t in 1..=3 {
            lane.waiting.push_back(entry(t, QueueMode::Followup, true));
        }
        let dropped = lane.clear_waiting(Some(3));
        assert_eq!(dropped, vec![RunId::from("r1"), RunId::from("r2")]);
        assert_eq!(lane.waiting.len(), 1);
        assert!(lane.remove_run(&RunId::from("r3")));
        assert!(lane.is_idle());
    }
}
