//! The params of `agent` and `chat.send`: Troupe's core fields plus every other field of
//! OpenClaw's own schemas for them (`AgentParamsSchema`, `ChatSendParamsSchema`), so
//! OpenClaw clients work unchanged. Fields Troupe has a meaning for are honoured; the rest
//! are accepted and ignored (listed in docs/protocol.md). A field in neither schema is
//! refused, naming it.

use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::gateway::ws::protocol::ErrorShape;
use troupe_actors::messages::{QueueMode, TurnOptions};

/// A field accepted for OpenClaw compatibility and ignored: any JSON value.
type Ignored = Option<IgnoredAny>;

/// `chat.send`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ChatSendParams {
    pub session_key: String,
    pub message: String,
    pub idempotency_key: String,
    #[serde(default)]
    pub queue_mode: QueueMode,
    /// Must own `sessionKey` when given.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Ends the run with an error after this long (0 = no limit).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Refused when true: Troupe does not deliver to channels yet.
    #[serde(default)]
    pub deliver: Option<bool>,
    // Accepted and ignored (OpenClaw-internal or not built here).
    session_id: Ignored,
    mentions: Ignored,
    work_context: Ignored,
    intent: Ignored,
    thinking: Ignored,
    fast_mode: Ignored,
    fast_auto_on_seconds: Ignored,
    originating_channel: Ignored,
    originating_to: Ignored,
    originating_account_id: Ignored,
    originating_thread_id: Ignored,
    reply_to_id: Ignored,
    /// Files sent with the message (see [`troupe_actors::attachments`]).
    #[serde(default)]
    pub attachments: Option<Vec<troupe_actors::attachments::AttachmentParam>>,
    tool_bindings: Ignored,
    system_input_provenance: Ignored,
    system_provenance_receipt: Ignored,
    suppress_command_interpretation: Ignored,
    expected_leaf_entry_id: Ignored,
    expected_session_routing_contract: Ignored,
    expected_permission_mode: Ignored,
    expected_tool_overrides: Ignored,
}

/// `agent`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AgentParams {
    pub message: String,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub session_key: Option<String>,
    pub idempotency_key: String,
    /// Seconds; ends the run with an error after this long (0 = no limit).
    #[serde(default)]
    pub timeout: Option<u64>,
    /// Appended to the agent's persona for this turn.
    #[serde(default)]
    pub extra_system_prompt: Option<String>,
    /// Model override for this turn (needs `operator.admin`).
    #[serde(default)]
    pub model: Option<String>,
    /// Must be the agent's own provider when given (no cross-provider override).
    #[serde(default)]
    pub provider: Option<String>,
    /// Refused when true: Troupe does not deliver to channels yet.
    #[serde(default)]
    pub deliver: Option<bool>,
    // Accepted and ignored (OpenClaw-internal, or channel routing not built here).
    label: Ignored,
    to: Ignored,
    reply_to: Ignored,
    session_id: Ignored,
    expected_existing_session_id: Ignored,
    thinking: Ignored,
    /// Files sent with the message (see [`troupe_actors::attachments`]).
    #[serde(default)]
    pub attachments: Option<Vec<troupe_actors::attachments::AttachmentParam>>,
    channel: Ignored,
    reply_channel: Ignored,
    account_id: Ignored,
    reply_account_id: Ignored,
    thread_id: Ignored,
    group_id: Ignored,
    group_channel: Ignored,
    group_space: Ignored,
    best_effort_deliver: Ignored,
    lane: Ignored,
    cwd: Ignored,
    cleanup_bundle_mcp_on_run_end: Ignored,
    model_run: Ignored,
    prompt_mode: Ignored,
    bootstrap_context_mode: Ignored,
    bootstrap_context_run_kind: Ignored,
    acp_turn_source: Ignored,
    internal_runtime_handoff_id: Ignored,
    internal_execution_identity_retry: Ignored,
    internal_execution_identity_recovery_attempt: Ignored,
    exec_approval_followup_expected_session_id: Ignored,
    internal_events: Ignored,
    input_provenance: Ignored,
    suppress_prompt_persistence: Ignored,
    session_effects: Ignored,
    source_reply_delivery_mode: Ignored,
    disable_message_tool: Ignored,
    swarm_collector: Ignored,
    swarm_output_schema: Ignored,
    force_restart_safe_tools: Ignored,
    force_code_mode_tools: Ignored,
    voice_wake_trigger: Ignored,
}

fn no_delivery(deliver: Option<bool>) -> Result<(), ErrorShape> {
    if deliver == Some(true) {
        return Err(ErrorShape::invalid(
            "deliver: true is not supported yet: Troupe has no channel delivery; omit it or send false",
        )
        .with_detail("DELIVERY_UNSUPPORTED"));
    }
    Ok(())
}

/// The message's `attachments` checked and stored under `<state_dir>/uploads`.
fn attached(
    attachments: Option<&[troupe_actors::attachments::AttachmentParam]>,
    state_dir: &std::path::Path,
) -> Result<Vec<troupe_actors::attachments::AttachmentRef>, ErrorShape> {
    match attachments {
        None | Some([]) => Ok(Vec::new()),
        Some(list) => {
            troupe_actors::attachments::prepare(list, state_dir).map_err(ErrorShape::invalid)
        }
    }
}

