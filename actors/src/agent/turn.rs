//! One agent turn: persona + history + message → provider → streamed text and tool calls →
//! tool results → ... → the final reply, within a tool-iteration limit.

use actix::Recipient;
use serde_json::json;
use tokio::sync::oneshot;

use std::sync::Arc;
use std::time::Instant;

use super::delta_batch::{DeltaBatch, FLUSH_EVERY};
use super::{AgentSettings, RunOutcome, RunStatus};
use crate::attachments::files;
use crate::messages::{RunId, SessionKey, TurnEvent, TurnEventKind};
use crate::provider::{ChatMessage, ChatRequest, StreamDelta, Usage};
use crate::store::turns::{StoredMessage, ToolMeta, ToolStep};
use crate::tools::{self, ToolContext};

/// Everything one run needs.
pub struct TurnInput {
    /// Run id.
    pub run_id: RunId,
    /// Session key.
    pub session_key: SessionKey,
    /// The user's message.
    pub input: String,
    /// Earlier transcript, oldest first.
    pub history: Vec<StoredMessage>,
    /// Where events go.
    pub events: Recipient<TurnEvent>,
    /// Tool context.
    pub tools: ToolContext,
    /// Appended to the persona for this turn.
    pub extra_system_prompt: Option<String>,
    /// Overrides the agent's model for this turn.
    pub model: Option<String>,
    /// Files attached to the user's message.
    pub attachments: Vec<crate::attachments::AttachmentRef>,
}

