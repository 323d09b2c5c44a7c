//! The DNS resolver: the pipeline and the pieces it calls.

pub mod answer;
pub mod cache;
pub mod client_counts;
pub mod direct;
pub mod exchange;
pub mod kept;
pub mod outcome;
pub mod pipeline;
pub mod protocol;
pub mod ratelimit;
pub mod tcp;
pub mod udp;
pub mod upstream;
pub mod wire;

pub use client_counts::ClientCounts;
pub use outcome::{Outcome, Outcomes};
pub use pipeline::Pipeline;
