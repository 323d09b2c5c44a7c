//! The answer cache: upstream answers by (name, type, class), with TTLs counting down.
//!
//! It sits below the policy in the pipeline, so it never decides who gets an answer: a
//! name cached for one client is still checked against the next client's policy first.
//! Sharded so that two cores rarely contend for one lock.

use std::hash::{BuildHasher, Hash};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, LowerName, Record, RecordType};
use lru::LruCache;
use parking_lot::Mutex;

use super::upstream::Upstreamed;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub name: LowerName,
    pub qtype: RecordType,
    pub class: DNSClass,
    /// The DO and CD bits a forward zone passed on (default elsewhere): an answer with
    /// RRSIGs is not one without.
    pub dnssec: super::upstream::Dnssec,
}

pub struct Entry {
    pub answer: Upstreamed,
    stored: Instant,
    ttl: u32,
}

/// A cached answer with its TTLs already reduced by the time it has spent here.
pub struct Hit {
    pub answer: Upstreamed,
    /// Until when this exact answer (these TTLs) is what the cache gives: the next whole
    /// second of the entry's age. The UDP fast path replays it until then.
    pub fresh_until: Instant,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub min_ttl: u32,
    pub max_ttl: u32,
    pub negative_max_ttl: u32,
}

const SHARDS: usize = 16;

pub struct Cache {
    shards: Vec<Mutex<LruCache<Key, Arc<Entry>>>>,
    hasher: foldhash::fast::RandomState,
    limits: Limits,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

impl Cache {
    /// `size` 0 disables caching.
    pub fn new(size: usize, limits: Limits) -> Self {
        let per_shard = size.div_ceil(SHARDS);
        let shards = match NonZeroUsize::new(per_shard) {
            Some(n) => (0..SHARDS).map(|_| Mutex::new(LruCache::new(n))).collect(),
            None => Vec::new(),
        };
        Self {
            shards,
            hasher: foldhash::fast::RandomState::default(),
            limits,
            hits: Default::default(),
            misses: Default::default(),
        }
    }

    fn shard(&self, key: &Key) -> Option<&Mutex<LruCache<Key, Arc<Entry>>>> {
        if self.shards.is_empty() {
            return None;
        }
        let h = self.hasher.hash_one(key) as usize;
        self.shards.get(h % self.shards.len())
    }

    /// A fresh answer for `key`, its TTLs aged; counts the hit or miss.
    pub fn get(&self, key: &Key, now: Instant) -> Option<Hit> {
        let hit = self.lookup(key, now);
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        hit
    }

    /// A hit served by the UDP fast path, which replays the answer without a lookup.
    pub fn count_hit(&self) {
        self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// (hits, misses) since start.
    pub fn lookups(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }

    fn lookup(&self, key: &Key, now: Instant) -> Option<Hit> {
        let shard = self.shard(key)?;
        let entry = {
            let mut lru = shard.lock();
            let entry = lru.get(key)?.clone();
            let age = now.saturating_duration_since(entry.stored);
            if age >= Duration::from_secs(u64::from(entry.ttl)) {
                lru.pop(key);
                return None;
            }
            entry
        };
        let age = now.saturating_duration_since(entry.stored).as_secs() as u32;
        let age_records = |records: &[Record]| -> Vec<Record> {
            records
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.ttl = r.ttl.saturating_sub(age);
                    r
                })
                .collect()
        };
        Some(Hit {
            fresh_until: entry.stored + Duration::from_secs(u64::from(age) + 1),
            answer: Upstreamed {
                authentic: entry.answer.authentic,
                rcode: entry.answer.rcode,
                answers: age_records(&entry.answer.answers),
                authorities: age_records(&entry.answer.authorities),
                additionals: age_records(&entry.answer.additionals),
            },
        })
    }

    /// Stores an answer if it may be cached: NOERROR and NXDOMAIN only (a SERVFAIL or
    /// REFUSED is a passing state of the upstream, not a fact about the name).
    pub fn insert(&self, key: Key, answer: &Upstreamed, now: Instant) {
        let Some(shard) = self.shard(&key) else {
            return;
        };
        let Some(ttl) = self.ttl_of(answer) else {
            return;
        };
        let entry = Arc::new(Entry {
            answer: answer.clone(),
            stored: now,
            ttl,
        });
        shard.lock().put(key, entry);
    }

    fn ttl_of(&self, a: &Upstreamed) -> Option<u32> {
        let l = &self.limits;
        let ttl = match a.rcode {
            ResponseCode::NoError if !a.answers.is_empty() => a
                .answers
                .iter()
                .map(|r| r.ttl)
                .min()?
                .clamp(l.min_ttl, l.max_ttl.max(l.min_ttl)),
            // RFC 2308 section 5: the negative TTL is the SOA's TTL capped by its MINIMUM.
            ResponseCode::NoError | ResponseCode::NXDomain => {
                let soa = a.authorities.iter().find_map(|r| match &r.data {
                    hickory_proto::rr::RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                    _ => None,
                })?;
                soa.min(l.negative_max_ttl)
            }
            _ => return None,
        };
        (ttl > 0).then_some(ttl)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
