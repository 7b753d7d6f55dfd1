//! The params of `chat.history`, `chat.abort`, `sessions.list|reset|delete` and
//! `models.list`: Troupe's fields plus the rest of OpenClaw's schemas for them
//! (`ChatHistoryParamsSchema`, `ChatAbortParamsSchema`, `SessionsListParamsSchema`,
//! `SessionsResetParamsSchema`, `SessionsDeleteParamsSchema`, `ModelsListParamsSchema`),
//! accepted and ignored unless noted (docs/protocol.md lists them). Anything else is refused.

#![allow(dead_code)]

use serde::Deserialize;
use serde::de::IgnoredAny;

/// A field accepted for OpenClaw compatibility and ignored: any JSON value.
type Ignored = Option<IgnoredAny>;

/// `chat.history`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HistoryParams {
    pub session_key: String,
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub before: Option<i64>,
    agent_id: Ignored,
    cursor: Ignored,
    max_bytes: Ignored,
    offset: Ignored,
    pending_before: Ignored,
    input_run_ids: Ignored,
    message_id: Ignored,
    session_id: Ignored,
    max_chars: Ignored,
}

/// `chat.abort`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AbortParams {
    pub session_key: String,
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(default)]
    pub clear_queued: bool,
    agent_id: Ignored,
    preserve_side_runs: Ignored,
}

/// `sessions.reset` and `sessions.delete`; OpenClaw names the session `key`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SessionParams {
    #[serde(alias = "key")]
    pub session_key: String,
    agent_id: Ignored,
    reason: Ignored,
    expected_session_id: Ignored,
    delete_transcript: Ignored,
    expected_lifecycle_revision: Ignored,
    expected_session_updated_at: Ignored,
    emit_lifecycle_hooks: Ignored,
    archived_only: Ignored,
}

/// `sessions.list`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListParams {
    #[serde(default)]
    pub limit: Option<u32>,
    offset: Ignored,
    active_minutes: Ignored,
    active_only: Ignored,
    require_last_interaction: Ignored,
    sort_by: Ignored,
    include_global: Ignored,
    include_unknown: Ignored,
    exclude_subagents: Ignored,
    exclude_cron: Ignored,
    exclude_system: Ignored,
    configured_agents_only: Ignored,
    include_derived_titles: Ignored,
    include_last_message: Ignored,
    include_activity_summary: Ignored,
    label: Ignored,
    project_id: Ignored,
    workspace_dir: Ignored,
    group: Ignored,
    pinned: Ignored,
    board_face: Ignored,
    has_board: Ignored,
    creator_id: Ignored,
    owner_id: Ignored,
    owner_first: Ignored,
    involving_me: Ignored,
    profile_relation: Ignored,
    involving_profile_id: Ignored,
    include_people: Ignored,
    spawned_by: Ignored,
    agent_id: Ignored,
    search: Ignored,
    archived: Ignored,
}

/// `models.list`: Troupe's `limit`; `agentId` and `provider` filter the list.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModelsListParams {
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
    session_key: Ignored,
    auth_profile_id: Ignored,
    include_details: Ignored,
    include_provider_capabilities: Ignored,
    include_default_models: Ignored,
    prepared_only: Ignored,
    refresh: Ignored,
    view: Ignored,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn openclaw_session_params_are_accepted_and_key_names_the_session() {
        let p: SessionParams =
            serde_json::from_value(json!({ "key": "agent:main:main", "reason": "new" })).unwrap();
        assert_eq!(p.session_key, "agent:main:main");
        let h: HistoryParams = serde_json::from_value(
            json!({ "sessionKey": "main", "limit": 5, "maxChars": 100, "agentId": "main" }),
        )
        .unwrap();
        assert_eq!(h.limit, Some(5));
        let l: ListParams =
            serde_json::from_value(json!({ "limit": 3, "includeLastMessage": true })).unwrap();
        assert_eq!(l.limit, Some(3));
        assert!(serde_json::from_value::<ListParams>(json!({ "nope": 1 })).is_err());
    }
}
