//! The egress firewall: an nftables table derived from the policy snapshot, and the one
//! thread that owns it in the kernel.

pub mod events;
pub mod kernel;
#[allow(unsafe_code)]
pub mod netlink;
pub mod plan;

pub use plan::{Plan, plan};
