//! Interned writers: who wrote an entry and where it came from.
//!
//! Most entries of a replica share a handful of authors, devices and origins, so a slot names
//! the three together by a `u32` (4 bytes instead of 3 × 16 bytes of `Arc<str>` handles).
//! Each interned triple counts the slots (and undo records) that name it and is dropped when
//! none does, so the table never holds more triples than there are slots.

use std::collections::HashMap;

use crate::error::{CoreError, Result};
use crate::id::{DeviceId, ReplicaId, UserId};

/// The writer fields of one stored entry.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct Who {
    /// The entry's author (`EntryData::author`).
    pub(super) author: UserId,
    /// The device of the topmost history item (`HistoryItem::by`), if any.
    pub(super) by: Option<DeviceId>,
    /// The replica the latest write came from verbatim (skipped when it asks for changes).
    pub(super) origin: Option<ReplicaId>,
}

struct Counted {
    who: Who,
    refs: u32,
}

/// The interned [`Who`]s of a store.
#[derive(Default)]
pub(super) struct Whos {
    table: Vec<Option<Counted>>,
    ids: HashMap<Who, u32>,
    free: Vec<u32>,
    /// The last one interned: batches usually come from one writer, so this is checked first.
    last: Option<u32>,
}

impl Whos {
    /// The number of `Who` held in the table.
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// The `Who` numbered `i`.
    #[inline]
    pub(super) fn get(&self, i: u32) -> Result<&Who> {
        self.table
            .get(i as usize)
            .and_then(Option::as_ref)
            .map(|c| &c.who)
            .ok_or_else(|| CoreError::Store(format!("memory store: no writer numbered {i}")))
    }

    /// The number of `who`, counting one more reference to it.
    pub(super) fn intern(&mut self, who: Who) -> Result<u32> {
        if let Some(i) = self.last {
            if let Some(Some(c)) = self.table.get_mut(i as usize) {
                if c.who == who {
                    c.refs += 1;
                    return Ok(i);
                }
            }
        }
        let i = match self.ids.get(&who) {
            Some(&i) => {
                if let Some(Some(c)) = self.table.get_mut(i as usize) {
                    c.refs += 1;
                }
                i
            }
            None => {
                let counted = Some(Counted {
                    who: who.clone(),
                    refs: 1,
                });
                let i = match self.free.pop() {
                    Some(i) => {
                        self.table[i as usize] = counted;
                        i
                    }
                    None => {
                        let i = u32::try_from(self.table.len())
                            .ok()
                            .filter(|i| *i < u32::MAX)
                            .ok_or_else(|| {
                                CoreError::LimitExceeded("memory store: too many writers".into())
                            })?;
                        self.table.push(counted);
                        i
                    }
                };
                self.ids.insert(who, i);
                i
            }
        };
        self.last = Some(i);
        Ok(i)
    }

    /// Drops one reference to `Who` number `i`, and the `Who` with the last one.
    pub(super) fn release(&mut self, i: u32) {
        let Some(entry) = self.table.get_mut(i as usize) else {
            return;
        };
        let Some(c) = entry else {
            return;
        };
        c.refs -= 1;
        if c.refs == 0 {
            if let Some(c) = entry.take() {
                self.ids.remove(&c.who);
            }
            self.free.push(i);
            if self.last == Some(i) {
                self.last = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(author: &str, by: Option<&str>) -> Who {
        Who {
            author: author.parse().unwrap(),
            by: by.map(|b| b.parse().unwrap()),
            origin: None,
        }
    }

    #[test]
    fn interning_counts_and_frees() {
        let mut w = Whos::default();
        let a = w.intern(who("ann", Some("d1"))).unwrap();
        assert_eq!(w.intern(who("ann", Some("d1"))).unwrap(), a);
        let b = w.intern(who("bob", None)).unwrap();
        assert_ne!(a, b);
        // Not the last one interned: found through the map.
        assert_eq!(w.intern(who("ann", Some("d1"))).unwrap(), a);
        assert_eq!(w.len(), 2);
        w.release(a);
        w.release(a);
        assert!(w.get(a).is_ok());
        w.release(a);
        assert!(w.get(a).is_err(), "freed with its last reference");
        assert_eq!(w.len(), 1);
        // The freed number is reused.
        assert_eq!(w.intern(who("cat", None)).unwrap(), a);
        assert_eq!(w.get(a).unwrap().author.as_str(), "cat");
        assert_eq!(w.get(b).unwrap().author.as_str(), "bob");
    }
}
