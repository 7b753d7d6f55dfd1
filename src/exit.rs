//! Process exit codes, distinct per cause so scripts and service managers can tell them apart.

/// Success.
pub const OK: i32 = 0;
/// Any other failure.
pub const FAILURE: i32 = 1;
/// `status`: the gateway is not running (LSB convention).
pub const NOT_RUNNING: i32 = 3;
/// The configuration is invalid (EX_USAGE).
pub const CONFIG: i32 = 64;
/// The root supervisor's restart intensity was exceeded (EX_SOFTWARE).
pub const ESCALATED: i32 = 70;
/// The state dir could not be created or written (EX_CANTCREAT).
pub const STATE_DIR: i32 = 73;
/// Another gateway already runs on this home (EX_TEMPFAIL).
pub const ALREADY_RUNNING: i32 = 75;
/// Binding beyond loopback with authentication off (EX_CONFIG).
pub const INSECURE_BIND: i32 = 78;
/// The port is already in use (EADDRINUSE).
pub const PORT_IN_USE: i32 = 98;
