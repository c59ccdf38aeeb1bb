//! The change log of one feed: (position, slot) records, sorted, in chunks.
//!
//! Each entry's latest change is one live record; when the entry changes again, its old
//! record is marked dead (it stays in place, so that a rollback can revive it) and a new one
//! is appended. Positions only grow, so the records are sorted and a cursor is found by
//! binary search. [`Log::compact`] (called on commit, when no rollback can need a dead record)
//! drops the dead records of every chunk that is more than half dead, so that outside a
//! transaction no chunk holds more dead records than live ones: a page of changes walks at
//! most about twice the records it examines (plus two partial chunks), never the whole log.
//! 12 bytes per record, where a `BTreeMap<u64, EntryId>` cost about 49 bytes per entry.

/// Records per chunk, at most.
const CHUNK: usize = 1024;

/// The slot number of a dead record.
const DEAD: u32 = u32::MAX;

/// The most records a log holds, dead or alive.
const MAX_RECORDS: u64 = u32::MAX as u64;

/// One record: a position (split in two `u32`s, so that the record is 12 bytes) and
/// the slot of the entry it changed, or [`DEAD`].
#[derive(Clone, Copy)]
struct Rec {
    seq_lo: u32,
    seq_hi: u32,
    slot: u32,
}

impl Rec {
    #[inline]
    fn seq(&self) -> u64 {
        (u64::from(self.seq_hi) << 32) | u64::from(self.seq_lo)
    }
}

/// Sorted records, never empty while in a [`Log`].
#[derive(Default)]
struct Chunk {
    recs: Vec<Rec>,
    dead: u32,
}

impl Chunk {
    fn last_seq(&self) -> u64 {
        self.recs.last().map_or(0, Rec::seq)
    }

    /// Whether more than half of the records are dead.
    fn sparse(&self) -> bool {
        self.dead as usize * 2 > self.recs.len()
    }
}

/// A feed's change log.
#[derive(Default)]
pub(super) struct Log {
    chunks: Vec<Chunk>,
    /// Records, dead or alive.
    len: u64,
    /// Chunks that became more than half dead since the last [`Log::compact`] (may repeat,
    /// and may name chunks a rollback removed since; [`Log::compact`] checks).
    sparse: Vec<usize>,
}

impl Log {
    /// The position of the latest change (0 when empty). The last record is always
    /// live: a record dies only when a newer one is appended for the same entry.
    pub(super) fn head(&self) -> u64 {
        self.chunks.last().map_or(0, Chunk::last_seq)
    }

    /// Whether no record can be appended.
    pub(super) fn is_full(&self) -> bool {
        self.len >= MAX_RECORDS
    }

    /// Appends the record of change `seq` (greater than every position held) to `slot`
    /// (below `u32::MAX`). Does nothing when [`Self::is_full`], which the caller checks first.
    pub(super) fn append(&mut self, seq: u64, slot: u32) {
        debug_assert!(seq > self.head() && slot != DEAD);
        if self.is_full() {
            return;
        }
        let rec = Rec {
            seq_lo: seq as u32,
            seq_hi: (seq >> 32) as u32,
            slot,
        };
        match self.chunks.last_mut() {
            Some(c) if c.recs.len() < CHUNK => c.recs.push(rec),
            _ => {
                let mut recs = Vec::with_capacity(CHUNK);
                recs.push(rec);
                self.chunks.push(Chunk { recs, dead: 0 });
            }
        }
        self.len += 1;
    }

    /// Removes the last record (undoing [`Self::append`]); returns its position.
    pub(super) fn pop(&mut self) -> Option<u64> {
        let last = self.chunks.last_mut()?;
        let r = last.recs.pop()?;
        if r.slot == DEAD {
            last.dead -= 1;
        }
        if last.recs.is_empty() {
            self.chunks.pop();
        } else if last.sparse() {
            self.sparse.push(self.chunks.len() - 1);
        }
        self.len -= 1;
        Some(r.seq())
    }

    /// The chunk and position of the record of change `seq`.
    fn position(&self, seq: u64) -> Option<(usize, usize)> {
        let c = self.chunks.partition_point(|c| c.last_seq() < seq);
        let recs = &self.chunks.get(c)?.recs;
        let i = recs.partition_point(|r| r.seq() < seq);
        recs.get(i).filter(|r| r.seq() == seq).map(|_| (c, i))
    }

