//! The per-client query rate limit: a token bucket per client address, in a bounded table.
//!
//! It sits at the listeners, before anything else looks at a query (the UDP fast path
//! included), because its job is to keep one client from taking the resolver from the
//! others: a query over the limit must cost as little as possible. Blocked answers count
//! toward it like any other: a device hammering a telemetry name is what the admin wants
//! to see, and it must not starve anybody either.
//!
//! The table holds at most `max_clients` addresses, least recently seen forgotten first
//! (counted). A forgotten client starts again with a full bucket, so spraying source
//! addresses buys an attacker at most one burst per address it can actually receive on.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use lru::LruCache;
use parking_lot::Mutex;
use tracing::warn;

use crate::config::RateAction;
use crate::policy::rate::RateRules;

const SHARDS: usize = 16;

/// What the listener does with a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Over the limit: no answer.
    Drop,
    /// Over the limit: REFUSED with EDE 18.
    Refuse,
}

struct Bucket {
    tokens: f64,
    /// Seconds since the limiter's epoch at the last refill.
    at: f64,
    /// When this client's limiting was last logged (seconds since the epoch).
    logged: f64,
}

pub struct Limiter {
    shards: Vec<Mutex<LruCache<IpAddr, Bucket>>>,
    epoch: Instant,
    /// Queries refused or dropped for being over the limit.
    pub limited: AtomicU64,
    /// Clients forgotten because the table was full.
    pub forgotten: AtomicU64,
    last_log: AtomicU64,
}

impl Limiter {
    /// `max_clients`: addresses tracked at once (set at start).
    pub fn new(max_clients: usize) -> Self {
        let per =
            NonZeroUsize::new(max_clients.div_ceil(SHARDS).max(1)).unwrap_or(NonZeroUsize::MIN);
        Limiter {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per)))
                .collect(),
            epoch: Instant::now(),
            limited: AtomicU64::new(0),
            forgotten: AtomicU64::new(0),
            last_log: AtomicU64::new(0),
        }
    }

    /// Takes one token of this client's bucket.
    #[inline]
    pub fn admit(&self, rules: &RateRules, client: IpAddr) -> Admit {
        if !rules.enabled || rules.exempt(client) {
            return Admit::Yes;
        }
        let now = self.epoch.elapsed().as_secs_f64();
        let mut shard = self.shards[crate::host::client_shard(client, SHARDS)].lock();
        if let Some(b) = shard.get_mut(&client) {
            b.tokens = (b.tokens + (now - b.at) * rules.per_sec).min(rules.burst);
            b.at = now;
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                return Admit::Yes;
            }
            let log = now - b.logged >= 60.0;
            if log {
                b.logged = now;
            }
            drop(shard);
            self.limited.fetch_add(1, Ordering::Relaxed);
            if log {
                self.log(client, rules);
            }
            return match rules.action {
                RateAction::Drop => Admit::Drop,
                RateAction::Refuse => Admit::Refuse,
            };
        }
        let fresh = Bucket {
            tokens: rules.burst - 1.0,
            at: now,
            logged: f64::NEG_INFINITY,
        };
        if let Some((gone, _)) = shard.push(client, fresh)
            && gone != client
        {
            self.forgotten.fetch_add(1, Ordering::Relaxed);
        }
        Admit::Yes
    }

    /// Once a minute per client, and at most once a second in all: a flood from many
    /// (spoofed) addresses must not become a flood of log lines. The counts are exact.
    fn log(&self, client: IpAddr, rules: &RateRules) {
        let now = crate::clock::unix_now();
        if self.last_log.swap(now, Ordering::Relaxed) != now {
            warn!(
                %client,
                per_sec = rules.per_sec,
                burst = rules.burst,
                action = ?rules.action,
                "client over its query rate limit (server.rate_limit); counted in telesink_dns_rate_limited_total"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimitConfig;

    fn rules(per_sec: u32, burst: u32, exempt: &[&str]) -> RateRules {
        let c = RateLimitConfig {
            queries_per_sec: per_sec,
            burst,
            ..RateLimitConfig::default()
        };
        RateRules::new(&c, exempt.iter().map(|e| e.parse().unwrap()).collect())
    }

    #[test]
    fn a_client_gets_its_burst_then_nothing_while_another_is_untouched() {
        let l = Limiter::new(1024);
        let r = rules(1, 5, &["192.0.2.9/32"]);
        let a = IpAddr::from([192, 0, 2, 1]);
        let admitted = (0..20).filter(|_| l.admit(&r, a) == Admit::Yes).count();
        assert_eq!(admitted, 5);
        assert_eq!(l.limited.load(Ordering::Relaxed), 15);
        assert_eq!(l.admit(&r, IpAddr::from([192, 0, 2, 2])), Admit::Yes);
        let exempt = IpAddr::from([192, 0, 2, 9]);
        assert!((0..100).all(|_| l.admit(&r, exempt) == Admit::Yes));
    }

    #[test]
    fn a_full_table_forgets_the_least_recently_seen_and_counts_it() {
        let l = Limiter::new(16);
        let r = rules(1, 5, &[]);
        // One shard holds one address: two addresses of the same shard push each other out.
        l.admit(&r, IpAddr::from([192, 0, 2, 1]));
        l.admit(&r, IpAddr::from([198, 51, 100, 1]));
        assert_eq!(l.forgotten.load(Ordering::Relaxed), 1);
    }
}
