//! `store`: the single SQLite writer (sqlx, WAL, migrations), on its own arbiter. Every
//! write goes through this actor, one at a time in arrival order ([`StoreWrite`]); reads
//! ([`StoreRead`]) do not wait behind writes. The queries are in [`turns`].

pub mod channels;
pub mod turns;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::messages::Shutdown;
use crate::supervisor::{ChildHandle, ChildLink, ChildSpec, ExitGuard};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error("cannot open store {path}: {source}")]
    Open {
        /// File path.
        path: String,
        /// Cause.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// The store is not open yet (or was closed).
    #[error("store is not open")]
    NotOpen,
}

/// The SQLite store actor.
pub struct StoreActor {
    path: PathBuf,
    pool: Option<SqlitePool>,
    pending: usize,
    guard: ExitGuard,
}

/// Facts about the store for `status` and `doctor`.
#[derive(Debug, Clone, Serialize, MessageResponse)]
#[serde(rename_all = "camelCase")]
pub struct StoreInfo {
    /// Database file.
    pub path: String,
    /// Number of gateway starts recorded.
    pub boots: i64,
    /// Sessions stored.
    pub sessions: i64,
    /// Messages stored.
    pub messages: i64,
}

/// Asks the store for [`StoreInfo`].
#[derive(Message, Debug)]
#[rtype(result = "Result<StoreInfo, StoreError>")]
pub struct GetStoreInfo;

impl StoreActor {
    /// The child spec of `store`.
    pub fn spec(path: PathBuf) -> ChildSpec {
        ChildSpec::new("store", "store", move |link: ChildLink| {
            let arbiter = Arbiter::new();
            let path = path.clone();
            let addr = StoreActor::start_in_arbiter(&arbiter.handle(), move |_| StoreActor {
                path,
                pool: None,
                pending: 0,
                guard: link.guard(),
            });
            Ok(ChildHandle::of(addr).on_arbiter(arbiter.handle()))
        })
        .shutdown(Duration::from_secs(10))
    }
}

/// Opens (creating if needed) the database in WAL mode, migrates it and records this boot.
pub async fn open(path: &std::path::Path) -> Result<SqlitePool, StoreError> {
    let display = path.display().to_string();
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{display}"))
        .map_err(|source| StoreError::Open {
            path: display.clone(),
            source,
        })?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(2));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Open {
            path: display,
            source,
        })?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    sqlx::query("INSERT INTO boots (pid, version, started_at) VALUES (?, ?, ?)")
        .bind(std::process::id() as i64)
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(crate::now_ms() as i64)
        .execute(&pool)
        .await?;
    Ok(pool)
}

async fn info(pool: SqlitePool, path: String) -> Result<StoreInfo, StoreError> {
    let (boots, sessions, messages): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM boots), (SELECT COUNT(*) FROM sessions), (SELECT COUNT(*) FROM messages)",
    )
    .fetch_one(&pool)
    .await?;
    Ok(StoreInfo {
        path,
        boots,
        sessions,
        messages,
    })
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        let path = self.path.clone();
        ctx.wait(
            async move { open(&path).await }.into_actor(self).map(
                |opened, act, ctx| match opened {
                    Ok(pool) => {
                        tracing::info!(path = %act.path.display(), "store open");
                        act.pool = Some(pool);
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "store failed to open");
                        act.guard.fail(err.to_string());
                        ctx.stop();
                    }
                },
            ),
        );
    }
}

crate::child_controls!(StoreActor, |this| this.pending);

impl Handler<GetStoreInfo> for StoreActor {
    type Result = ResponseFuture<Result<StoreInfo, StoreError>>;
    fn handle(&mut self, _: GetStoreInfo, _: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        let path = self.path.display().to_string();
        Box::pin(async move { info(pool.ok_or(StoreError::NotOpen)?, path).await })
    }
}

/// The future a store operation runs on the pool.
pub type StoreFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send>>;

/// A write, run strictly after the writes sent before it (the single-writer rule).
pub struct StoreWrite<T>(pub Box<dyn FnOnce(SqlitePool) -> StoreFuture<T> + Send>);

/// A read; may run beside other reads.
pub struct StoreRead<T>(pub Box<dyn FnOnce(SqlitePool) -> StoreFuture<T> + Send>);

impl<T: 'static> Message for StoreWrite<T> {
    type Result = Result<T, StoreError>;
}

impl<T: 'static> Message for StoreRead<T> {
    type Result = Result<T, StoreError>;
}

impl<T> StoreWrite<T> {
    /// Wraps an async write over the pool.
    pub fn new(op: impl FnOnce(SqlitePool) -> StoreFuture<T> + Send + 'static) -> Self {
        Self(Box::new(op))
    }
}

impl<T> StoreRead<T> {
    /// Wraps an async read over the pool.
    pub fn new(op: impl FnOnce(SqlitePool) -> StoreFuture<T> + Send + 'static) -> Self {
        Self(Box::new(op))
    }
}

impl<T: 'static> Handler<StoreWrite<T>> for StoreActor {
    type Result = AtomicResponse<Self, Result<T, StoreError>>;
    fn handle(&mut self, msg: StoreWrite<T>, _: &mut Self::Context) -> Self::Result {
        let Some(pool) = self.pool.clone() else {
            return AtomicResponse::new(Box::pin(fut::ready(Err(StoreError::NotOpen))));
        };
        self.pending += 1;
        AtomicResponse::new(Box::pin((msg.0)(pool).into_actor(self).map(
            |result, act, _| {
                act.pending -= 1;
                result
            },
        )))
    }
}

impl<T: 'static> Handler<StoreRead<T>> for StoreActor {
    type Result = ResponseFuture<Result<T, StoreError>>;
    fn handle(&mut self, msg: StoreRead<T>, _: &mut Self::Context) -> Self::Result {
        match self.pool.clone() {
            Some(pool) => (msg.0)(pool),
            None => Box::pin(async { Err(StoreError::NotOpen) }),
        }
    }
}

impl Handler<Shutdown> for StoreActor {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        let pool = self.pool.take();
        Box::pin(
            async move {
                if let Some(pool) = pool {
                    pool.close().await;
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}
