//! The FeedSync merge.

use serde::{Deserialize, Serialize};

use std::collections::{HashMap, HashSet};

use crate::error::{CoreError, Result};
use crate::feedsync::history::HistoryItem;
use crate::feedsync::item::{Item, SyncMeta, Version};
use crate::id::DeviceId;
use crate::time::Timestamp;

/// What a merge did to the local item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeOutcome {
    /// There was no local item; the incoming one was added.
    Added,
    /// The local item changed (a newer version, a tombstone, or a resolved conflict) without
    /// gaining a new conflict.
    Updated,
    /// The item now holds a conflicting version it did not hold before.
    Conflict,
    /// The incoming item taught nothing new; the local item is untouched.
    Unchanged,
}

impl MergeOutcome {
    /// Whether the local item changed.
    pub fn changed(self) -> bool {
        self != MergeOutcome::Unchanged
    }
}

/// The result of [`merge`]: the outcome, and the new item unless nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged<T> {
    /// What happened.
    pub outcome: MergeOutcome,
    /// The item to store; `None` exactly when the outcome is [`MergeOutcome::Unchanged`].
    pub item: Option<Item<T>>,
    /// Whether `item` holds exactly the incoming versions: the sender already has the result,
    /// so it need not be sent back.
    pub verbatim: bool,
    /// Whether a `noconflicts` winner discarded versions (local or incoming) that the result
    /// does not know. A replica serving other parties refuses such a merge rather than lose
    /// a write silently.
    pub discarded: bool,
}

/// Merges `incoming` into `local` (FeedSync 1.0.1 merge behaviour).
///
/// Both sides are flattened into their versions (the winner plus its conflicts). Every local
/// version the incoming side already knows is dropped, then every incoming version the
/// remaining local versions know is dropped. The winner of what remains is the result; unless
/// it says `noconflicts`, the other remaining versions become its conflicts. If every incoming
/// version was already known, or the result holds the same versions as `local`, nothing changes.
///
/// `incoming` is validated first; `local` is trusted (it came from the replica's own store).
///
/// ```
/// use mesh_core::feedsync::{create, update, merge, MergeOutcome, Stamp};
/// use mesh_core::time::Timestamp;
/// let t = Timestamp::from_unix(1_200_000_000).unwrap();
/// let a = Stamp::new("A".parse().unwrap(), t);
/// let b = Stamp::new("B".parse().unwrap(), t.plus_secs(1));
/// let base = create("x.1".parse().unwrap(), &a, "v1");
/// let on_a = update(&base, &a, "edited on A", false).unwrap();
/// let on_b = update(&base, &b, "edited on B", false).unwrap();
/// let merged = merge(Some(&on_a), on_b.clone()).unwrap();
/// assert_eq!(merged.outcome, MergeOutcome::Conflict);
/// let item = merged.item.unwrap();
/// assert_eq!(item.content, "edited on B"); // same updates, later `when` wins
/// assert_eq!(item.conflicts[0].content, "edited on A");
/// ```
pub fn merge<T: Clone>(local: Option<&Item<T>>, incoming: Item<T>) -> Result<Merged<T>> {
    incoming.validate()?;
    let Some(local) = local else {
        let (v, cs) = incoming.into_versions();
        let mut versions = Vec::with_capacity(1 + cs.len());
        versions.push(v);
        versions.extend(cs);
        let count = versions.len();
        let (item, dropped) = assemble_counting(versions);
        return Ok(Merged {
            outcome: MergeOutcome::Added,
            verbatim: item.conflicts.len() + 1 == count,
            item: Some(item),
            discarded: dropped > 0,
        });
    };
    if local.sync.id != incoming.sync.id {
        return Err(CoreError::invalid_sync(
            incoming.sync.id.as_str(),
            format!("cannot merge into item {:?}", local.sync.id.as_str()),
        ));
    }

    let local_versions: Vec<&SyncMeta> = std::iter::once(&local.sync)
        .chain(local.conflicts.iter().map(|c| &c.sync))
        .collect();
    // "Known to a side" means covered by the history of any of its versions, so each side's
    // histories are indexed once and every question is answered in constant time: the merge
    // costs time linear in the two items' sizes.
    let local_cover = Coverage::of(local_versions.iter().copied());

    // Fast path: a merge that learns nothing changes nothing.
    if local_cover.knows(&incoming.sync)
        && incoming
            .conflicts
            .iter()
            .all(|c| local_cover.knows(&c.sync))
    {
        return Ok(unchanged());
    }

    let (iv, ics) = incoming.into_versions();
    let mut incoming_versions = Vec::with_capacity(1 + ics.len());
    incoming_versions.push(iv);
    incoming_versions.extend(ics);
    let incoming_count = incoming_versions.len();

    // Pass one: drop local versions the incoming side knows (index 0 is the local winner,
    // index i > 0 its conflict i - 1).
    let incoming_cover = Coverage::of(incoming_versions.iter().map(|v| &v.sync));
    let kept_local: Vec<usize> = (0..local_versions.len())
        .filter(|&n| !incoming_cover.knows(local_versions[n]))
        .collect();
    // Pass two: drop incoming versions the remaining local versions know.
    let kept_cover = Coverage::of(kept_local.iter().map(|&n| local_versions[n]));
    incoming_versions.retain(|i| !kept_cover.knows(&i.sync));
    if incoming_versions.is_empty() && kept_local.len() == local_versions.len() {
        return Ok(unchanged());
    }

    let mut versions: Vec<Version<T>> =
        Vec::with_capacity(kept_local.len() + incoming_versions.len());
    for &n in &kept_local {
        versions.push(match n {
            0 => Version {
                sync: local.sync.clone(),
                content: local.content.clone(),
            },
            n => local.conflicts[n - 1].clone(),
        });
    }
    let verbatim = kept_local.is_empty() && incoming_versions.len() == incoming_count;
    versions.extend(incoming_versions);
    let (result, dropped) = assemble_counting(versions);
    let verbatim = verbatim && result.conflicts.len() + 1 == incoming_count;

    if result.sync.same_version(&local.sync)
        && same_version_set(&result.conflicts, &local.conflicts)
    {
        return Ok(Merged {
            discarded: dropped > 0,
            ..unchanged()
        });
    }
    let new_conflict = result
        .conflicts
        .iter()
        .any(|c| !local.conflicts.iter().any(|l| l.sync.same_version(&c.sync)));
    Ok(Merged {
        outcome: if new_conflict {
            MergeOutcome::Conflict
        } else {
            MergeOutcome::Updated
        },
        item: Some(result),
        verbatim,
        discarded: dropped > 0,
    })
}

