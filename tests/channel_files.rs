//! Files through channels. Out: `[FILE:path]` / `[IMAGE:path]` markers in a reply are sent
//! after its text as real multipart uploads (Telegram `sendDocument` / `sendPhoto`, Discord
//! message attachments), checked at the fakes byte for byte; a marker pointing outside the
//! agent's folder is not sent and stays in the text. The echo agent answers "echo: <message>",
//! so the user's message carries the marker. In: a photo, document or voice note sent on
//! Telegram (`getFile` + the file URL) and a Discord attachment (its `url`) reach the model
//! (image part with the same bytes, inlined text, a transcript from the fake LLM's
//! `/v1/audio/transcriptions`); files over the cap are not downloaded, an unpaired sender's
//! never are, a slow Discord attachment gets the configured download time (not the REST
//! client's 30 s), and a turn cut by a crash keeps its file without a second download.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/fake_discord.rs"]
mod fake_discord;
#[path = "support/fake_llm.rs"]
mod fake_llm;
#[path = "support/fake_telegram.rs"]
mod fake_telegram;
mod support;

use fake_discord::FakeDiscord;
use fake_llm::{FakeLlm, Script, Transcription};
use fake_telegram::FakeTelegram;
use serde_json::Value;
use support::{TestGateway, WAIT, eventually};

const TG_TOKEN: &str = "123456:TEST-token";
const DC_TOKEN: &str = "discord-test-token";

/// A 1x1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
    0x42, 0x60, 0x82,
];
const NOTES: &str = "# Notes\n\n- the plan\n";

