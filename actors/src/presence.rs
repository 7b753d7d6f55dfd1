//! Who is connected: one entry per authenticated WebSocket client (from its `connect`),
//! listed in `hello-ok.snapshot.presence` and sent to every client as a `presence` event
//! when one connects or leaves, with `stateVersion.presence` counting the changes. Entries
//! follow OpenClaw's `SystemPresence` shape where Troupe has the data; no credentials.
//! Events are paced by the number of clients (changes close together go out in one event),
//! so connection churn among many clients cannot flood them all with lists.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::event_bus;

/// Entries listed in a `presence` event or snapshot (the newest); `count` gives the total.
pub const LIST_LIMIT: usize = 200;

/// Entries listed in a `presence` event (the newest; the snapshot lists [`LIST_LIMIT`]).
/// An event goes to every client, and each connection frames its own copy: its size is
/// what every connection holds while the event is on its way.
pub const EVENT_LIST_LIMIT: usize = 20;

/// Changes listed in one event (older ones are counted in `changesDropped`).
const EVENT_CHANGES_LIMIT: usize = 20;

/// With more clients than this, `presence` events stop (the changes are still counted in
/// `stateVersion.presence`, the snapshot and `status` still list them, and the first event
/// once the count is back under it says how many changes went unsent). A presence list
/// sent to every one of thousands of clients costs thousands of copies of it (10,000 idle
/// connections went from 131 MB to 541 MB with one), for news no client can use at that scale.
pub const BROADCAST_CLIENTS_MAX: usize = 256;

/// The least time between two `presence` events, per connected client: one event goes to
/// every client, so with many clients events are spaced out (changes in between are sent
/// together in the next one). The presence traffic then stays near one list per this
/// interval, however many clients come and go.
const PACE_PER_CLIENT: Duration = Duration::from_millis(5);

/// The least and the most time between two `presence` events.
const PACE_MIN: Duration = Duration::from_millis(50);
const PACE_MAX: Duration = Duration::from_secs(60);

/// Longest text kept from a client-supplied field (longer is cut), so a list of
/// [`LIST_LIMIT`] entries stays small.
const FIELD_LIMIT: usize = 128;

/// One connected client, as its `connect` described it.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceEntry {
    /// The connection's id (`hello-ok.server.connId`).
    pub conn_id: String,
    /// `client.id` (`cli`, `openclaw-control-ui`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `client.instanceId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// `client.displayName`, else the client id: OpenClaw's `host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The peer's IP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// `client.version`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `client.platform`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// `client.deviceFamily`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    /// `client.mode` (`cli`, `ui`, `webchat`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Always `connect` (the entry is listed from its connect until it leaves).
    pub reason: &'static str,
    /// The role granted (`operator`).
    pub roles: Vec<String>,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// One line for humans, as OpenClaw writes it.
    pub text: String,
    /// When it connected (ms since the epoch); OpenClaw's `ts`.
    pub ts: u64,
}

impl PresenceEntry {
    /// Cuts client-supplied fields to a bounded length and fills in `text`.
    fn bounded(mut self) -> Self {
        for field in [
            &mut self.client_id,
            &mut self.instance_id,
            &mut self.host,
            &mut self.version,
            &mut self.platform,
            &mut self.device_family,
            &mut self.mode,
        ] {
            if let Some(text) = field.as_mut() {
                cut(text);
            }
        }
        self.text = format!(
            "Client: {}{} · app {} · mode {} · reason connect",
            self.host.as_deref().unwrap_or("unknown"),
            self.ip
                .as_deref()
                .map(|ip| format!(" ({ip})"))
                .unwrap_or_default(),
            self.version.as_deref().unwrap_or("unknown"),
            self.mode.as_deref().unwrap_or("unknown"),
        );
        self
    }
}

