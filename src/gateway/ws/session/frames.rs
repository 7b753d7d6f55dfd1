//! The OpenClaw frames a run event becomes at the WebSocket edge: `agent` events (streams
//! `lifecycle`, `assistant`, `tool`) and `chat` events (`delta`, then `final` | `error` |
//! `aborted`). The one place these payloads are made.

use serde::Serialize;

use troupe_actors::messages::{RunEvent, RunStatus, SessionEvent};

/// One event frame's name and its payload serialized as JSON text.
pub type RenderedEvent = (&'static str, Box<str>);

/// The events a run event is sent as, serialized once for every connection following the
/// session (the queue shares one [`RenderCache`](troupe_actors::messages::RenderCache) among
/// the copies it sends); each connection only wraps them in a frame with its own `seq`.
pub fn rendered(ev: &SessionEvent) -> std::borrow::Cow<'_, [RenderedEvent]> {
    let serialize = || -> Box<[RenderedEvent]> {
        serialize(ev)
            .unwrap_or_else(|e| {
                // Not expected (every payload is plain data): the event is dropped, and
                // the client sees a gap in `seq` as for a missed event.
                tracing::error!(run_id = %ev.run_id, error = %e, "run event did not serialize");
                Vec::new()
            })
            .into_boxed_slice()
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

/// An `agent` event's payload. Fields in the order `json!` (a sorted map) put them, so
/// the text is the same as when the payloads were built as `Value`s.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AgentPayload<'a, D> {
    data: D,
    run_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    session_key: &'a str,
    stream: &'static str,
    ts: u64,
}

/// A `chat` event's payload (`delta`, `final` / `aborted` with the message, or `error`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChatPayload<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<ReplyMessage<'a>>,
    run_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    session_key: &'a str,
    state: &'static str,
    ts: u64,
}

/// The reply in a `final` / `aborted` chat event.
#[derive(Serialize)]
struct ReplyMessage<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    attachments: &'a [troupe_actors::attachments::AttachmentRef],
    role: &'static str,
    text: &'a str,
}

/// `data` of an `agent` lifecycle event.
#[derive(Serialize)]
struct Lifecycle<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Option<&'a str>>,
    phase: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<RunStatus>,
}

/// `data` of an `agent` assistant event.
#[derive(Serialize)]
struct AssistantDelta<'a> {
    delta: &'a str,
}

/// One event's payload as JSON text.
fn text(payload: &impl Serialize) -> Result<Box<str>, serde_json::Error> {
    serde_json::to_string(payload).map(String::into_boxed_str)
}