fn limit(amount: Option<u64>, unit: fn(u64) -> Duration) -> Option<Duration> {
    amount.filter(|n| *n > 0).map(unit)
}

impl ChatSendParams {
    /// The per-turn settings, or why they cannot be honoured; attachments are stored under
    /// `state_dir`.
    pub fn options(&self, state_dir: &std::path::Path) -> Result<TurnOptions, ErrorShape> {
        no_delivery(self.deliver)?;
        Ok(TurnOptions {
            timeout: limit(self.timeout_ms, Duration::from_millis),
            attachments: attached(self.attachments.as_deref(), state_dir)?,
            ..TurnOptions::default()
        })
    }
}

impl AgentParams {
    /// The per-turn settings, or why they cannot be honoured. `agent_provider` is the
    /// provider of the agent that will run the turn; `admin` whether the caller has
    /// `operator.admin` (a model override needs it, as in OpenClaw); attachments are stored
    /// under `state_dir`.
    pub fn options(
        &self,
        agent_provider: &str,
        admin: bool,
        state_dir: &std::path::Path,
    ) -> Result<TurnOptions, ErrorShape> {
        no_delivery(self.deliver)?;
        let provider = self.provider.as_deref().filter(|p| !p.is_empty());
        if let Some(p) = provider.filter(|p| *p != agent_provider) {
            return Err(ErrorShape::invalid(format!(
                "provider {p:?} cannot be used: this agent runs on provider {agent_provider:?} and a turn cannot switch providers"
            ))
            .with_detail("PROVIDER_OVERRIDE_UNSUPPORTED"));
        }
        let model = self.model.clone().filter(|m| !m.trim().is_empty());
        if model.is_some() && !admin {
            return Err(ErrorShape::forbidden(
                "MISSING_SCOPE",
                "a model override needs scope operator.admin",
            ));
        }
        Ok(TurnOptions {
            timeout: limit(self.timeout, Duration::from_secs),
            extra_system_prompt: self
                .extra_system_prompt
                .clone()
                .filter(|p| !p.trim().is_empty()),
            model,
            attachments: attached(self.attachments.as_deref(), state_dir)?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn agent(v: serde_json::Value) -> Result<AgentParams, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn openclaw_cli_agent_params_are_accepted_and_mapped() {
        // The params `openclaw agent --message hi` sends (agent-via-gateway in openclaw 2026.9.6).
        let p = agent(json!({
            "message": "hi", "agentId": "main", "model": null, "to": null, "replyTo": null,
            "sessionId": null, "sessionKey": null, "thinking": null, "deliver": false,
            "channel": null, "replyChannel": null, "replyAccountId": null,
            "bestEffortDeliver": null, "timeout": 600, "lane": null,
            "extraSystemPrompt": "Be brief.", "idempotencyKey": "k1", "label": "x"
        }))
        .expect("accepted");
        let o = p
            .options("echo", false, &std::env::temp_dir())
            .expect("honoured");
        assert_eq!(o.timeout, Some(Duration::from_secs(600)));
        assert_eq!(o.extra_system_prompt.as_deref(), Some("Be brief."));
        assert_eq!(o.model, None);
    }

    #[test]
    fn fields_in_no_schema_are_refused_by_name() {
        let err = agent(json!({ "message": "hi", "idempotencyKey": "k", "bogus": 1 }))
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn delivery_cross_provider_and_unprivileged_model_overrides_are_refused() {
        let p = agent(json!({ "message": "m", "idempotencyKey": "k", "deliver": true })).unwrap();
        assert!(p.options("echo", true, &std::env::temp_dir()).is_err());
        let p =
            agent(json!({ "message": "m", "idempotencyKey": "k", "provider": "openai" })).unwrap();
        assert!(p.options("echo", true, &std::env::temp_dir()).is_err());
        assert!(p.options("openai", false, &std::env::temp_dir()).is_ok());
        let p = agent(json!({ "message": "m", "idempotencyKey": "k", "model": "big" })).unwrap();
        assert!(p.options("echo", false, &std::env::temp_dir()).is_err());
        assert_eq!(
            p.options("echo", true, &std::env::temp_dir())
                .unwrap()
                .model
                .as_deref(),
            Some("big")
        );
    }

    #[test]
    fn chat_send_takes_openclaw_fields_and_steer_queues_as_followup() {
        let p: ChatSendParams = serde_json::from_value(json!({
            "sessionKey": "main", "message": "m", "idempotencyKey": "k", "queueMode": "steer",
            "thinking": "low", "deliver": false, "timeoutMs": 1500, "attachments": [],
            "originatingChannel": "webchat"
        }))
        .expect("accepted");
        assert_eq!(p.queue_mode, QueueMode::Followup);
        assert_eq!(
            p.options(&std::env::temp_dir()).unwrap().timeout,
            Some(Duration::from_millis(1500))
        );
    }
}
