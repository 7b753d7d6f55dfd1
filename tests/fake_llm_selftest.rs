//! Self-test of the fake LLM server (`tests/support/fake_llm.rs`): every script, in both
//! the OpenAI and Anthropic wire formats, streamed and not, read back over real sockets
//! with reqwest (streams read incrementally, chunk by chunk).
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/fake_llm.rs"]
mod fake_llm;

use std::io::{Read, Write};
use std::time::Duration;

use fake_llm::{FakeLlm, Script};
use serde_json::{Value, json};

/// Generous bound for anything that should happen promptly on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(20);
/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

#[derive(Clone, Copy, Debug)]
enum Api {
    OpenAi,
    Anthropic,
}

const BOTH: [Api; 2] = [Api::OpenAi, Api::Anthropic];

fn request_body(api: Api, stream: bool, text: &str) -> Value {
    match api {
        Api::OpenAi => json!({
            "model": "gpt-test",
            "messages": [
                { "role": "system", "content": "be brief" },
                { "role": "user", "content": text },
            ],
            "stream": stream,
            "stream_options": if stream { json!({ "include_usage": true }) } else { Value::Null },
        }),
        Api::Anthropic => json!({
            "model": "claude-test",
            "max_tokens": 256,
            "system": "be brief",
            "messages": [{ "role": "user", "content": [{ "type": "text", "text": text }] }],
            "stream": stream,
        }),
    }
}

fn post(fake: &FakeLlm, api: Api, body: &Value) -> reqwest::RequestBuilder {
    let client = reqwest::Client::new();
    match api {
        Api::OpenAi => client
            .post(format!("{}/v1/chat/completions", fake.base_url()))
            .bearer_auth("sk-test-openai")
            .json(body),
        Api::Anthropic => client
            .post(format!("{}/v1/messages", fake.base_url()))
            .header("x-api-key", "sk-test-anthropic")
            .header("anthropic-version", "2023-06-01")
            .json(body),
    }
}

async fn send(fake: &FakeLlm, api: Api, stream: bool, text: &str) -> reqwest::Response {
    tokio::time::timeout(
        WAIT,
        post(fake, api, &request_body(api, stream, text)).send(),
    )
    .await
    .expect("response headers in time")
    .expect("request sent")
}

/// One parsed server-sent event.
#[derive(Debug, Clone)]
struct Event {
    event: Option<String>,
    data: String,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

/// Reads SSE events off a response body incrementally.
struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    fn new(resp: reqwest::Response) -> Self {
        assert_eq!(resp.status(), 200);
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert_eq!(ct, "text/event-stream");
        SseReader {
            resp,
            buf: String::new(),
        }
    }

    /// The next event; `Ok(None)` at the end of the body, `Err` if the body breaks off.
    async fn next(&mut self) -> Result<Option<Event>, reqwest::Error> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let mut event = Event {
                    event: None,
                    data: String::new(),
                };
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event.event = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        event.data.push_str(v);
                    }
                }
                return Ok(Some(event));
            }
            match self.resp.chunk().await? {
                Some(bytes) => self.buf.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => {
                    assert!(
                        self.buf.is_empty(),
                        "trailing partial event: {:?}",
                        self.buf
                    );
                    return Ok(None);
                }
            }
        }
    }

    async fn next_in_time(&mut self) -> Option<Event> {
        tokio::time::timeout(WAIT, self.next())
            .await
            .expect("next event in time")
            .expect("stream intact")
    }

    async fn all(mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(e) = self.next_in_time().await {
            events.push(e);
        }
        events
    }
}

async fn stream_events(fake: &FakeLlm, api: Api, text: &str) -> Vec<Event> {
    SseReader::new(send(fake, api, true, text).await)
        .all()
        .await
}

/// OpenAI chunks' JSON, checked to end with `[DONE]`.
fn openai_chunks(events: &[Event]) -> Vec<Value> {
    let (done, chunks) = events.split_last().expect("some events");
    assert_eq!(done.data, "[DONE]");
    assert!(events.iter().all(|e| e.event.is_none()));
    chunks.iter().map(Event::json).collect()
}

fn openai_text(chunks: &[Value]) -> (String, usize) {
    let deltas: Vec<&str> = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"].get("role").is_none())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    (deltas.concat(), deltas.len())
}

