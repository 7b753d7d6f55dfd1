//! MCP tool call overhead (placeholder until written).
fn main() {}
