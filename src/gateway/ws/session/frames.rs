//! The OpenClaw frames a run event becomes at the WebSocket edge: `agent` events (streams
//! `lifecycle`, `assistant`, `tool`) and `chat` events (`delta`, then `final` | `error` |
//! `aborted`). The one place these payloads are made.

use serde_json::{Value, json};

use troupe_actors::messages::{RunEvent, RunStatus, SessionEvent};

/// One event frame's name and its payload serialized as JSON text.
pub type RenderedEvent = (&'static str, Box<str>);

/// The events a run event is sent as, serialized once for every connection following the
/// session (the queue shares one [`RenderCache`](troupe_actors::messages::RenderCache) among
/// the copies it sends); each connection only wraps them in a frame with its own `seq`.
pub fn rendered(ev: &SessionEvent) -> std::borrow::Cow<'_, [RenderedEvent]> {
    let serialize = || -> Box<[RenderedEvent]> {
        render(ev)
            .into_iter()
            .map(|(name, payload)| (name, payload.to_string().into_boxed_str()))
            .collect()
    };
    match ev.rendered.get_or_render(serialize) {
        Some(cached) => std::borrow::Cow::Borrowed(&cached[..]),
        None => std::borrow::Cow::Owned(serialize().into_vec()),
    }
}

/// The text of an `event` frame around a payload that is already JSON: the frame
/// `protocol::EventFrame` serializes to, without parsing the payload again.
pub fn event_frame(event: &'static str, payload: &str, seq: u64) -> String {
    format!(r#"{{"type":"event","event":"{event}","payload":{payload},"seq":{seq}}}"#)
}

/// [`event_frame`] with the state versions after the event (`presence`, `health`).
pub fn event_frame_versioned(
    event: &'static str,
    payload: &str,
    seq: u64,
    version: troupe_actors::event_bus::StateVersion,
) -> String {
    format!(
        r#"{{"type":"event","event":"{event}","payload":{payload},"seq":{seq},"stateVersion":{{"presence":{},"health":{}}}}}"#,
        version.presence, version.health
    )
}

/// The events (name, payload) a run event is sent as, in order.
pub fn render(ev: &SessionEvent) -> Vec<(&'static str, Value)> {
    let (run_id, key, seq, ts) = (&*ev.run_id, &*ev.session_key, ev.seq, ev.ts);
    match &ev.event {
        RunEvent::Started => vec![(
            "agent",
            json!({ "runId": run_id, "sessionKey": key, "stream": "lifecycle", "data": { "phase": "start" }, "seq": seq, "ts": ts }),
        )],
        RunEvent::Delta(delta) => vec![
            (
                "agent",
                json!({ "runId": run_id, "sessionKey": key, "stream": "assistant", "data": { "delta": &**delta }, "seq": seq, "ts": ts }),
            ),
            (
                "chat",
                json!({ "runId": run_id, "sessionKey": key, "state": "delta", "delta": &**delta, "seq": seq, "ts": ts }),
            ),
        ],
        RunEvent::Tool(data) => vec![(
            "agent",
            json!({ "runId": run_id, "sessionKey": key, "stream": "tool", "data": &**data, "seq": seq, "ts": ts }),
        )],
        RunEvent::Ended(end) => {
            let phase = if end.status == RunStatus::Ok {
                "end"
            } else {
                "error"
            };
            let lifecycle = json!({
                "runId": run_id, "sessionKey": key, "stream": "lifecycle",
                "data": { "phase": phase, "status": end.status, "error": end.error }, "ts": ts,
            });
            let mut message = json!({ "role": "assistant", "text": end.summary });
            if !end.attachments.is_empty() {
                message["attachments"] = json!(end.attachments);
            }
            let chat = match end.status {
                RunStatus::Ok => {
                    json!({ "runId": run_id, "sessionKey": key, "state": "final", "message": message, "ts": ts })
                }
                RunStatus::Aborted => {
                    json!({ "runId": run_id, "sessionKey": key, "state": "aborted", "message": message, "ts": ts })
                }
                _ => {
                    json!({ "runId": run_id, "sessionKey": key, "state": "error", "errorMessage": end.error, "ts": ts })
                }
            };
            vec![("agent", lifecycle), ("chat", chat)]
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use troupe_actors::session_queue::RunSummary;

    fn ev(event: RunEvent) -> SessionEvent {
        SessionEvent {
            run_id: "r1".into(),
            session_key: "agent:main:main".into(),
            seq: 3,
            ts: 7,
            event,
            missed: 0,
            rendered: Default::default(),
        }
    }

    #[test]
    fn copies_of_one_event_share_one_serialization_equal_to_the_frames() {
        let first = ev(RunEvent::Delta("hé \"quoted\"\n".into()));
        let second = first.clone();
        let (a, b) = (rendered(&first), rendered(&second));
        assert!(matches!(a, std::borrow::Cow::Borrowed(_)));
        assert!(
            std::ptr::eq(a.as_ptr(), b.as_ptr()),
            "serialized once, shared"
        );
        let values = render(&first);
        assert_eq!(a.len(), values.len());
        for ((name, text), (value_name, value)) in a.iter().zip(&values) {
            assert_eq!(name, value_name);
            let frame = event_frame(name, text, 41);
            let parsed: Value = serde_json::from_str(&frame).expect("frame is JSON");
            let typed = crate::gateway::ws::protocol::EventFrame {
                kind: "event",
                event: name,
                payload: Some(value),
                seq: Some(41),
                state_version: None,
            };
            assert_eq!(parsed, serde_json::to_value(&typed).expect("serializes"));
        }
    }

    #[test]
    fn a_versioned_frame_is_the_typed_frame() {
        let payload = json!({ "presence": [{ "connId": "c\"1" }], "count": 1 });
        let version = troupe_actors::event_bus::StateVersion {
            presence: 3,
            health: 7,
        };
        let frame = event_frame_versioned("presence", &payload.to_string(), 9, version);
        let parsed: Value = serde_json::from_str(&frame).expect("frame is JSON");
        let typed = crate::gateway::ws::protocol::EventFrame {
            kind: "event",
            event: "presence",
            payload: Some(&payload),
            seq: Some(9),
            state_version: Some(version),
        };
        assert_eq!(parsed, serde_json::to_value(&typed).expect("serializes"));
    }

    #[test]
    fn a_delta_is_an_assistant_stream_event_then_a_chat_delta() {
        let frames = render(&ev(RunEvent::Delta("hi".into())));
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].0, "agent");
        assert_eq!(frames[0].1["stream"], "assistant");
        assert_eq!(frames[0].1["data"]["delta"], "hi");
        assert_eq!(frames[1].1["state"], "delta");
        assert_eq!(frames[1].1["seq"], 3);
    }

    #[test]
    fn an_end_is_a_lifecycle_event_then_the_chat_state_of_its_status() {
        for (status, state, phase) in [
            (RunStatus::Ok, "final", "end"),
            (RunStatus::Aborted, "aborted", "error"),
            (RunStatus::Error, "error", "error"),
        ] {
            let end = RunSummary {
                run_id: "r1".into(),
                status,
                summary: "text".into(),
                error: (status != RunStatus::Ok).then(|| "why".to_string()),
                attachments: Vec::new(),
            };
            let frames = render(&ev(RunEvent::Ended(Arc::new(end))));
            assert_eq!(frames[0].1["data"]["phase"], phase);
            assert_eq!(frames[1].1["state"], state);
        }
    }
}