/// Cuts `text` to [`FIELD_LIMIT`] bytes on a character boundary, without control characters.
fn cut(text: &mut String) {
    text.retain(|c| !c.is_control());
    if text.len() > FIELD_LIMIT {
        let mut end = FIELD_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// A listed entry: its JSON, made once when the client joined (one allocation per client
/// rather than a dozen strings; the book is as big as the number of connections).
#[derive(Clone, Debug)]
pub struct Listed(Arc<RawValue>);

impl Serialize for Listed {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl Listed {
    /// The entry's JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }
}

/// The connected clients (one entry per live connection), ordered by connect time so the
/// newest [`LIST_LIMIT`] are read without sorting the whole book.
#[derive(Default)]
struct Book {
    /// Entries (as JSON) by (connected at, connection id).
    entries: BTreeMap<(u64, Arc<str>), Listed>,
    /// Connected-at of each connection id.
    since: HashMap<Arc<str>, u64>,
    /// Changes not yet sent in a `presence` event, oldest first (at most [`LIST_LIMIT`]).
    unsent: VecDeque<Change>,
    /// Changes dropped from `unsent` past its bound (told as `changesDropped`).
    dropped: usize,
    /// When the last `presence` event went out.
    last_sent: Option<Instant>,
    /// A trailing event is scheduled for this time (if the task that sends it died with
    /// its thread, the next change after that time sends instead).
    pending: Option<Instant>,
}

/// One connect or disconnect, as a `presence` event lists it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Change {
    /// `connect` or `disconnect`.
    reason: &'static str,
    /// Whose.
    conn_id: String,
}

impl Book {
    fn insert(&mut self, entry: PresenceEntry) {
        self.remove(&entry.conn_id);
        let json = match serde_json::value::to_raw_value(&entry) {
            Ok(json) => Listed(Arc::from(json)),
            Err(e) => {
                tracing::error!(conn_id = %entry.conn_id, error = %e, "presence entry did not serialize");
                return;
            }
        };
        let conn_id: Arc<str> = Arc::from(entry.conn_id);
        self.since.insert(conn_id.clone(), entry.ts);
        self.entries.insert((entry.ts, conn_id), json);
    }

    fn remove(&mut self, conn_id: &str) -> bool {
        match self.since.remove_entry(conn_id) {
            Some((id, ts)) => self.entries.remove(&(ts, id)).is_some(),
            None => false,
        }
    }

    /// The newest [`LIST_LIMIT`] entries, newest first, and the total count.
    fn listed(&self) -> (Vec<Listed>, usize) {
        let list = self
            .entries
            .values()
            .rev()
            .take(LIST_LIMIT)
            .cloned()
            .collect();
        (list, self.entries.len())
    }
}

static BOOK: Mutex<Option<Book>> = Mutex::new(None);

/// Runs `f` on the book (a poisoned lock is taken over: the book stays consistent).
fn with_book<T>(f: impl FnOnce(&mut Book) -> T) -> T {
    let mut guard = BOOK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(guard.get_or_insert_with(Book::default))
}

/// The list for `hello-ok.snapshot.presence` (newest first, at most [`LIST_LIMIT`]).
pub fn snapshot() -> Vec<Listed> {
    with_book(|book| book.listed().0)
}

/// The newest [`LIST_LIMIT`] entries, newest first, and how many clients there are.
pub fn listed() -> (Vec<Listed>, usize) {
    with_book(|book| book.listed())
}

/// Lists a client that has just authenticated and tells every client.
pub fn join(entry: PresenceEntry) {
    let entry = entry.bounded();
    let conn_id = entry.conn_id.clone();
    with_book(|book| {
        book.insert(entry);
        changed(book, "connect", conn_id);
    });
}

/// Removes a client that has left (closed, dropped or crashed) and tells every client; a
/// connection that never authenticated is not listed and nothing is sent.
pub fn leave(conn_id: &str) {
    with_book(|book| {
        if book.remove(conn_id) {
            changed(book, "disconnect", conn_id.to_string());
        }
    });
}

/// Counts a change and sends it now, or with the next event if one went out less than
/// the pace ago (a trailing event is then scheduled; nothing runs while nothing changes).
fn changed(book: &mut Book, reason: &'static str, conn_id: String) {
    event_bus::bump_presence();
    if book.entries.len() > BROADCAST_CLIENTS_MAX {
        book.dropped += 1;
        return;
    }
    if book.unsent.len() >= EVENT_CHANGES_LIMIT {
        book.unsent.pop_front();
        book.dropped += 1;
    }
    book.unsent.push_back(Change { reason, conn_id });
    let now = Instant::now();
    if book.pending.is_some_and(|due| now < due + PACE_MIN) {
        return;
    }
    book.pending = None;
    let pace = (PACE_PER_CLIENT * u32::try_from(book.entries.len()).unwrap_or(u32::MAX))
        .clamp(PACE_MIN, PACE_MAX);
    let due = book.last_sent.map(|at| at + pace).filter(|due| *due > now);
    match (due, tokio::runtime::Handle::try_current()) {
        (Some(due), Ok(runtime)) => {
            book.pending = Some(due);
            runtime.spawn(async move {
                tokio::time::sleep_until(due.into()).await;
                with_book(|book| {
                    book.pending = None;
                    send(book);
                });
            });
        }
        _ => send(book),
    }
}

/// Publishes the `presence` event with the changes not yet sent (under the book's lock,
/// so versions go out in order).
fn send(book: &mut Book) {
    if book.unsent.is_empty() && book.dropped == 0 {
        return;
    }
    book.last_sent = Some(Instant::now());
    let changes: Vec<Change> = book.unsent.drain(..).collect();
    let dropped = std::mem::take(&mut book.dropped);
    let (mut list, count) = book.listed();
    list.truncate(EVENT_LIST_LIMIT);
    let mut payload: Value = json!({
        "presence": list,
        "count": count,
        "changes": changes,
    });
    if dropped > 0 {
        payload["changesDropped"] = json!(dropped);
    }
    event_bus::publish_versioned("presence", payload, event_bus::state_version());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_client_fields_are_cut_on_a_char_boundary() {
        let entry = PresenceEntry {
            conn_id: "c".into(),
            version: Some("é".repeat(100)),
            mode: Some("ui\n\u{7}".into()),
            ..Default::default()
        }
        .bounded();
        let version = entry.version.unwrap_or_default();
        assert!(version.len() <= FIELD_LIMIT && version.chars().all(|c| c == 'é'));
        assert_eq!(entry.mode.as_deref(), Some("ui"));
        assert!(entry.text.contains("mode ui"), "{}", entry.text);
    }

    #[test]
    fn past_the_broadcast_limit_changes_are_counted_not_sent() {
        let mut book = Book::default();
        for i in 0..=(BROADCAST_CLIENTS_MAX as u64) {
            book.insert(PresenceEntry {
                conn_id: format!("c{i}"),
                ts: i,
                ..Default::default()
            });
        }
        changed(&mut book, "connect", "c0".into());
        assert!(book.unsent.is_empty() && book.last_sent.is_none());
        assert_eq!(book.dropped, 1);
        // Back under the limit: the next change goes out (no runtime here, so at once) and
        // carries the count of those that did not.
        assert!(book.remove("c0") && book.remove("c1"));
        changed(&mut book, "disconnect", "c1".into());
        assert!(book.unsent.is_empty() && book.last_sent.is_some());
        assert_eq!(book.dropped, 0);
    }

    #[test]
    fn lists_are_capped_newest_first_with_the_total() {
        let mut book = Book::default();
        for i in 0..(LIST_LIMIT as u64 + 5) {
            book.insert(PresenceEntry {
                conn_id: format!("c{i}"),
                ts: i,
                ..Default::default()
            });
        }
        assert!(book.remove("c3") && !book.remove("c3") && !book.remove("nobody"));
        let (list, count) = book.listed();
        assert_eq!(count, LIST_LIMIT + 4);
        assert_eq!(list.len(), LIST_LIMIT);
        let ts: Vec<u64> = list
            .iter()
            .map(|e| {
                serde_json::from_str::<Value>(e.json()).unwrap()["ts"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(ts[0], LIST_LIMIT as u64 + 4);
        assert!(ts.windows(2).all(|w| w[0] > w[1]));
    }
}
