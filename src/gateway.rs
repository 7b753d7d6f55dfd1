//! The server's edges that speak a wire protocol: [`ws`], the OpenClaw WebSocket protocol.

pub mod ws;
