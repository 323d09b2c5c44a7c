//! A receive thread's table of kept answers (src/dns/udp.rs), built for the replay's one
//! lookup per query.
//!
//! An LRU list (the `lru` crate) costs a replay three dependent memory loads after the
//! hash table's control bytes (the bucket's pointer to the list node, the node, the key's
//! own allocation) and relinks the node on every hit; measured on the mix workload, that
//! lookup was 4% of the server's CPU, nearly all of it cache misses. Here an entry sits
//! in the table itself with its full hash, so a lookup reads the control bytes, compares
//! hashes in place and touches the key's bytes only on a probable match; a hit sets one
//! bit. When the table is full, a sweep drops the entries not used since the sweep before
//! (second chance, as a CLOCK cache does), or an eighth of them if all were, so an insert
//! costs O(1) amortised.

use std::hash::BuildHasher;

use hashbrown::HashTable;

struct Slot<V> {
    hash: u64,
    key: Box<[u8]>,
    used: bool,
    value: V,
}

pub struct KeptTable<V> {
    table: HashTable<Slot<V>>,
    capacity: usize,
    hasher: foldhash::fast::RandomState,
}

impl<V> KeptTable<V> {
    pub fn new(capacity: usize) -> Self {
        KeptTable {
            table: HashTable::new(),
            capacity: capacity.max(8),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    #[inline]
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let hash = self.hasher.hash_one(key);
        let slot = self
            .table
            .find_mut(hash, |s| s.hash == hash && *s.key == *key)?;
        slot.used = true;
        Some(&mut slot.value)
    }

    /// Keeps `value` under `key` (replacing what was there), making room first if full.
    pub fn put(&mut self, key: &[u8], value: V) {
        let hash = self.hasher.hash_one(key);
        if let Some(slot) = self
            .table
            .find_mut(hash, |s| s.hash == hash && *s.key == *key)
        {
            slot.value = value;
            slot.used = true;
            return;
        }
        if self.table.len() >= self.capacity {
            self.sweep();
        }
        self.table.insert_unique(
            hash,
            Slot {
                hash,
                key: key.into(),
                used: false,
                value,
            },
            |s| s.hash,
        );
    }

    /// Drops the entries not used since the last sweep and clears the mark of the rest;
    /// if every entry was used, drops an eighth of them (in table order: arbitrary).
    fn sweep(&mut self) {
        self.table.retain(|s| std::mem::replace(&mut s.used, false));
        let excess = self.table.len() + 1 + self.capacity / 8;
        if excess > self.capacity {
            let mut drop = excess - self.capacity;
            self.table.retain(|_| {
                if drop > 0 {
                    drop -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_keeps_what_is_used_and_never_grows_past_its_capacity() {
        let mut t = KeptTable::new(64);
        for i in 0..64u32 {
            t.put(&i.to_be_bytes(), i);
        }
        // The first eight are asked again; the rest are not.
        for i in 0..8u32 {
            assert_eq!(t.get_mut(&i.to_be_bytes()).copied(), Some(i));
        }
        t.put(b"new", 1000);
        assert!(t.len() <= 64);
        for i in 0..8u32 {
            assert!(t.get_mut(&i.to_be_bytes()).is_some(), "{i} was used");
        }
        assert_eq!(t.get_mut(b"new").copied(), Some(1000));
        for i in 0..10_000u32 {
            t.put(&(i + 100).to_be_bytes(), i);
            assert!(t.len() <= 64);
        }
        // Replacing keeps one entry per key.
        t.put(b"new", 2000);
        t.put(b"new", 3000);
        assert_eq!(t.get_mut(b"new").copied(), Some(3000));
    }
}
