//! Many sites, one view (docs/FLEET.md): a central NATS hub (a JetStream cluster) and,
//! per site, the site's own servers as leaf nodes with a JetStream domain of their own.
//! An existing engine carries everything; telesink reads and writes records:
//!
//! - `streams.rs`: what lives where (the central policy's bucket and its mirror at each
//!   site, each site's evidence stream, the hub's stream that sources them);
//! - `record.rs`: what a gateway sends (a closed day, its head) and the centre's checks;
//! - `parts.rs`: a record too large for one message, cut into parts and put together;
//! - `send.rs`: the gateway's side, store and forward;
//! - `hub.rs`: the centre's side: reading every record, writing the central policy;
//! - `verify.rs`: each gateway's chain checked from what it sent, and the gaps;
//! - `report.rs`, `render.rs`: the fleet's report in the `telesink report` forms;
//! - `cli.rs`: `telesink fleet ...`.
//!
//! The central policy reaches a gateway through the cluster's session (src/cluster/),
//! as the lowest of its layers (`policy::Layers`: central, site, node).

pub mod cli;
pub mod hub;
pub mod parts;
pub mod record;
pub mod render;
pub mod report;
pub mod send;
pub mod streams;
pub mod verify;

/// Subjects of the evidence streams: `telesink.evidence.<site>.<gateway>`.
pub const SUBJECT_PREFIX: &str = "telesink.evidence";
