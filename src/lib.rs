//! telesink: a DNS sinkhole resolver and egress firewall for telemetry endpoints.
//! The binary is `src/main.rs`; this library exists so tests and benchmarks reach the parts.
//!
//! Layers, each importing only those above it in this list (docs/ARCHITECTURE.md):
//! clock, durable, failpoint, suggest, host, slots, stripe, config, lists, policy -> firewall (plan, netlink, the kernel owner)
//! -> state, evidence, snapshot -> dns -> shadow -> apply -> metrics -> audit -> control
//! -> budget -> daemon; m365 and init beside control (CLI commands).

// Unsafe code is allowed in one module only, src/firewall/netlink.rs, each block justified.
#![deny(unsafe_code)]

pub mod apply;
pub mod audit;
pub mod budget;
pub mod clock;
pub mod cluster;
pub mod cluster_status;
pub mod config;
pub mod control;
pub mod daemon;
pub mod devices;
pub mod dns;
pub mod durable;
pub mod evidence;
pub mod failpoint;
pub mod firewall;
pub mod fleet;
pub mod host;
pub mod init;
pub mod instance;
pub mod lists;
pub mod m365;
pub mod metric_names;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod services;
pub mod shadow;
pub mod slots;
pub mod snapshot;
pub mod state;
pub mod stripe;
pub mod suggest;
