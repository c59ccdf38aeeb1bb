//! A hash index from entry ids to slot numbers that stores no key.
//!
//! Each bucket is 8 bytes: 32 bits of the key's hash and the slot number. The key itself
//! lives in the slot (the entry's own id), so the index costs 8 bytes per bucket instead of a
//! copy of the key plus the whole value (a `HashMap<EntryId, Slot>` bucket was 240 bytes).
//! Open addressing with linear probing; the stored hash bits pick the home bucket when the
//! table grows, so growing never reads a slot, and a probe compares a key only when all 32
//! bits match. Removal shifts the following buckets back (no tombstones).

use std::hash::BuildHasher;

/// A `u64` bucket: the hash in the high half, the slot number + 1 in the low half; 0 = empty.
type Bucket = u64;

/// Buckets of an index that has grown for the first time.
const MIN_BUCKETS: usize = 16;

/// Slot numbers keyed by 32 bits of the hash of a key the caller keeps.
pub(super) struct Index {
    buckets: Vec<Bucket>,
    len: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            buckets: Vec::new(),
            len: 0,
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

fn bucket(hash: u32, slot: u32) -> Bucket {
    (u64::from(hash) << 32) | u64::from(slot + 1)
}

fn bucket_hash(b: Bucket) -> u32 {
    (b >> 32) as u32
}

fn bucket_slot(b: Bucket) -> u32 {
    (b as u32).wrapping_sub(1)
}

impl Index {
    /// The number of keys.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The 32-bit hash of `key` (randomly keyed per index, so that ids chosen by a peer
    /// cannot be made to collide).
    #[inline]
    pub(super) fn hash(&self, key: &str) -> u32 {
        let h = self.hasher.hash_one(key);
        (h ^ (h >> 32)) as u32
    }

    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    /// The slot whose key has hash `hash` and satisfies `is_key`.
    #[inline]
    pub(super) fn find(&self, hash: u32, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        // Never full (at most 7/8), so an empty bucket ends every probe; the bound is a guard.
        for _ in 0..self.buckets.len() {
            let b = self.buckets[i];
            if b == 0 {
                return None;
            }
            if bucket_hash(b) == hash && is_key(bucket_slot(b)) {
                return Some(bucket_slot(b));
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Adds `slot` under `hash`; the caller has checked that its key is absent. `slot` must
    /// be below `u32::MAX`.
    pub(super) fn insert(&mut self, hash: u32, slot: u32) {
        if (self.len + 1) * 8 > self.buckets.len() * 7 {
            self.grow();
        }
        self.place(bucket(hash, slot));
        self.len += 1;
    }

    fn place(&mut self, b: Bucket) {
        let mask = self.mask();
        let mut i = bucket_hash(b) as usize & mask;
        while self.buckets[i] != 0 {
            i = (i + 1) & mask;
        }
        self.buckets[i] = b;
    }

    fn grow(&mut self) {
        let n = (self.buckets.len() * 2).max(MIN_BUCKETS);
        let old = std::mem::replace(&mut self.buckets, vec![0; n]);
        for b in old.into_iter().filter(|b| *b != 0) {
            self.place(b);
        }
    }

    /// Removes `slot`, stored under `hash`; returns whether it was there.
    pub(super) fn remove(&mut self, hash: u32, slot: u32) -> bool {
        let target = bucket(hash, slot);
        let mask = self.mask();
        let mut i = hash as usize & mask;
        let mut found = false;
        for _ in 0..self.buckets.len() {
            match self.buckets[i] {
                0 => break,
                b if b == target => {
                    found = true;
                    break;
                }
                _ => i = (i + 1) & mask,
            }
        }
        if !found {
            return false;
        }
        // Backward shift: move each following bucket of the run into the hole when the hole
        // lies between its home bucket and where it is.
        let dist = |from: usize, to: usize| to.wrapping_sub(from) & mask;
        let mut hole = i;
        let mut j = i;
        for _ in 0..self.buckets.len() {
            j = (j + 1) & mask;
            let b = self.buckets[j];
            if b == 0 {
                break;
            }
            let home = bucket_hash(b) as usize & mask;
            if dist(home, j) >= dist(hole, j) {
                self.buckets[hole] = b;
                hole = j;
            }
        }
        self.buckets[hole] = 0;
        self.len -= 1;
        true
    }

    /// The number of buckets.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Keys are small numbers; their "hash" is taken from a few bits so that many collide.
    fn h(key: u32, bits: u32) -> u32 {
        key.wrapping_mul(0x9E37_79B9) >> (32 - bits)
    }

    proptest! {
        /// Inserts and removals (with heavy collisions) answer like a `HashMap`.
        #[test]
        fn behaves_like_a_map(
            ops in proptest::collection::vec((any::<bool>(), 0u32..300), 0..2000),
            bits in 1u32..12,
        ) {
            let mut index = Index::default();
            // key → slot; slot = key + 7 so the two differ.
            let mut model: HashMap<u32, u32> = HashMap::new();
            for (add, key) in ops {
                let hash = h(key, bits);
                let found = index.find(hash, |s| s == key + 7);
                prop_assert_eq!(found, model.get(&key).copied());
                if add {
                    if found.is_none() {
                        index.insert(hash, key + 7);
                        model.insert(key, key + 7);
                    }
                } else {
                    prop_assert_eq!(index.remove(hash, key + 7), model.remove(&key).is_some());
                }
                prop_assert_eq!(index.len(), model.len());
            }
            for key in 0..300 {
                prop_assert_eq!(index.find(h(key, bits), |s| s == key + 7), model.get(&key).copied());
            }
            prop_assert!(index.len() * 8 <= index.capacity() * 7);
        }
    }

    #[test]
    fn hash_is_per_index_and_stable() {
        let a = Index::default();
        assert_eq!(a.hash("entry-1"), a.hash("entry-1"));
        let keys: Vec<u32> = (0..64).map(|i| a.hash(&format!("e{i}"))).collect();
        let mut distinct = keys.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(
            distinct.len() > 60,
            "32-bit hashes of 64 keys nearly never collide"
        );
    }
}
