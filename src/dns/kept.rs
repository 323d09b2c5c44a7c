//! A receive thread's table of kept answers (src/dns/udp.rs), built for the replay's one
//! lookup per query.
//!
//! An LRU list (the `lru` crate) costs a replay three dependent memory loads after the
//! hash table's control bytes (the bucket's pointer to the list node, the node, the key's
//! own allocation) and relinks the node on every hit; measured on the mix workload, that
//! lookup was 4% of the server's CPU, nearly all of it cache misses. Here an entry sits
//! in the table itself with its full hash, so a lookup reads the control bytes, compares
//! hashes in place and touches the key's bytes only on a probable match.
//!
//! Recency in two generations instead of a list: new entries go to the young table; when
//! it holds half the capacity, the old table is dropped whole and the young one becomes
//! old. A hit in the old table moves the entry back to the young one. So what was used
//! within the last half-capacity of inserts stays, an insert costs O(1) amortised (one
//! entry dropped per entry inserted, no scan), and a hit costs nothing but the lookup.
//! (A first version swept a full table for unused entries: with a million-name list,
//! where most first answers are never asked again, the sweeps cost more than the LRU.)

use std::hash::BuildHasher;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

struct Slot<V> {
    hash: u64,
    key: Box<[u8]>,
    value: V,
}

pub struct KeptTable<V> {
    young: HashTable<Slot<V>>,
    old: HashTable<Slot<V>>,
    /// Entries per generation: half the capacity.
    generation: usize,
    hasher: foldhash::fast::RandomState,
}

impl<V> KeptTable<V> {
    pub fn new(capacity: usize) -> Self {
        let generation = (capacity / 2).max(4);
        KeptTable {
            young: HashTable::with_capacity(generation),
            old: HashTable::new(),
            generation,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let hash = self.hasher.hash_one(key);
        let eq = |s: &Slot<V>| s.hash == hash && *s.key == *key;
        // The young table's one lookup; on a miss its borrow goes on into the insert.
        let young = match self.young.find_entry(hash, eq) {
            Ok(found) => return Some(&mut found.into_mut().value),
            Err(absent) => absent.into_table(),
        };
        let Ok(found) = self.old.find_entry(hash, eq) else {
            return None;
        };
        let (slot, _) = found.remove();
        Some(&mut insert_young(young, &mut self.old, self.generation, slot).value)
    }

    /// Keeps `value` under `key` (replacing what was there).
    pub fn put(&mut self, key: &[u8], value: V) {
        let hash = self.hasher.hash_one(key);
        let eq = |s: &Slot<V>| s.hash == hash && *s.key == *key;
        if let Ok(found) = self.old.find_entry(hash, eq) {
            found.remove();
        }
        match self.young.entry(hash, eq, |s| s.hash) {
            Entry::Occupied(mut slot) => slot.get_mut().value = value,
            Entry::Vacant(_) => {
                self.insert_young(Slot {
                    hash,
                    key: key.into(),
                    value,
                });
            }
        }
    }

    fn insert_young(&mut self, slot: Slot<V>) {
        insert_young(&mut self.young, &mut self.old, self.generation, slot);
    }
}

/// Inserts into the young table; a full young table becomes the old one first (the old
/// one's entries are dropped).
fn insert_young<'t, V>(
    young: &'t mut HashTable<Slot<V>>,
    old: &mut HashTable<Slot<V>>,
    generation: usize,
    slot: Slot<V>,
) -> &'t mut Slot<V> {
    if young.len() >= generation {
        // The old generation goes; its table's memory is the new young one's (a table of
        // this size allocated and freed each time cost more than the entries).
        std::mem::swap(young, old);
        young.clear();
    }
    young.insert_unique(slot.hash, slot, |s| s.hash).into_mut()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_used_within_a_generation_stays_and_the_table_stays_bounded() {
        // Capacity 64: generations of 32.
        let mut t = KeptTable::new(64);
        let key = |i: u32| i.to_be_bytes();
        for i in 0..32 {
            t.put(&key(i), i);
        }
        assert!((0..8).all(|i| t.get_mut(&key(i)).copied() == Some(i)));
        // 20 new ones: the first 32 become the old generation.
        for i in 100..120 {
            t.put(&key(i), i);
        }
        // Used again: moved back to the young generation.
        assert!((0..8).all(|i| t.get_mut(&key(i)).copied() == Some(i)));
        for i in 200..205 {
            t.put(&key(i), i);
        }
        // The young generation was full: the old one (8..32, never used again) is gone.
        assert!((0..8).all(|i| t.get_mut(&key(i)).is_some()));
        assert!((8..32).all(|i| t.get_mut(&key(i)).is_none()));
        assert!((100..120).all(|i| t.get_mut(&key(i)).is_some()));
        for i in 0..10_000 {
            t.put(&key(i + 1000), i);
            assert!(t.len() <= 64);
        }
        // Replacing keeps one entry per key, in either generation.
        t.put(b"new", 1);
        for i in 0..40 {
            t.put(&key(i + 50_000), i);
        }
        t.put(b"new", 2);
        assert_eq!(t.get_mut(b"new").copied(), Some(2));
        t.put(b"new", 3);
        assert_eq!(t.get_mut(b"new").copied(), Some(3));
        assert!(t.len() <= 64);
    }
}