fn unchanged<T>() -> Merged<T> {
    Merged {
        outcome: MergeOutcome::Unchanged,
        item: None,
        verbatim: false,
        discarded: false,
    }
}

/// The union of some versions' histories, indexed for coverage questions: for every `by`
/// the highest sequence seen, and the by-less items as (`when`, sequence) pairs.
pub(crate) struct Coverage<'a> {
    by: HashMap<&'a DeviceId, u32>,
    byless: HashSet<(Option<Timestamp>, u32)>,
}

impl<'a> Coverage<'a> {
    /// Indexes the histories of `versions`.
    pub(crate) fn of(versions: impl Iterator<Item = &'a SyncMeta>) -> Self {
        let mut cover = Coverage {
            by: HashMap::new(),
            byless: HashSet::new(),
        };
        for v in versions {
            for h in &v.history {
                cover.add(h);
            }
        }
        cover
    }

    /// Adds one history item.
    pub(crate) fn add(&mut self, h: &'a HistoryItem) {
        match &h.by {
            Some(by) => {
                let seq = self.by.entry(by).or_insert(h.sequence);
                *seq = (*seq).max(h.sequence);
            }
            None => {
                self.byless.insert((h.when, h.sequence));
            }
        }
    }

    /// Whether some indexed item covers `h` (see [`HistoryItem::covers`]).
    pub(crate) fn covers(&self, h: &HistoryItem) -> bool {
        match &h.by {
            Some(by) => self.by.get(by).is_some_and(|&s| s >= h.sequence),
            None => self.byless.contains(&(h.when, h.sequence)),
        }
    }

    /// Whether the indexed histories know `v` (cover its topmost item).
    pub(crate) fn knows(&self, v: &SyncMeta) -> bool {
        v.topmost().is_some_and(|t| self.covers(t))
    }
}

fn same_version_set<T>(a: &[Version<T>], b: &[Version<T>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|x| b.iter().any(|y| x.sync.same_version(&y.sync)))
}

/// Builds a canonical item from a set of versions: duplicates removed, the winner on top, the
/// others as conflicts in winner order (or dropped when the winner says `noconflicts`).
pub(crate) fn assemble<T>(versions: Vec<Version<T>>) -> Item<T> {
    assemble_counting(versions).0
}

/// [`assemble`], also saying how many distinct versions a `noconflicts` winner dropped.
fn assemble_counting<T>(mut versions: Vec<Version<T>>) -> (Item<T>, usize) {
    // Best first; a stable sort keeps the first of two identical versions.
    versions.sort_by(|a, b| b.sync.winner_cmp(&a.sync));
    versions.dedup_by(|later, earlier| later.sync.same_version(&earlier.sync));
    let mut it = versions.into_iter();
    // Callers never pass an empty set.
    let winner = it.next().expect("assemble needs at least one version");
    let (conflicts, dropped) = if winner.sync.noconflicts {
        let knows = Coverage::of(std::iter::once(&winner.sync));
        (Vec::new(), it.filter(|v| !knows.knows(&v.sync)).count())
    } else {
        (it.collect(), 0)
    };
    let item = Item {
        sync: winner.sync,
        content: winner.content,
        conflicts,
    };
    (item, dropped)
}