fn anthropic_text(events: &[Event]) -> (String, usize) {
    let deltas: Vec<String> = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| e.json()["delta"]["text"].as_str().unwrap().to_string())
        .collect();
    (deltas.concat(), deltas.len())
}

fn event_names(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_deref().unwrap()).collect()
}

#[tokio::test]
async fn openai_streamed_reply_concatenates_to_the_text_with_usage_last() {
    let fake = FakeLlm::start();
    fake.push(Script::reply("Hello there, world!", 4));
    let chunks = openai_chunks(&stream_events(&fake, Api::OpenAi, "hi").await);

    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({ "role": "assistant", "content": "" })
    );
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-test");
        assert!(c["id"].as_str().unwrap().starts_with("chatcmpl-"));
    }
    assert_eq!(openai_text(&chunks), ("Hello there, world!".to_string(), 4));
    let (usage, rest) = chunks.split_last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({ "prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14 })
    );
    let last = rest.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(
        rest[..rest.len() - 1]
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
}

#[tokio::test]
async fn openai_stream_without_include_usage_sends_no_usage_chunk() {
    let fake = FakeLlm::start();
    fake.push(Script::reply("abc", 2));
    let body =
        json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }], "stream": true });
    let resp = post(&fake, Api::OpenAi, &body).send().await.unwrap();
    let chunks = openai_chunks(&SseReader::new(resp).all().await);
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "{chunks:?}"
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(openai_text(&chunks).0, "abc");
}