    /// Marks the record of change `seq` dead; returns whether it was live.
    pub(super) fn kill(&mut self, seq: u64) -> bool {
        let Some((c, i)) = self.position(seq) else {
            return false;
        };
        let chunk = &mut self.chunks[c];
        if chunk.recs[i].slot == DEAD {
            return false;
        }
        chunk.recs[i].slot = DEAD;
        chunk.dead += 1;
        if chunk.sparse() && self.sparse.last() != Some(&c) {
            self.sparse.push(c);
        }
        true
    }

    /// Makes the dead record of change `seq` live again, pointing to `slot` (undoing
    /// [`Self::kill`]); returns whether it was dead.
    pub(super) fn revive(&mut self, seq: u64, slot: u32) -> bool {
        let Some((c, i)) = self.position(seq) else {
            return false;
        };
        let chunk = &mut self.chunks[c];
        if chunk.recs[i].slot != DEAD {
            return false;
        }
        chunk.recs[i].slot = slot;
        chunk.dead -= 1;
        true
    }

    /// The live records after position `since`, in order, as (position, slot).
    pub(super) fn after(&self, since: u64) -> impl Iterator<Item = (u64, u32)> + '_ {
        let c = self.chunks.partition_point(|c| c.last_seq() <= since);
        let rest = self.chunks.get(c..).unwrap_or_default();
        rest.iter()
            .enumerate()
            .flat_map(move |(k, chunk)| {
                let from = if k == 0 {
                    chunk.recs.partition_point(|r| r.seq() <= since)
                } else {
                    0
                };
                chunk.recs.get(from..).unwrap_or_default()
            })
            .filter(|r| r.slot != DEAD)
            .map(|r| (r.seq(), r.slot))
    }

    /// Drops the dead records of every chunk that is more than half dead, and merges such a
    /// chunk into the next one when both fit in one. Costs O(size of those chunks), which is
    /// at most twice the records that died in them.
    pub(super) fn compact(&mut self) {
        if self.sparse.is_empty() {
            return;
        }
        let mut sparse = std::mem::take(&mut self.sparse);
        sparse.sort_unstable();
        sparse.dedup();
        // From the last, so that removing a chunk moves none still to be visited.
        for c in sparse.into_iter().rev() {
            let Some(chunk) = self.chunks.get_mut(c).filter(|k| k.sparse()) else {
                continue;
            };
            let dead = u64::from(chunk.dead);
            chunk.recs.retain(|r| r.slot != DEAD);
            chunk.dead = 0;
            self.len -= dead;
            if chunk.recs.is_empty() {
                self.chunks.remove(c);
                continue;
            }
            let fits = self
                .chunks
                .get(c + 1)
                .is_some_and(|next| next.recs.len() + self.chunks[c].recs.len() <= CHUNK);
            if fits {
                let next = self.chunks.remove(c + 1);
                let chunk = &mut self.chunks[c];
                chunk.recs.extend_from_slice(&next.recs);
                chunk.dead += next.dead;
            } else {
                let chunk = &mut self.chunks[c];
                if chunk.recs.capacity() > 2 * chunk.recs.len() {
                    chunk.recs.shrink_to_fit();
                }
            }
        }
    }

    /// The number of dead records and the number of chunks.
    #[cfg(test)]
    pub(super) fn shape(&self) -> (u64, usize) {
        let dead = self.chunks.iter().map(|c| u64::from(c.dead)).sum();
        (dead, self.chunks.len())
    }

    /// Whether every chunk counts its dead records right, none is empty, and the log counts
    /// its records right.
    #[cfg(test)]
    fn counts_hold(&self) -> bool {
        let each = self.chunks.iter().all(|c| {
            !c.recs.is_empty()
                && c.dead as usize == c.recs.iter().filter(|r| r.slot == DEAD).count()
        });
        each && self.len == self.chunks.iter().map(|c| c.recs.len() as u64).sum::<u64>()
    }

    /// Whether no chunk is more than half dead.
    #[cfg(test)]
    pub(super) fn is_compact(&self) -> bool {
        self.chunks.iter().all(|c| !c.sparse())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn live(log: &Log) -> Vec<(u64, u32)> {
        log.after(0).collect()
    }

    #[test]
    fn kill_revive_pop_and_compact() {
        let mut log = Log::default();
        for i in 0..3000u32 {
            log.append(u64::from(i) + 1, i);
        }
        // A position above 32 bits survives the split.
        log.append(1 << 40, 3000);
        assert_eq!(log.head(), 1 << 40);
        assert!(log.kill(5));
        assert!(!log.kill(5));
        assert!(!log.kill(1 << 33));
        assert_eq!(log.after(3).take(2).collect::<Vec<_>>(), [(4, 3), (6, 5)]);
        assert!(log.revive(5, 4));
        assert!(!log.revive(5, 4));
        assert_eq!(log.after(3).take(2).collect::<Vec<_>>(), [(4, 3), (5, 4)]);
        assert_eq!(log.pop(), Some(1 << 40));
        assert_eq!(log.head(), 3000);
        // The whole first chunk and 600 of the second die: the first is dropped, the second
        // (424 left) is merged with the third (952 records).
        for s in 1..=1624 {
            assert!(log.kill(s));
        }
        log.compact();
        assert_eq!(log.shape(), (0, 2));
        let want: Vec<(u64, u32)> = (1625..=3000).map(|s| (s, s as u32 - 1)).collect();
        assert_eq!(live(&log), want);
        assert_eq!(log.after(2500).next(), Some((2501, 2500)));
        assert_eq!(log.after(3000).next(), None);
        assert_eq!(log.len, 1376);
    }

    #[test]
    fn a_chunk_half_dead_or_less_is_kept() {
        let mut log = Log::default();
        for i in 0..1000u32 {
            log.append(u64::from(i) + 1, i);
        }
        for s in 1..=500 {
            log.kill(s * 2);
        }
        log.compact();
        assert_eq!(
            log.shape(),
            (500, 1),
            "500 dead of 1000 are not more than half"
        );
        log.kill(1);
        log.compact();
        assert_eq!(log.shape(), (0, 1));
        assert_eq!(live(&log).len(), 499);
    }

    #[test]
    fn merging_chunks_keeps_their_dead_records_counted() {
        let mut log = Log::default();
        for i in 0..1124u32 {
            log.append(u64::from(i) + 1, i);
        }
        // 10 dead in the second chunk (100 records) keep it; 600 of the first chunk do not.
        for s in 1101..=1110 {
            log.kill(s);
        }
        for s in 1..=600 {
            log.kill(s);
        }
        log.compact();
        assert_eq!(
            log.shape(),
            (10, 1),
            "the first chunk's 424 merged with the second's 100"
        );
        assert!(log.counts_hold());
        assert!(log.revive(1105, 7));
        assert_eq!(log.shape(), (9, 1));
        assert_eq!(live(&log).len(), 424 + 91);
    }

    proptest! {
        /// Appends, kills (of any record), pops and compactions keep the live records a model
        /// holds, and after a compaction no chunk is more than half dead.
        #[test]
        fn behaves_like_a_sorted_map(ops in proptest::collection::vec((0u8..10, any::<u16>()), 0..6000)) {
            let mut log = Log::default();
            // seq → slot, or None when dead.
            let mut model: BTreeMap<u64, Option<u32>> = BTreeMap::new();
            let mut next = 1u64;
            for (op, x) in ops {
                match op {
                    0..=5 => {
                        log.append(next, u32::from(x));
                        model.insert(next, Some(u32::from(x)));
                        next += 1 + u64::from(x % 3);
                    }
                    6 | 7 => {
                        let seq = 1 + u64::from(x) % next;
                        let was_live = model.get(&seq).is_some_and(Option::is_some);
                        prop_assert_eq!(log.kill(seq), was_live);
                        if was_live {
                            model.insert(seq, None);
                        }
                    }
                    8 => {
                        // Only the last record is ever popped (a rollback), and it is live.
                        if model.values().last().is_some_and(Option::is_some) {
                            let last = model.pop_last().map(|(s, _)| s);
                            prop_assert_eq!(log.pop(), last);
                        }
                    }
                    _ => {
                        log.compact();
                        prop_assert!(log.is_compact());
                    }
                }
                prop_assert!(log.counts_hold());
                let since = u64::from(x) % (next + 1);
                let want: Vec<(u64, u32)> = model
                    .range(since + 1..)
                    .filter_map(|(s, v)| v.map(|slot| (*s, slot)))
                    .take(5)
                    .collect();
                prop_assert_eq!(log.after(since).take(5).collect::<Vec<_>>(), want);
            }
            let want: Vec<(u64, u32)> = model.iter().filter_map(|(s, v)| v.map(|slot| (*s, slot))).collect();
            prop_assert_eq!(live(&log), want);
        }
    }
}