/// The events (name, payload as JSON text) a run event is sent as, in order: serialized
/// straight from the typed event, with no `Value` tree in between.
fn serialize(ev: &SessionEvent) -> Result<Vec<RenderedEvent>, serde_json::Error> {
    let (run_id, session_key, ts, seq) = (&*ev.run_id, &*ev.session_key, ev.ts, Some(ev.seq));
    let chat = ChatPayload {
        delta: None,
        error_message: None,
        message: None,
        run_id,
        seq: None,
        session_key,
        state: "",
        ts,
    };
    Ok(match &ev.event {
        RunEvent::Started => {
            let data = Lifecycle {
                error: None,
                phase: "start",
                status: None,
            };
            let payload = AgentPayload {
                data,
                run_id,
                seq,
                session_key,
                stream: "lifecycle",
                ts,
            };
            vec![("agent", text(&payload)?)]
        }
        RunEvent::Delta(delta) => {
            let data = AssistantDelta { delta };
            let payload = AgentPayload {
                data,
                run_id,
                seq,
                session_key,
                stream: "assistant",
                ts,
            };
            let chat = ChatPayload {
                delta: Some(delta),
                seq,
                state: "delta",
                ..chat
            };
            vec![("agent", text(&payload)?), ("chat", text(&chat)?)]
        }
        RunEvent::Tool(data) => {
            let payload = AgentPayload {
                data: &**data,
                run_id,
                seq,
                session_key,
                stream: "tool",
                ts,
            };
            vec![("agent", text(&payload)?)]
        }
        RunEvent::Ended(end) => {
            let data = Lifecycle {
                error: Some(end.error.as_deref()),
                phase: if end.status == RunStatus::Ok {
                    "end"
                } else {
                    "error"
                },
                status: Some(end.status),
            };
            let lifecycle = AgentPayload {
                data,
                run_id,
                seq: None,
                session_key,
                stream: "lifecycle",
                ts,
            };
            let message = ReplyMessage {
                attachments: &end.attachments,
                role: "assistant",
                text: &end.summary,
            };
            let chat = match end.status {
                RunStatus::Ok => ChatPayload {
                    message: Some(message),
                    state: "final",
                    ..chat
                },
                RunStatus::Aborted => ChatPayload {
                    message: Some(message),
                    state: "aborted",
                    ..chat
                },
                _ => ChatPayload {
                    error_message: Some(end.error.as_deref()),
                    state: "error",
                    ..chat
                },
            };
            vec![("agent", text(&lifecycle)?), ("chat", text(&chat)?)]
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;

    /// The payloads as `Value`s, built as they were before they were typed: the reference
    /// the typed serialization must match byte for byte.
    fn render(ev: &SessionEvent) -> Vec<(&'static str, Value)> {
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

    /// What the connection sends, parsed back.
    fn sent(ev: &SessionEvent) -> Vec<(&'static str, Value)> {
        rendered(ev)
            .iter()
            .map(|(name, text)| (*name, serde_json::from_str(text).expect("JSON")))
            .collect()
    }

    #[test]
    fn the_typed_payloads_are_the_value_built_ones() {
        let file = troupe_actors::attachments::AttachmentRef {
            kind: troupe_actors::attachments::AttachmentKind::Image,
            mime_type: "image/png".into(),
            file_name: "dot \"1\".png".into(),
            path: "uploads/u/dot.png".into(),
            size: 67,
            file: "/tmp/dot.png".into(),
        };
        let end = |status, error: Option<&str>, attachments: Vec<_>| {
            RunEvent::Ended(Arc::new(RunSummary {
                run_id: "r1".into(),
                status,
                summary: "réponse \"ok\"\n\u{1F600}".into(),
                error: error.map(str::to_string),
                attachments,
            }))
        };
        let events = [
            RunEvent::Started,
            RunEvent::Delta("hé \"quoted\"\n\t\u{7}".into()),
            RunEvent::Tool(Arc::new(
                json!({ "phase": "result", "name": "memory_read", "args": { "path": "a/b.md" }, "result": [1, 2.5, null] }),
            )),
            end(RunStatus::Ok, None, Vec::new()),
            end(RunStatus::Ok, None, vec![file.clone()]),
            end(
                RunStatus::Aborted,
                Some("aborted by chat.abort"),
                vec![file],
            ),
            end(RunStatus::Error, Some("provider: 500"), Vec::new()),
            end(RunStatus::Error, None, Vec::new()),
        ];
        for event in events {
            let ev = ev(event);
            let texts: Vec<(&str, String)> = rendered(&ev)
                .iter()
                .map(|(name, text)| (*name, text.to_string()))
                .collect();
            let reference: Vec<(&str, String)> = render(&ev)
                .into_iter()
                .map(|(name, value)| (name, value.to_string()))
                .collect();
            // The same JSON; the same bytes too, but for an attachment's own fields (in
            // their struct's order, where a `Value` sorted them).
            let parse = |all: &[(&str, String)]| -> Vec<(String, Value)> {
                all.iter()
                    .map(|(name, text)| (name.to_string(), serde_json::from_str(text).unwrap()))
                    .collect()
            };
            assert_eq!(parse(&texts), parse(&reference));
            if !texts.iter().any(|(_, text)| text.contains("attachments")) {
                assert_eq!(texts, reference);
            }
        }
    }

    #[test]
    fn a_delta_is_an_assistant_stream_event_then_a_chat_delta() {
        let frames = sent(&ev(RunEvent::Delta("hi".into())));
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
            let frames = sent(&ev(RunEvent::Ended(Arc::new(end))));
            assert_eq!(frames[0].1["data"]["phase"], phase);
            assert_eq!(frames[1].1["state"], state);
        }
    }
}