#[tokio::test]
async fn openai_tool_calls_stream_names_and_argument_pieces_by_index() {
    let fake = FakeLlm::start();
    fake.push(Script::ToolCalls {
        calls: vec![
            (
                "call_1".into(),
                "get_weather".into(),
                r#"{"city":"Paris"}"#.into(),
            ),
            ("call_2".into(), "get_time".into(), r#"{"tz":"UTC"}"#.into()),
        ],
        chunks: 3,
    });
    let chunks = openai_chunks(&stream_events(&fake, Api::OpenAi, "weather?").await);

    let mut calls: Vec<(String, String, String, usize)> = Vec::new();
    for c in &chunks {
        for tc in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = tc["index"].as_u64().unwrap() as usize;
            if let Some(id) = tc["id"].as_str() {
                assert_eq!(tc["type"], "function");
                assert_eq!(tc["function"]["arguments"], "");
                assert_eq!(i, calls.len());
                calls.push((
                    id.into(),
                    tc["function"]["name"].as_str().unwrap().into(),
                    String::new(),
                    0,
                ));
            } else {
                assert!(tc.get("type").is_none() && tc["function"].get("name").is_none());
                calls[i]
                    .2
                    .push_str(tc["function"]["arguments"].as_str().unwrap());
                calls[i].3 += 1;
            }
        }
    }
    assert_eq!(
        calls,
        vec![
            (
                "call_1".into(),
                "get_weather".into(),
                r#"{"city":"Paris"}"#.into(),
                3
            ),
            (
                "call_2".into(),
                "get_time".into(),
                r#"{"tz":"UTC"}"#.into(),
                3
            ),
        ]
    );
    let usage = chunks.last().unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 6);
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn openai_non_stream_reply_and_tool_calls_are_single_json_bodies() {
    let fake = FakeLlm::start();
    fake.push(Script::reply("whole answer", 5));
    fake.push(Script::tool_call("call_9", "search", r#"{"q":"rust"}"#, 4));

    let reply: Value = send(&fake, Api::OpenAi, false, "q")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["choices"][0]["message"]["role"], "assistant");
    assert_eq!(reply["choices"][0]["message"]["content"], "whole answer");
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        reply["usage"],
        json!({ "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15 })
    );

    let tools: Value = send(&fake, Api::OpenAi, false, "q")
        .await
        .json()
        .await
        .unwrap();
    let message = &tools["choices"][0]["message"];
    assert!(message["content"].is_null());
    assert_eq!(
        message["tool_calls"],
        json!([{ "id": "call_9", "type": "function", "function": { "name": "search", "arguments": r#"{"q":"rust"}"# } }])
    );
    assert_eq!(tools["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(tools["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn anthropic_streamed_reply_follows_the_event_sequence() {
    let fake = FakeLlm::start();
    fake.push(Script::reply("Bonjour, le monde", 3));
    let events = stream_events(&fake, Api::Anthropic, "hi").await;

    assert_eq!(
        event_names(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for e in &events {
        assert_eq!(
            e.json()["type"],
            e.event.as_deref().unwrap(),
            "type field matches event name"
        );
    }
    let start = events[0].json();
    assert_eq!(start["message"]["model"], "claude-test");
    assert_eq!(start["message"]["content"], json!([]));
    assert_eq!(
        start["message"]["usage"],
        json!({ "input_tokens": 10, "output_tokens": 0 })
    );
    assert!(start["message"]["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        events[1].json()["content_block"],
        json!({ "type": "text", "text": "" })
    );
    assert_eq!(events[3].json()["delta"]["type"], "text_delta");
    assert_eq!(
        anthropic_text(&events),
        ("Bonjour, le monde".to_string(), 3)
    );
    let delta = events[7].json();
    assert_eq!(
        delta["delta"],
        json!({ "stop_reason": "end_turn", "stop_sequence": null })
    );
    assert_eq!(delta["usage"], json!({ "output_tokens": 3 }));
}

#[tokio::test]
async fn anthropic_tool_use_streams_input_json_deltas_per_block() {
    let fake = FakeLlm::start();
    fake.push(Script::ToolCalls {
        calls: vec![
            (
                "toolu_1".into(),
                "get_weather".into(),
                r#"{"city":"Paris"}"#.into(),
            ),
            (
                "toolu_2".into(),
                "get_time".into(),
                r#"{"tz":"UTC"}"#.into(),
            ),
        ],
        chunks: 2,
    });
    let events = stream_events(&fake, Api::Anthropic, "weather?").await;

    let mut blocks: Vec<(String, String, String)> = Vec::new();
    for e in &events {
        let v = e.json();
        match e.event.as_deref().unwrap() {
            "content_block_start" => {
                assert_eq!(v["index"], blocks.len());
                let b = &v["content_block"];
                assert_eq!(b["type"], "tool_use");
                assert_eq!(b["input"], json!({}));
                blocks.push((
                    b["id"].as_str().unwrap().into(),
                    b["name"].as_str().unwrap().into(),
                    String::new(),
                ));
            }
            "content_block_delta" => {
                assert_eq!(v["delta"]["type"], "input_json_delta");
                let i = v["index"].as_u64().unwrap() as usize;
                blocks[i]
                    .2
                    .push_str(v["delta"]["partial_json"].as_str().unwrap());
            }
            "message_delta" => {
                assert_eq!(v["delta"]["stop_reason"], "tool_use");
                assert_eq!(v["usage"]["output_tokens"], 4);
            }
            _ => {}
        }
    }
    assert_eq!(
        blocks,
        vec![
            (
                "toolu_1".into(),
                "get_weather".into(),
                r#"{"city":"Paris"}"#.into()
            ),
            (
                "toolu_2".into(),
                "get_time".into(),
                r#"{"tz":"UTC"}"#.into()
            ),
        ]
    );
    assert_eq!(event_names(&events).last(), Some(&"message_stop"));
    assert!(event_names(&events).contains(&"ping"));
}

#[tokio::test]
async fn anthropic_non_stream_reply_and_tool_use_are_single_json_bodies() {
    let fake = FakeLlm::start();
    fake.push(Script::reply("whole answer", 2));
    fake.push(Script::tool_call("toolu_9", "search", r#"{"q":"rust"}"#, 3));

    let reply: Value = send(&fake, Api::Anthropic, false, "q")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reply["type"], "message");
    assert_eq!(reply["role"], "assistant");
    assert_eq!(
        reply["content"],
        json!([{ "type": "text", "text": "whole answer" }])
    );
    assert_eq!(reply["stop_reason"], "end_turn");
    assert_eq!(
        reply["usage"],
        json!({ "input_tokens": 10, "output_tokens": 2 })
    );

    let tools: Value = send(&fake, Api::Anthropic, false, "q")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        tools["content"],
        json!([{ "type": "tool_use", "id": "toolu_9", "name": "search", "input": { "q": "rust" } }])
    );
    assert_eq!(tools["stop_reason"], "tool_use");
    assert_eq!(tools["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn status_scripts_carry_retry_after_and_the_api_error_envelope() {
    let fake = FakeLlm::start();
    for api in BOTH {
        fake.push(Script::Status {
            code: 429,
            retry_after_secs: Some(7),
            body: "slow down".into(),
        });
        fake.push(Script::status(500, "boom"));
        fake.push(Script::status(503, r#"{"custom":true}"#));

        let limited = send(&fake, api, true, "x").await;
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()["retry-after"], "7");
        let body: Value = limited.json().await.unwrap();
        match api {
            Api::OpenAi => {
                assert_eq!(body["error"]["message"], "slow down");
                assert_eq!(body["error"]["code"], "rate_limit_exceeded");
                assert!(body["error"]["type"].is_string());
            }
            Api::Anthropic => assert_eq!(
                body,
                json!({ "type": "error", "error": { "type": "rate_limit_error", "message": "slow down" } })
            ),
        }

        let failed = send(&fake, api, false, "x").await;
        assert_eq!(failed.status(), 500);
        assert!(failed.headers().get("retry-after").is_none());
        let body: Value = failed.json().await.unwrap();
        match api {
            Api::OpenAi => assert_eq!(body["error"]["type"], "server_error"),
            Api::Anthropic => assert_eq!(body["error"]["type"], "api_error"),
        }

        let raw = send(&fake, api, false, "x").await;
        assert_eq!(raw.status(), 503);
        assert_eq!(
            raw.json::<Value>().await.unwrap(),
            json!({ "custom": true })
        );
    }
    assert_eq!(fake.pending(), 0);
}

#[tokio::test]
async fn stall_delivers_its_chunks_then_nothing_until_the_server_drops() {
    for api in BOTH {
        let fake = FakeLlm::start();
        fake.push(Script::Stall { after_chunks: 2 });
        let mut sse = SseReader::new(send(&fake, api, true, "x").await);
        let prelude = match api {
            Api::OpenAi => 1,    // role chunk
            Api::Anthropic => 3, // message_start, content_block_start, ping
        };
        let mut events = Vec::new();
        for _ in 0..prelude + 2 {
            events.push(sse.next_in_time().await.expect("a stalled chunk"));
        }
        let text = match api {
            Api::OpenAi => openai_text(&events.iter().map(Event::json).collect::<Vec<_>>()),
            Api::Anthropic => anthropic_text(&events),
        };
        assert_eq!(text, ("chunk0 chunk1 ".to_string(), 2));
        assert!(
            tokio::time::timeout(QUIET, sse.next()).await.is_err(),
            "{api:?}: nothing after the stalled chunks"
        );

        drop(fake);
        let after_drop = tokio::time::timeout(WAIT, sse.next())
            .await
            .expect("hang-up seen");
        assert!(
            after_drop.is_err(),
            "{api:?}: dropping the server cuts the stream off"
        );
    }
}

#[tokio::test]
async fn non_stream_stall_sends_headers_but_never_the_body() {
    let fake = FakeLlm::start();
    fake.push(Script::Stall { after_chunks: 5 });
    let resp = send(&fake, Api::OpenAi, false, "x").await;
    assert_eq!(resp.status(), 200);
    assert!(tokio::time::timeout(QUIET, resp.bytes()).await.is_err());
}

#[tokio::test]
async fn no_response_never_sends_headers() {
    let fake = FakeLlm::start();
    for api in BOTH {
        fake.push(Script::NoResponse);
        let pending = post(&fake, api, &request_body(api, true, "x")).send();
        assert!(
            tokio::time::timeout(QUIET, pending).await.is_err(),
            "{api:?}: headers must not arrive"
        );
    }
    assert_eq!(
        fake.requests().len(),
        2,
        "the silent requests were still received"
    );
    // The queue moves on: the next request is answered normally.
    let events = stream_events(&fake, Api::OpenAi, "after").await;
    assert_eq!(openai_text(&openai_chunks(&events)).0, "fake: after");
}

#[tokio::test]
async fn malformed_replies_carry_data_that_is_not_json() {
    let fake = FakeLlm::start();
    for api in BOTH {
        fake.push(Script::Malformed);
        fake.push(Script::Malformed);

        let events = stream_events(&fake, api, "x").await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(serde_json::from_str::<Value>(&events[0].data).is_err());
        assert_ne!(events[0].data, "[DONE]");

        let resp = send(&fake, api, false, "x").await;
        assert_eq!(resp.status(), 200);
        assert!(serde_json::from_slice::<Value>(&resp.bytes().await.unwrap()).is_err());
    }
}

#[tokio::test]
async fn empty_queue_echoes_the_last_user_message_in_three_chunks() {
    let fake = FakeLlm::start();
    let events = stream_events(&fake, Api::OpenAi, "ping me").await;
    let chunks = openai_chunks(&events);
    assert_eq!(openai_text(&chunks), ("fake: ping me".to_string(), 3));
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 3);

    // Anthropic content given as an array of text blocks, after an earlier exchange.
    let body = json!({
        "model": "claude-test",
        "max_tokens": 64,
        "messages": [
            { "role": "user", "content": "first" },
            { "role": "assistant", "content": "ok" },
            { "role": "user", "content": [{ "type": "text", "text": "sec" }, { "type": "text", "text": "ond" }] },
        ],
        "stream": true,
    });
    let resp = post(&fake, Api::Anthropic, &body).send().await.unwrap();
    let events = SseReader::new(resp).all().await;
    assert_eq!(anthropic_text(&events), ("fake: second".to_string(), 3));

    let reply: Value = send(&fake, Api::Anthropic, false, "plain")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reply["content"][0]["text"], "fake: plain");
}

#[tokio::test]
async fn scripts_are_consumed_one_per_request_in_order_across_apis() {
    let fake = FakeLlm::start();
    fake.push(Script::reply("one", 1));
    fake.push(Script::reply("two", 1));
    fake.push(Script::status(500, "three"));
    assert_eq!(fake.pending(), 3);

    let first = stream_events(&fake, Api::Anthropic, "x").await;
    assert_eq!(anthropic_text(&first).0, "one");
    let second = openai_chunks(&stream_events(&fake, Api::OpenAi, "x").await);
    assert_eq!(openai_text(&second).0, "two");
    assert_eq!(send(&fake, Api::OpenAi, true, "x").await.status(), 500);
    assert_eq!(fake.pending(), 0);
}

#[tokio::test]
async fn requests_are_recorded_with_bodies_and_auth_headers() {
    let fake = FakeLlm::start();
    let openai = request_body(Api::OpenAi, true, "to openai");
    let anthropic = request_body(Api::Anthropic, false, "to anthropic");
    stream_events(&fake, Api::OpenAi, "to openai").await;
    send(&fake, Api::Anthropic, false, "to anthropic")
        .await
        .bytes()
        .await
        .unwrap();
    let missing = reqwest::get(format!("{}/v1/nope", fake.base_url()))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.json::<Value>().await.unwrap()["error"]["message"].is_string());

    let seen = fake.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(seen[0].body, openai);
    assert_eq!(
        seen[0].header("Authorization"),
        Some("Bearer sk-test-openai")
    );
    assert!(
        seen[0]
            .headers
            .iter()
            .any(|(n, v)| n == "content-type" && v == "application/json")
    );
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(seen[1].body, anthropic);
    assert_eq!(seen[1].header("x-api-key"), Some("sk-test-anthropic"));
    assert_eq!(seen[1].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        (seen[2].method.as_str(), seen[2].path.as_str()),
        ("GET", "/v1/nope")
    );
    assert!(seen[2].body.is_null());
    assert!(
        seen.iter()
            .flat_map(|r| &r.headers)
            .all(|(n, _)| *n == n.to_ascii_lowercase())
    );
}

#[test]
fn works_from_a_plain_test_and_stops_listening_on_drop() {
    let fake = FakeLlm::start();
    fake.push(Script::reply("sync", 2));
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}"#;
    let mut conn = std::net::TcpStream::connect(fake.addr()).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        conn,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap(); // `connection: close`: ends at EOF
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("content-type: text/event-stream\r\n"));
    assert!(response.contains(r#""delta":{"content":"sy"}"#));
    assert!(response.ends_with("data: [DONE]\n\n\r\n0\r\n\r\n"));

    let addr = fake.addr();
    drop(fake);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "nothing listens after drop"
    );
}