/// A state dir whose `main` agent has `memory/notes/x.md` and `chart.png`, plus a secret
/// outside the agent's folder.
fn home_with_files(config: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tempdir");
    let agent = home.path().join("agents").join("main");
    std::fs::create_dir_all(agent.join("memory").join("notes")).unwrap();
    std::fs::write(agent.join("memory").join("notes").join("x.md"), NOTES).unwrap();
    std::fs::write(agent.join("chart.png"), PNG).unwrap();
    std::fs::write(home.path().join("secret.txt"), "do not send").unwrap();
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    home
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_markers_arrive_at_telegram_as_a_document_and_a_photo() {
    let fake = FakeTelegram::start(TG_TOKEN);
    let home = home_with_files(&format!(
        "[[channels.telegram]]\naccount = \"main\"\ntoken_env = \"TG_TEST_TOKEN\"\napi_url = \"{}\"\npoll_timeout_secs = 1\ndm_policy = \"open\"\n",
        fake.api_url()
    ));
    let _gw = TestGateway::builder()
        .env("TG_TEST_TOKEN", TG_TOKEN)
        .start_in(home);

    fake.dm(1001, "notes: [FILE:notes/x.md]");
    let doc = eventually(WAIT, "the notes arrive as a document", || async {
        fake.files().into_iter().find(|f| f.chat_id == 1001)
    })
    .await;
    assert_eq!(doc.method, "senddocument");
    assert_eq!(doc.field, "document");
    assert_eq!(doc.file_name.as_deref(), Some("x.md"), "{doc:?}");
    assert_eq!(doc.bytes, NOTES.as_bytes());
    assert_eq!(
        fake.texts_to(1001),
        ["echo: notes:"],
        "the marker left the text"
    );

    fake.dm(1002, "[IMAGE:chart.png]");
    let photo = eventually(WAIT, "the chart arrives as a photo", || async {
        fake.files().into_iter().find(|f| f.chat_id == 1002)
    })
    .await;
    assert_eq!(photo.method, "sendphoto");
    assert_eq!(photo.file_name.as_deref(), Some("chart.png"));
    assert_eq!(photo.bytes, PNG);

    fake.dm(1003, "[FILE:../../secret.txt]");
    eventually(WAIT, "the refused marker stays text", || async {
        (fake.texts_to(1003) == ["echo: [FILE:../../secret.txt]"]).then_some(())
    })
    .await;
    assert!(
        fake.files().iter().all(|f| f.chat_id != 1003),
        "nothing outside the agent's folder is sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_markers_arrive_at_discord_as_message_attachments() {
    let fake = FakeDiscord::start(DC_TOKEN);
    let home = home_with_files(&format!(
        "[[channels.discord]]\naccount = \"main\"\ntoken_env = \"DC_TEST_TOKEN\"\napi_url = \"{}\"\ndm_policy = \"open\"\n",
        fake.api_url()
    ));
    let _gw = TestGateway::builder()
        .env("DC_TEST_TOKEN", DC_TOKEN)
        .start_in(home);
    let user = 4242;
    let channel = FakeDiscord::dm_channel(user);
    // Discord sends no events to a session before its IDENTIFY (the fake drops them too).
    eventually(
        WAIT,
        "the bot identified on its gateway session",
        || async { (fake.identifies() >= 1 && fake.sessions() > 0).then_some(()) },
    )
    .await;
    fake.dm(user, "here [FILE:notes/x.md] and [IMAGE:chart.png]");
    let files = eventually(WAIT, "both files arrive", || async {
        let files: Vec<_> = fake
            .sent()
            .into_iter()
            .filter(|s| s.channel_id == channel)
            .flat_map(|s| s.files)
            .collect();
        (files.len() == 2).then_some(files)
    })
    .await;
    assert_eq!(files[0].file_name, "x.md");
    assert_eq!(files[0].field, "files[0]");
    assert_eq!(files[0].bytes, NOTES.as_bytes());
    assert_eq!(files[1].file_name, "chart.png");
    assert_eq!(files[1].mime.as_deref(), Some("image/png"));
    assert_eq!(files[1].bytes, PNG);
    let texts: Vec<String> = fake
        .sent()
        .into_iter()
        .filter(|s| s.channel_id == channel && s.files.is_empty())
        .map(|s| s.content)
        .collect();
    assert_eq!(texts, ["echo: here and"], "text first, markers taken out");

    fake.dm(user, "[FILE:/etc/passwd]");
    eventually(WAIT, "the refused marker stays text", || async {
        fake.texts_to(channel)
            .contains(&"echo: [FILE:/etc/passwd]".to_string())
            .then_some(())
    })
    .await;
    let sent_files: usize = fake.sent().iter().map(|s| s.files.len()).sum();
    assert_eq!(sent_files, 2, "nothing more was uploaded");
}

// ---- Files in: what users send on a channel reaches the agent as attachments. ----

/// OGG bytes (what a Telegram voice note starts with).
fn ogg() -> Vec<u8> {
    let mut b = b"OggS\x00\x02".to_vec();
    b.resize(64, 0);
    b
}

/// Standard base64 with padding (the data URLs the model gets).
fn b64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A state dir whose `main` agent talks to the fake LLM (OpenAI API), with `config`.
/// A gateway with a DM-open Discord account at `dc` (after `extra` config) and the vision
/// model at `llm`, once the bot has IDENTIFIED: Discord sends no events to a session before
/// it (the fake drops them too).
async fn discord_gateway(dc: &FakeDiscord, llm: &FakeLlm, extra: &str) -> TestGateway {
    let config = format!(
        "{extra}[[channels.discord]]\naccount = \"main\"\ntoken_env = \"DC_TEST_TOKEN\"\napi_url = \"{}\"\ndm_policy = \"open\"\n",
        dc.api_url()
    );
    let gw = with_llm(TestGateway::builder(), llm)
        .env("DC_TEST_TOKEN", DC_TOKEN)
        .start_in(home_with_model(&config));
    eventually(
        WAIT,
        "the bot identified on its gateway session",
        || async { (dc.identifies() >= 1 && dc.sessions() > 0).then_some(()) },
    )
    .await;
    gw
}

fn home_with_model(config: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tempdir");
    let agent = home.path().join("agents").join("main");
    std::fs::create_dir_all(&agent).unwrap();
    std::fs::write(
        agent.join("agent.toml"),
        "provider = \"openai\"\nmodel = \"fake-vision\"\n",
    )
    .unwrap();
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    home
}

fn telegram_config(fake: &FakeTelegram, policy: &str, extra: &str) -> String {
    format!(
        "[[channels.telegram]]\naccount = \"main\"\ntoken_env = \"TG_TEST_TOKEN\"\napi_url = \"{}\"\npoll_timeout_secs = 1\ndm_policy = \"{policy}\"\n{extra}",
        fake.api_url()
    )
}

fn with_llm(builder: support::GatewayBuilder, llm: &FakeLlm) -> support::GatewayBuilder {
    builder
        .env(
            "TROUPE__PROVIDERS__OPENAI__BASE_URL",
            &format!("{}/v1", llm.base_url()),
        )
        .env("OPENAI_API_KEY", "sk-test-openai")
}

/// The last user message of the chat request whose user text contains `needle`.
fn user_message_with(llm: &FakeLlm, needle: &str) -> Option<Value> {
    llm.chat_requests().into_iter().rev().find_map(|r| {
        let user = r.body["messages"]
            .as_array()?
            .iter()
            .rfind(|m| m["role"] == "user")?
            .clone();
        user.to_string().contains(needle).then_some(user)
    })
}

/// The text of a user message (string content, or its text parts).
fn text_of(user: &Value) -> String {
    match &user["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_photo_document_and_voice_reach_the_model() {
    let tg = FakeTelegram::start(TG_TOKEN);
    let llm = FakeLlm::start();
    let config = telegram_config(&tg, "open", "[transcription]\nenabled = true\n");
    let gw = with_llm(TestGateway::builder(), &llm)
        .env("TG_TEST_TOKEN", TG_TOKEN)
        .start_in(home_with_model(&config));

    // A photo with a caption: the caption is the text, the largest size an image part.
    tg.photo(1001, PNG, Some("what is this?"));
    let user = eventually(WAIT, "the photo reaches the model", || async {
        user_message_with(&llm, "what is this?")
    })
    .await;
    assert_eq!(text_of(&user), "what is this?");
    assert_eq!(
        user["content"][1]["image_url"]["url"],
        format!("data:image/png;base64,{}", b64(PNG)),
        "the same bytes: {user}"
    );
    eventually(WAIT, "the reply comes back", || async {
        (tg.texts_to(1001) == ["fake: what is this?"]).then_some(())
    })
    .await;
    let uploads: Vec<_> = std::fs::read_dir(gw.home().join("uploads"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(uploads.len(), 1, "stored as an upload");

    // A text document: its text is inlined.
    tg.document(
        1002,
        "notes.md",
        "text/markdown",
        NOTES.as_bytes(),
        Some("summarise"),
    );
    let user = eventually(WAIT, "the document reaches the model", || async {
        user_message_with(&llm, "summarise")
    })
    .await;
    let text = text_of(&user);
    let expected = format!(
        "summarise\n\n[attached file: notes.md (text/markdown, {} bytes)]\n{NOTES}\n[end of notes.md]",
        NOTES.len()
    );
    assert_eq!(text, expected);

    // A voice note: transcribed, the transcript goes to the model, the audio does not.
    llm.push_transcription(Transcription::Text("hello from a voice note".into()));
    tg.voice(1003, &ogg());
    let user = eventually(WAIT, "the transcript reaches the model", || async {
        user_message_with(&llm, "hello from a voice note")
    })
    .await;
    assert_eq!(
        text_of(&user),
        "[voice transcript: voice.ogg]\nhello from a voice note"
    );
    assert!(
        !user.to_string().contains(&b64(&ogg())[..20]),
        "no audio sent: {user}"
    );
    let sent = llm.transcribed();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].model, "whisper-1");
    assert_eq!(sent[0].file_name.as_deref(), Some("voice.ogg"));
    assert_eq!(sent[0].mime.as_deref(), Some("audio/ogg"));
    assert_eq!(sent[0].bytes, ogg());
    assert_eq!(
        sent[0].authorization.as_deref(),
        Some("Bearer sk-test-openai")
    );

    // The transcription server fails: the turn still runs and says so.
    llm.push_transcription(Transcription::Status(500, "boom".into()));
    tg.voice(1004, &ogg());
    let reply = eventually(WAIT, "a reply despite the failure", || async {
        tg.texts_to(1004).into_iter().next()
    })
    .await;
    assert!(
        reply.contains("transcription failed: HTTP 500") && reply.contains("boom"),
        "{reply}"
    );
    assert_eq!(tg.get_file_calls(), 4);
    assert_eq!(tg.downloads(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_over_the_cap_are_not_downloaded_and_the_turn_still_answers() {
    let tg = FakeTelegram::start(TG_TOKEN);
    let home = home_with_files(&telegram_config(
        &tg,
        "open",
        "[uploads]\nmax_bytes = 1000\n",
    ));
    let gw = TestGateway::builder()
        .env("TG_TEST_TOKEN", TG_TOKEN)
        .start_in(home);
    let big = vec![b'x'; 5000];

    // Stated too large: not even asked for.
    let media = serde_json::json!({ "file_name": "big.txt", "mime_type": "text/plain" });
    tg.dm_with_file(
        3001,
        "document",
        media.clone(),
        &big,
        Some(5000),
        Some("big one"),
    );
    let reply = eventually(WAIT, "the turn answers", || async {
        tg.texts_to(3001).into_iter().next()
    })
    .await;
    assert_eq!(
        reply,
        "echo: big one\n\n[attached file: big.txt was not received: it is larger than the 1000 bytes files may have]"
    );
    assert_eq!((tg.get_file_calls(), tg.downloads()), (0, 0));

    // Size not stated: the download stops at the cap and nothing is stored.
    tg.dm_with_file(3002, "document", media, &big, None, Some("no size"));
    let reply = eventually(WAIT, "the turn answers", || async {
        tg.texts_to(3002).into_iter().next()
    })
    .await;
    assert!(
        reply.contains("it is larger than the 1000 bytes"),
        "{reply}"
    );
    assert_eq!((tg.get_file_calls(), tg.downloads()), (1, 1));
    assert!(
        !gw.home().join("uploads").exists()
            || std::fs::read_dir(gw.home().join("uploads"))
                .unwrap()
                .count()
                == 0,
        "nothing stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_hangs_times_out_and_the_turn_still_answers() {
    let tg = FakeTelegram::start(TG_TOKEN);
    let home = home_with_files(&telegram_config(
        &tg,
        "open",
        "[uploads]\ndownload_timeout_secs = 1\n",
    ));
    let _gw = TestGateway::builder()
        .env("TG_TEST_TOKEN", TG_TOKEN)
        .start_in(home);
    tg.stall_downloads(true);
    tg.photo(3501, PNG, Some("slow"));
    let reply = eventually(WAIT, "the turn answers", || async {
        tg.texts_to(3501).into_iter().next()
    })
    .await;
    assert_eq!(
        reply,
        "echo: slow\n\n[attached file: photo.jpg was not received: the download took longer than 1 s]"
    );
    assert_eq!(tg.downloads(), 1);
    tg.stall_downloads(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaired_senders_photo_is_never_downloaded() {
    let tg = FakeTelegram::start(TG_TOKEN);
    let _gw = TestGateway::builder()
        .env("TG_TEST_TOKEN", TG_TOKEN)
        .start_in(home_with_files(&telegram_config(&tg, "pairing", "")));
    tg.photo(4001, PNG, Some("let me in"));
    let notice = eventually(WAIT, "the pairing notice", || async {
        tg.texts_to(4001).into_iter().next()
    })
    .await;
    assert!(notice.contains("pairing code"), "{notice}");
    // Let the journal settle, then check nothing was fetched.
    tg.dm(4002, "another sender");
    eventually(WAIT, "a later message is handled", || async {
        (!tg.texts_to(4002).is_empty()).then_some(())
    })
    .await;
    assert_eq!((tg.get_file_calls(), tg.downloads()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discord_attachment_reaches_the_model_as_an_image() {
    let dc = FakeDiscord::start(DC_TOKEN);
    let llm = FakeLlm::start();
    let _gw = discord_gateway(&dc, &llm, "").await;
    let user_id = 5151;
    dc.dm_with_file(
        user_id,
        "look at this",
        "dot.png",
        "image/png",
        PNG,
        PNG.len() as u64,
    );
    let user = eventually(WAIT, "the attachment reaches the model", || async {
        user_message_with(&llm, "look at this")
    })
    .await;
    assert_eq!(
        user["content"][1]["image_url"]["url"],
        format!("data:image/png;base64,{}", b64(PNG)),
        "{user}"
    );
    eventually(WAIT, "the reply", || async {
        dc.texts_to(FakeDiscord::dm_channel(user_id))
            .contains(&"fake: look at this".to_string())
            .then_some(())
    })
    .await;
    assert_eq!(dc.downloads(), 1);
    assert_eq!(
        dc.downloads_with_authorization(),
        0,
        "the bot token stays with the API"
    );
}

/// `uploads.download_timeout_secs` bounds a Discord download, not the REST client's 30 s
/// request timeout: an attachment that takes 32 s on a slow link still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_discord_attachment_gets_the_configured_download_time() {
    let dc = FakeDiscord::start(DC_TOKEN);
    let llm = FakeLlm::start();
    let _gw = discord_gateway(&dc, &llm, "[uploads]\ndownload_timeout_secs = 120\n\n").await;
    dc.slow_attachments(Some(std::time::Duration::from_secs(32)));
    let user_id = 5252;
    dc.dm_with_file(
        user_id,
        "slow one",
        "dot.png",
        "image/png",
        PNG,
        PNG.len() as u64,
    );
    let user = eventually(
        std::time::Duration::from_secs(120),
        "the slow attachment reaches the model",
        || async { user_message_with(&llm, "slow one") },
    )
    .await;
    assert_eq!(
        user["content"][1]["image_url"]["url"],
        format!("data:image/png;base64,{}", b64(PNG)),
        "{user}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_cut_by_a_crash_keeps_its_photo_without_downloading_again() {
    let tg = FakeTelegram::start(TG_TOKEN);
    let llm = FakeLlm::start();
    let config = telegram_config(&tg, "open", "");
    let builder = || with_llm(TestGateway::builder(), &llm).env("TG_TEST_TOKEN", TG_TOKEN);
    let gw = builder().start_in(home_with_model(&config));
    llm.push(Script::Stall { after_chunks: 0 });
    tg.photo(6001, PNG, Some("before the crash"));
    eventually(WAIT, "the turn reaches the model", || async {
        user_message_with(&llm, "before the crash")
    })
    .await;
    let home = gw.kill9();
    let _gw = builder().start_in(home);
    eventually(WAIT, "the turn runs again after the restart", || async {
        (tg.texts_to(6001) == ["fake: before the crash"]).then_some(())
    })
    .await;
    let asked: Vec<_> = llm
        .chat_requests()
        .into_iter()
        .filter(|r| r.body.to_string().contains("before the crash"))
        .collect();
    assert_eq!(asked.len(), 2, "once cut, once again");
    let again = &asked[1].body["messages"];
    assert!(
        again.to_string().contains(&b64(PNG)),
        "the photo is still attached: {again}"
    );
    assert_eq!(
        (tg.get_file_calls(), tg.downloads()),
        (1, 1),
        "downloaded once"
    );
}
