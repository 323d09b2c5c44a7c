//! `[server.rate_limit]`: how much one client address may ask.

use serde::Deserialize;

/// What a client over its rate gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateAction {
    /// No answer: costs the gateway nothing and gives a spoofed source nothing to reflect.
    #[default]
    Drop,
    /// REFUSED with Extended DNS Error 18 (Prohibited, "rate limited"): a client sees why.
    Refuse,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Sustained queries per second per client address (a token bucket's refill).
    #[serde(default = "default_rate")]
    pub queries_per_sec: u32,
    /// Queries a client may send at once above the sustained rate (the bucket's size).
    #[serde(default = "default_burst")]
    pub burst: u32,
    #[serde(default)]
    pub action: RateAction,
    /// The gateway's own addresses (the address it asks itself from) are never limited.
    #[serde(default = "default_true")]
    pub exempt_gateway: bool,
    /// Never limited: addresses, networks, or host names from a group's `hosts`.
    #[serde(default)]
    pub exempt: Vec<toml::Spanned<String>>,
    /// Client addresses tracked at once; beyond it the least recently seen is forgotten
    /// (counted: `telesink_rate_limit_forgotten_total`), and starts again with a full bucket.
    #[serde(default = "default_tracked")]
    pub max_clients: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            queries_per_sec: default_rate(),
            burst: default_burst(),
            action: RateAction::Drop,
            exempt_gateway: true,
            exempt: Vec::new(),
            max_clients: default_tracked(),
        }
    }
}

fn default_true() -> bool {
    true
}
/// An office PC asks a few names a second and a few hundred at logon; 200 a second
/// sustained with 1,000 at once is far above that and far below a flood.
fn default_rate() -> u32 {
    200
}
fn default_burst() -> u32 {
    1000
}
fn default_tracked() -> usize {
    65_536
}
