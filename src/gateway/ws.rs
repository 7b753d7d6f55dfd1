//! The OpenClaw WebSocket protocol, the one place its JSON is produced and parsed:
//! [`protocol`] (frames, errors, scopes) and [`session`] (one actor per connection: the
//! handshake, the method table, run events as frames).

pub mod config_methods;
pub mod protocol;
pub mod session;
