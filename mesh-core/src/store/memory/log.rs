//! The change log of one feed: an append-only array of (sequence number, slot) records.
//!
//! Each entry's latest change is one live record; when the entry changes again, its old
//! record is marked dead (it stays in place, so that a rollback can revive it) and a new one
//! is appended. Sequence numbers only grow, so the array is sorted and a cursor is found by
//! binary search. [`Log::compact`] drops the dead records once there are too many (the store
//! calls it on commit, when no rollback can need them). 12 bytes per record, in chunks
//! ([`Chunked`]), where a `BTreeMap<u64, EntryId>` cost about 49 bytes per entry.

use super::chunked::Chunked;

/// The slot number of a dead record.
const DEAD: u32 = u32::MAX;

/// Dead records kept at most before compaction, beyond half the live ones.
const DEAD_SLACK: u32 = 64;

/// One record: a sequence number (split in two `u32`s, so that the record is 12 bytes) and
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

/// A feed's change log.
#[derive(Default)]
pub(super) struct Log {
    recs: Chunked<Rec>,
    dead: u32,
}

impl Log {
    /// The sequence number of the latest change (0 when empty). The last record is always
    /// live: a record dies only when a newer one is appended for the same entry.
    pub(super) fn head(&self) -> u64 {
        self.recs.last().map_or(0, Rec::seq)
    }

    /// Whether no record can be appended.
    pub(super) fn is_full(&self) -> bool {
        self.recs.len() >= Chunked::<Rec>::MAX
    }

    /// Appends the record of change `seq` (greater than every sequence number held) to `slot`
    /// (below `u32::MAX`). Does nothing when [`Self::is_full`], which the caller checks first.
    pub(super) fn append(&mut self, seq: u64, slot: u32) {
        debug_assert!(seq > self.head() && slot != DEAD);
        let _ = self.recs.push(Rec {
            seq_lo: seq as u32,
            seq_hi: (seq >> 32) as u32,
            slot,
        });
    }

    /// Removes the last record (undoing [`Self::append`]); returns its sequence number.
    pub(super) fn pop(&mut self) -> Option<u64> {
        let r = self.recs.pop()?;
        if r.slot == DEAD {
            self.dead -= 1;
        }
        Some(r.seq())
    }

    fn position(&self, seq: u64) -> Option<u32> {
        let i = self.recs.partition_point(|r| r.seq() < seq);
        self.recs.get(i).filter(|r| r.seq() == seq).map(|_| i)
    }

    /// Marks the record of change `seq` dead; returns whether it was live.
    pub(super) fn kill(&mut self, seq: u64) -> bool {
        let Some(i) = self.position(seq) else {
            return false;
        };
        match self.recs.get_mut(i) {
            Some(r) if r.slot != DEAD => {
                r.slot = DEAD;
                self.dead += 1;
                true
            }
            _ => false,
        }
    }

    /// Makes the dead record of change `seq` live again, pointing to `slot` (undoing
    /// [`Self::kill`]); returns whether it was dead.
    pub(super) fn revive(&mut self, seq: u64, slot: u32) -> bool {
        let Some(i) = self.position(seq) else {
            return false;
        };
        match self.recs.get_mut(i) {
            Some(r) if r.slot == DEAD => {
                r.slot = slot;
                self.dead -= 1;
                true
            }
            _ => false,
        }
    }

    /// The live records after sequence number `since`, in order, as (sequence, slot).
    pub(super) fn after(&self, since: u64) -> impl Iterator<Item = (u64, u32)> + '_ {
        let start = self.recs.partition_point(|r| r.seq() <= since);
        self.recs
            .iter_from(start)
            .filter(|r| r.slot != DEAD)
            .map(|r| (r.seq(), r.slot))
    }

    /// Drops the dead records when they are more than half the live ones (and more than a
    /// few), so that they never outnumber the live ones by much: reading a page walks at most
    /// about 1.5 records per change. Costs O(records), once per that many deaths.
    pub(super) fn compact(&mut self) {
        let live = self.recs.len() - self.dead;
        if self.dead > DEAD_SLACK && self.dead > live / 2 {
            self.recs.retain(|r| r.slot != DEAD);
            self.dead = 0;
        }
    }

    /// The number of dead records.
    #[cfg(test)]
    pub(super) fn dead(&self) -> u32 {
        self.dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(log: &Log) -> Vec<(u64, u32)> {
        log.after(0).collect()
    }

    #[test]
    fn kill_revive_pop_and_compact() {
        let mut log = Log::default();
        for i in 0..300u32 {
            log.append(u64::from(i) + 1, i);
        }
        // A sequence number above 32 bits survives the split.
        log.append(1 << 40, 300);
        assert_eq!(log.head(), 1 << 40);
        assert!(log.kill(5));
        assert!(!log.kill(5));
        assert!(!log.kill(1 << 33));
        assert_eq!(log.after(3).take(2).collect::<Vec<_>>(), [(4, 3), (6, 5)]);
        assert!(log.revive(5, 4));
        assert!(!log.revive(5, 4));
        assert_eq!(log.after(3).take(2).collect::<Vec<_>>(), [(4, 3), (5, 4)]);
        assert_eq!(log.pop(), Some(1 << 40));
        assert_eq!(log.head(), 300);
        // Kill 200 of 300: compaction drops them and keeps the order.
        for s in 1..=200 {
            assert!(log.kill(s));
        }
        assert_eq!(log.dead(), 200);
        log.compact();
        assert_eq!(log.dead(), 0);
        let want: Vec<(u64, u32)> = (201..=300).map(|s| (s, s as u32 - 1)).collect();
        assert_eq!(live(&log), want);
        assert_eq!(log.after(250).next(), Some((251, 250)));
        assert_eq!(log.after(300).next(), None);
    }

    #[test]
    fn few_dead_records_are_kept() {
        let mut log = Log::default();
        for i in 0..1000u32 {
            log.append(u64::from(i) + 1, i);
        }
        for s in 1..=DEAD_SLACK as u64 {
            log.kill(s * 3);
        }
        log.compact();
        assert_eq!(
            log.dead(),
            DEAD_SLACK,
            "64 dead of 1000 are not worth a copy"
        );
        assert_eq!(live(&log).len(), 1000 - DEAD_SLACK as usize);
    }
}
