//! Files out through channels: `[FILE:path]` / `[IMAGE:path]` markers in a reply are sent
//! after its text as real multipart uploads (Telegram `sendDocument` / `sendPhoto`, Discord
//! message attachments), checked at the fakes byte for byte; a marker pointing outside the
//! agent's folder is not sent and stays in the text. The echo agent answers "echo: <message>",
//! so the user's message carries the marker.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/fake_discord.rs"]
mod fake_discord;
#[path = "support/fake_telegram.rs"]
mod fake_telegram;
mod support;

use fake_discord::FakeDiscord;
use fake_telegram::FakeTelegram;
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
    eventually(WAIT, "the bot's gateway session", || async {
        (fake.sessions() > 0).then_some(())
    })
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
