//! Anthropic Messages API: request building and the SSE stream (`message_start`,
//! `content_block_*` with `text_delta` / `input_json_delta`, `message_delta` usage).

use serde_json::{Value, json};

use super::sse::SseReader;
use super::{
    ChatMessage, ChatRequest, Completion, Endpoint, ProviderError, StreamDelta, ToolCall, send,
};

const NAME: &str = "anthropic";
const API_VERSION: &str = "2023-06-01";

/// The JSON body for a streaming request; consecutive same-role turns are merged.
pub fn request_body(req: &ChatRequest) -> Value {
    let mut messages: Vec<(String, Vec<Value>)> = Vec::new();
    let with_images = req.last_user_index().filter(|_| !req.images.is_empty());
    for (i, m) in req.messages.iter().enumerate() {
        let (role, blocks) = match m {
            ChatMessage::User(text) if with_images == Some(i) => {
                let mut blocks: Vec<Value> = req
                    .images
                    .iter()
                    .map(|img| {
                        json!({ "type": "image", "source": {
                            "type": "base64", "media_type": img.mime_type, "data": img.data,
                        } })
                    })
                    .collect();
                blocks.push(json!({ "type": "text", "text": text }));
                ("user", blocks)
            }
            ChatMessage::User(text) => ("user", vec![json!({ "type": "text", "text": text })]),
            ChatMessage::Assistant { text, tool_calls } => {
                let mut blocks = Vec::new();
                if !text.is_empty() {
                    blocks.push(json!({ "type": "text", "text": text }));
                }
                for c in tool_calls {
                    let input: Value =
                        serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(
                        json!({ "type": "tool_use", "id": c.id, "name": c.name, "input": input }),
                    );
                }
                ("assistant", blocks)
            }
            ChatMessage::ToolResult {
                call_id,
                content,
                is_error,
                ..
            } => (
                "user",
                vec![
                    json!({ "type": "tool_result", "tool_use_id": call_id, "content": content, "is_error": is_error }),
                ],
            ),
        };
        match messages.last_mut() {
            Some((last, existing)) if last == role => existing.extend(blocks),
            _ => messages.push((role.to_string(), blocks)),
        }
    }
    let mut body = json!({
        "model": req.model,
        "max_tokens": req.max_tokens.unwrap_or(4096),
        "messages": messages.into_iter().map(|(role, content)| json!({ "role": role, "content": content })).collect::<Vec<_>>(),
        "stream": true,
    });
    if let Some(system) = &req.system {
        body["system"] = json!(system);
    }
    if !req.tools.is_empty() {
        body["tools"] = req.tools.iter().map(|t| json!({ "name": t.name, "description": t.description, "input_schema": t.parameters })).collect();
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    body
}

fn malformed(message: impl Into<String>) -> ProviderError {
    ProviderError::malformed(NAME, message)
}

/// One streamed message.
pub async fn complete(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    req: &ChatRequest,
    on_delta: &mut (dyn FnMut(StreamDelta) + Send),
) -> Result<Completion, ProviderError> {
    let url = format!(
        "{}/v1/messages",
        endpoint
            .base_url
            .trim_end_matches('/')
            .trim_end_matches("/v1")
    );
    let mut request = client
        .post(url)
        .header("anthropic-version", API_VERSION)
        .json(&request_body(req));
    if let Some(key) = &endpoint.api_key {
        request = request.header("x-api-key", &key.0);
    }
    let response = send(NAME, request, &endpoint.policy).await?;
    let mut events = SseReader::new(
        Box::pin(response.bytes_stream()),
        NAME,
        endpoint.policy.idle,
    );
    let mut completion = Completion::default();
    let mut calls: Vec<(usize, ToolCall)> = Vec::new();
    let mut stopped = false;
    while let Some(event) = events.next().await? {
        if event.data.is_empty() {
            continue;
        }
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|e| malformed(format!("event is not JSON ({e}): {:.120}", event.data)))?;
        let kind = data["type"].as_str().unwrap_or(event.event.as_str());
        match kind {
            "message_start" => {
                completion.usage.input_tokens = data["message"]["usage"]["input_tokens"]
                    .as_u64()
                    .unwrap_or(0);
                completion.usage.output_tokens = data["message"]["usage"]["output_tokens"]
                    .as_u64()
                    .unwrap_or(0);
            }
            "content_block_start" => {
                let block = &data["content_block"];
                if block["type"] == "tool_use" {
                    let index = data["index"].as_u64().unwrap_or(0) as usize;
                    let name = block["name"].as_str().unwrap_or_default().to_string();
                    on_delta(StreamDelta::ToolStarted { name: name.clone() });
                    calls.push((
                        index,
                        ToolCall {
                            id: block["id"].as_str().unwrap_or_default().to_string(),
                            name,
                            arguments: String::new(),
                        },
                    ));
                }
            }
            "content_block_delta" => {
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        let text = delta["text"].as_str().unwrap_or_default();
                        completion.text.push_str(text);
                        on_delta(StreamDelta::Text(text.to_string()));
                    }
                    Some("input_json_delta") => {
                        let index = data["index"].as_u64().unwrap_or(0) as usize;
                        let Some((_, call)) = calls.iter_mut().find(|(i, _)| *i == index) else {
                            return Err(malformed(format!(
                                "input_json_delta for unknown block {index}"
                            )));
                        };
                        call.arguments
                            .push_str(delta["partial_json"].as_str().unwrap_or_default());
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(out) = data["usage"]["output_tokens"].as_u64() {
                    completion.usage.output_tokens = out;
                }
            }
            "message_stop" => {
                stopped = true;
                break;
            }
            "error" => {
                let message = data["error"]["message"]
                    .as_str()
                    .unwrap_or("error in stream")
                    .to_string();
                let status = if data["error"]["type"] == "overloaded_error" {
                    529
                } else {
                    500
                };
                return Err(ProviderError::Status {
                    provider: NAME,
                    status,
                    message,
                    retry_after: None,
                });
            }
            _ => {}
        }
    }
    if !stopped {
        return Err(malformed("the stream ended before message_stop"));
    }
    completion.tool_calls = calls
        .into_iter()
        .map(|(_, mut c)| {
            if c.arguments.trim().is_empty() {
                c.arguments = "{}".into();
            }
            c
        })
        .collect();
    Ok(completion)
}