/// The system prompt of a turn: the persona, then the client's extra prompt.
pub fn system_prompt(persona: Option<&str>, extra: Option<&str>) -> Option<String> {
    let parts: Vec<&str> = [persona, extra]
        .into_iter()
        .flatten()
        .filter(|p| !p.trim().is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

/// [`run`], ended with an error if it has not finished within `timeout`.
pub async fn run_within(
    timeout: Option<std::time::Duration>,
    settings: Arc<AgentSettings>,
    turn: TurnInput,
    abort: oneshot::Receiver<()>,
) -> RunOutcome {
    // The steps and the streamed text are kept outside the run's future: a run cut by its
    // timeout still reports the tool calls it made and the text it streamed.
    let mut steps = Vec::new();
    let batch = DeltaBatch::default();
    let mut outcome = match timeout {
        None => run(settings, turn, abort, &mut steps, &batch).await,
        Some(limit) => {
            match tokio::time::timeout(limit, run(settings, turn, abort, &mut steps, &batch)).await
            {
                Ok(outcome) => outcome,
                Err(_) => RunOutcome::failed(format!(
                    "the run did not finish within its timeout of {} ms",
                    limit.as_millis()
                )),
            }
        }
    };
    outcome.tool_steps = steps;
    // What was streamed but not sent yet goes with the end (see `delta_batch`).
    outcome.unsent_deltas = batch.take_all(Instant::now());
    outcome
}

fn outcome(
    status: RunStatus,
    text: String,
    error: Option<String>,
    usage: Usage,
    settings: &AgentSettings,
) -> RunOutcome {
    let cost_usd = settings
        .price
        .map(|(input, output)| {
            (usage.input_tokens as f64 * input + usage.output_tokens as f64 * output) / 1_000_000.0
        })
        .unwrap_or(0.0);
    let (text, attachments) = match (status, marker_roots(settings)) {
        (RunStatus::Ok, Some(roots)) => crate::attachments::markers::extract(&text, &roots),
        _ => (text, Vec::new()),
    };
    RunOutcome {
        status,
        text,
        error,
        usage,
        cost_usd,
        attachments,
        tool_steps: Vec::new(),
        unsent_deltas: Vec::new(),
    }
}

/// Where the agent's reply markers may point: its folder and the uploads dir.
fn marker_roots(settings: &AgentSettings) -> Option<crate::attachments::markers::MarkerRoots> {
    let memory_dir = settings.memory_dir.clone()?;
    Some(crate::attachments::markers::MarkerRoots {
        state_dir: settings.state_dir.clone()?,
        agent_dir: memory_dir.parent()?.to_path_buf(),
        memory_dir,
    })
}

/// Runs the turn until a final answer, an error, the iteration limit or an abort; each tool
/// call and its result is added to `steps` as it completes. Streamed text goes through
/// `batch`: sent as deltas while the provider's call waits, and before each tool event;
/// what is left when it returns is the caller's to send with the end.
async fn run(
    settings: Arc<AgentSettings>,
    turn: TurnInput,
    mut abort: oneshot::Receiver<()>,
    steps: &mut Vec<ToolStep>,
    batch: &DeltaBatch,
) -> RunOutcome {
    let (run_id, session_key) = (turn.run_id.clone(), turn.session_key.clone());
    let events = turn.events.clone();
    let send = move |kind| {
        events.do_send(TurnEvent {
            run_id: run_id.clone(),
            session_key: session_key.clone(),
            kind,
        })
    };
    let mut messages: Vec<ChatMessage> = turn
        .history
        .iter()
        .filter_map(|m| {
            let text = format!("{}{}", m.text, files::history_note(&m.attachments));
            match m.role.as_str() {
                "user" => Some(ChatMessage::User(text)),
                "assistant" => Some(ChatMessage::Assistant {
                    text,
                    tool_calls: Vec::new(),
                }),
                _ => None,
            }
        })
        .collect();
    let (input, images) = files::model_input(
        &turn.input,
        &turn.attachments,
        settings.transcription.as_deref(),
    )
    .await;
    messages.push(ChatMessage::User(input));
    let mut request = ChatRequest {
        model: turn
            .model
            .clone()
            .unwrap_or_else(|| settings.summary.model.clone()),
        system: system_prompt(
            settings.persona.as_deref(),
            turn.extra_system_prompt.as_deref(),
        ),
        messages,
        tools: tools::specs(&settings.tools),
        temperature: settings.temperature,
        max_tokens: settings.max_tokens,
        images,
    };
    let mut usage = Usage::default();
    let mut text = String::new();
    // Every provider's stream goes through the batch (see `delta_batch`).
    let send_all = |batches: Vec<String>| {
        for text in batches {
            send(TurnEventKind::Delta(text));
        }
    };
    let flush = || send_all(batch.take_all(Instant::now()));
    let builtin_tools = request.tools.len();
    for _ in 0..settings.max_iterations.max(1) {
        // MCP servers come and go (restarts, reloads): their tools are listed afresh for
        // every model call.
        request.tools.truncate(builtin_tools);
        request
            .tools
            .extend(crate::mcp::tool_specs(&settings.summary.id).await);
        let step = {
            let mut on_delta = |d: StreamDelta| match d {
                StreamDelta::Text(t) => batch.push(&t, Instant::now()),
                StreamDelta::ToolStarted { name } => {
                    flush();
                    send(TurnEventKind::Tool(
                        json!({ "phase": "start", "name": name }),
                    ))
                }
            };
            let call = settings.provider.complete(&request, &mut on_delta);
            tokio::pin!(call);
            // Each time the call has to wait, the text it streamed that is due goes out; a
            // call that ends without waiting leaves it for the end.
            let mut call = std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
                std::task::Poll::Pending => {
                    send_all(batch.take_due());
                    std::task::Poll::Pending
                }
                ready => ready,
            });
            // The first tick is one period away, and the call is polled first: a call that
            // ends at once (echo) never arms the timer, so it costs no timer wake-up.
            let first_tick = tokio::time::Instant::now() + FLUSH_EVERY;
            let mut tick = tokio::time::interval_at(first_tick, FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    r = &mut call => break r,
                    _ = tick.tick() => flush(),
                    _ = &mut abort => {
                        return outcome(RunStatus::Aborted, text, Some("aborted".into()), usage, &settings);
                    }
                }
            }
        };
        let completion = match step {
            Ok(c) => c,
            Err(e) => {
                return outcome(
                    RunStatus::Error,
                    text,
                    Some(e.to_string()),
                    usage,
                    &settings,
                );
            }
        };
        usage += completion.usage;
        text.push_str(&completion.text);
        if completion.tool_calls.is_empty() {
            return outcome(RunStatus::Ok, text, None, usage, &settings);
        }
        // More is coming: what this call streamed goes out before its tool events.
        flush();
        request.messages.push(ChatMessage::Assistant {
            text: completion.text,
            tool_calls: completion.tool_calls.clone(),
        });
        for call in completion.tool_calls {
            send(TurnEventKind::Tool(
                json!({ "phase": "call", "name": call.name, "callId": call.id, "arguments": call.arguments }),
            ));
            let result = tools::execute(&turn.tools, &call).await;
            let (content, is_error) = match result {
                Ok(c) => (c, false),
                Err(e) => (json!({ "error": e }).to_string(), true),
            };
            send(TurnEventKind::Tool(
                json!({ "phase": "result", "name": call.name, "callId": call.id, "result": content, "isError": is_error }),
            ));
            let meta = ToolMeta {
                name: call.name.clone(),
                call_id: call.id.clone(),
                is_error,
            };
            let ts = crate::now_ms() as i64;
            steps.push(ToolStep::new(meta, &call.arguments, &content, ts));
            request.messages.push(ChatMessage::ToolResult {
                call_id: call.id,
                name: call.name,
                content,
                is_error,
            });
        }
    }
    let why = format!(
        "the tool loop reached its limit of {} model calls without a final answer",
        settings.max_iterations
    );
    outcome(RunStatus::Error, text, Some(why), usage, &settings)
}

#[cfg(test)]
mod tests {
    use super::system_prompt;

    #[test]
    fn the_extra_system_prompt_follows_the_persona() {
        assert_eq!(system_prompt(None, None), None);
        assert_eq!(system_prompt(Some("P"), None).as_deref(), Some("P"));
        assert_eq!(system_prompt(None, Some("X")).as_deref(), Some("X"));
        assert_eq!(
            system_prompt(Some("P"), Some("X")).as_deref(),
            Some("P\n\nX")
        );
        assert_eq!(system_prompt(Some("P"), Some("  ")).as_deref(), Some("P"));
    }
}
