//! The egress firewall: an nftables table derived from the policy snapshot.

pub mod netlink;
pub mod plan;
pub mod shadow;

pub use plan::{Plan, plan};
