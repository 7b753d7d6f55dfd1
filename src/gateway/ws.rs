//! The OpenClaw WebSocket protocol, the one place its JSON is produced and parsed:
//! [`protocol`] (frames, errors, scopes) and [`session`] (one actor per connection: the
//! handshake, the method table, run events as frames), carried by [`upgrade`] (the socket
//! taken from actix-http after the `101`) and [`transport`] (frames read from it).

pub mod config_methods;
pub mod protocol;
pub mod session;
pub mod transport;
pub mod upgrade;
