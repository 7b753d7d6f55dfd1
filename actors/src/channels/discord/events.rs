//! serenity's event handler of a `discord:<account>` actor: gateway events become actor
//! messages (serenity spawns one task per event on the actor's single-threaded arbiter, so
//! they arrive in gateway order).

use actix::prelude::*;
use serenity::all::{Context, EventHandler, Message as DiscordMessage, Ready};
use serenity::gateway::{ConnectionStage, ShardStageUpdateEvent};

use super::DiscordActor;

/// A message arrived on the gateway.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Incoming(pub DiscordMessage);

/// The gateway session is ready (IDENTIFY answered).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SessionReady {
    /// The bot's user id.
    pub user_id: u64,
    /// The bot's user name.
    pub user_name: String,
    /// The session id.
    pub session_id: String,
}

/// The shard's connection stage changed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StageChanged {
    /// The stage before.
    pub old: ConnectionStage,
    /// The stage now.
    pub new: ConnectionStage,
}

/// Forwards serenity's events to the actor.
pub struct Forward(pub Addr<DiscordActor>);

#[serenity::async_trait]
impl EventHandler for Forward {
    async fn message(&self, _ctx: Context, msg: DiscordMessage) {
        self.0.do_send(Incoming(msg));
    }

    async fn ready(&self, _ctx: Context, ready: Ready) {
        self.0.do_send(SessionReady {
            user_id: ready.user.id.get(),
            user_name: ready.user.name.clone(),
            session_id: ready.session_id.clone(),
        });
    }

    async fn shard_stage_update(&self, _ctx: Context, event: ShardStageUpdateEvent) {
        self.0.do_send(StageChanged {
            old: event.old,
            new: event.new,
        });
    }
}
