//! OpenAI-compatible Chat Completions (OpenAI, OpenRouter, Ollama, vLLM, llama.cpp): request
//! building and the SSE stream, including streamed tool-call argument deltas and usage.

use serde_json::{Value, json};

use super::sse::SseReader;
use super::{
    ChatMessage, ChatRequest, Completion, Endpoint, ProviderError, StreamDelta, ToolCall, Usage,
    send,
};

const NAME: &str = "openai";
/// Tool calls accepted in one model reply.
const MAX_TOOL_CALLS: u64 = 128;

/// The JSON body for a streaming request.
pub fn request_body(req: &ChatRequest) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = &req.system {
        messages.push(json!({ "role": "system", "content": system }));
    }
    let with_images = req.last_user_index().filter(|_| !req.images.is_empty());
    for (i, m) in req.messages.iter().enumerate() {
        messages.push(match m {
            ChatMessage::User(text) if with_images == Some(i) => {
                let mut parts = vec![json!({ "type": "text", "text": text })];
                parts.extend(req.images.iter().map(|img| {
                    json!({ "type": "image_url", "image_url": { "url": img.data_url() } })
                }));
                json!({ "role": "user", "content": parts })
            }
            ChatMessage::User(text) => json!({ "role": "user", "content": text }),
            ChatMessage::Assistant { text, tool_calls } if tool_calls.is_empty() => json!({ "role": "assistant", "content": text }),
            ChatMessage::Assistant { text, tool_calls } => json!({
                "role": "assistant",
                "content": if text.is_empty() { Value::Null } else { json!(text) },
                "tool_calls": tool_calls.iter().map(|c| json!({
                    "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments },
                })).collect::<Vec<_>>(),
            }),
            ChatMessage::ToolResult { call_id, content, .. } => json!({ "role": "tool", "tool_call_id": call_id, "content": content }),
        });
    }
    let mut body = json!({
        "model": req.model,
        "messages": messages,
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({ "type": "function", "function": { "name": t.name, "description": t.description, "parameters": t.parameters } }))
            .collect();
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(m) = req.max_tokens {
        body["max_tokens"] = json!(m);
    }
    body
}

fn malformed(message: impl Into<String>) -> ProviderError {
    ProviderError::malformed(NAME, message)
}

/// One streamed completion.
pub async fn complete(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    req: &ChatRequest,
    on_delta: &mut (dyn FnMut(StreamDelta) + Send),
) -> Result<Completion, ProviderError> {
    let url = format!(
        "{}/chat/completions",
        endpoint.base_url.trim_end_matches('/')
    );
    let mut request = client.post(url).json(&request_body(req));
    if let Some(key) = &endpoint.api_key {
        request = request.bearer_auth(&key.0);
    }
    let response = send(NAME, request, &endpoint.policy).await?;
    let mut events = SseReader::new(
        Box::pin(response.bytes_stream()),
        NAME,
        endpoint.policy.idle,
    );
    let mut completion = Completion::default();
    let mut calls: Vec<ToolCall> = Vec::new();
    let mut finished = false;
    while let Some(event) = events.next().await? {
        if event.data.trim() == "[DONE]" {
            finished = true;
            break;
        }
        let chunk: Value = serde_json::from_str(&event.data).map_err(|e| {
            malformed(format!(
                "stream chunk is not JSON ({e}): {:.120}",
                event.data
            ))
        })?;
        if let Some(error) = chunk.get("error") {
            let message = error["message"]
                .as_str()
                .unwrap_or("error in stream")
                .to_string();
            return Err(ProviderError::Status {
                provider: NAME,
                status: 500,
                message,
                retry_after: None,
            });
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            completion.usage = Usage {
                input_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0),
                output_tokens: usage["completion_tokens"].as_u64().unwrap_or(0),
            };
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            completion.text.push_str(text);
            on_delta(StreamDelta::Text(text.to_string()));
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap_or(calls.len() as u64);
            if index > calls.len() as u64 || index >= MAX_TOOL_CALLS {
                return Err(malformed(format!(
                    "tool call index {index} is out of sequence"
                )));
            }
            let index = index as usize;
            while calls.len() <= index {
                calls.push(ToolCall {
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                });
            }
            let slot = &mut calls[index];
            if let Some(id) = call["id"].as_str() {
                slot.id = id.to_string();
            }
            if let Some(name) = call["function"]["name"].as_str().filter(|n| !n.is_empty()) {
                slot.name = name.to_string();
                on_delta(StreamDelta::ToolStarted {
                    name: name.to_string(),
                });
            }
            if let Some(args) = call["function"]["arguments"].as_str() {
                slot.arguments.push_str(args);
            }
        }
        if choice["finish_reason"].is_string() {
            finished = true;
        }
    }
    if !finished {
        return Err(malformed("the stream ended before the completion finished"));
    }
    for (i, call) in calls.iter_mut().enumerate() {
        if call.name.is_empty() {
            return Err(malformed(format!("tool call {i} has no function name")));
        }
        if call.id.is_empty() {
            call.id = format!("call_{i}");
        }
        if call.arguments.trim().is_empty() {
            call.arguments = "{}".into();
        }
    }
    completion.tool_calls = calls;
    Ok(completion)
}
