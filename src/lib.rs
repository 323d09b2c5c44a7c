//! telesink: a DNS sinkhole resolver and egress firewall for telemetry endpoints.
//! The binary is `src/main.rs`; this library exists so tests and benchmarks reach the parts.

pub mod config;
pub mod control;
pub mod daemon;
pub mod dns;
pub mod firewall;
pub mod lists;
pub mod metrics;
pub mod notify;
pub mod policy;
