//! Bounds on the shape of items, so that no pushed item can make a merge slow or an entry
//! impossible to change.
//!
//! * [`MAX_CONFLICTS`] conflicting versions per item;
//! * [`MAX_HISTORY_WRITERS`] history items per version after compaction (one per writer
//!   plus by-less items), and [`MAX_HISTORY_ITEMS`] before it;
//! * `updates` and every sequence at most [`MAX_UPDATES`], and a pushed version at most
//!   [`MAX_UPDATES_STEP`] updates ahead of what the replica holds for the item, so that
//!   nobody can push an entry to the end of the counter (which would freeze it: no update
//!   could follow). Local writes stop at the same limit with the same error.

use crate::error::{CoreError, Result};
use crate::feedsync::item::{Item, SyncMeta};

/// Most conflicting versions an item may hold.
pub const MAX_CONFLICTS: usize = 64;

/// Most history items a version may hold after compaction (distinct writers, plus by-less
/// items).
pub const MAX_HISTORY_WRITERS: usize = 1024;

/// Most history items a version may hold as it travels (uncompacted).
pub const MAX_HISTORY_ITEMS: usize = 65_536;

/// Largest `updates` (and history sequence) accepted: 2³¹ − 1, half the counter's range.
pub const MAX_UPDATES: u32 = i32::MAX as u32;

/// How far a pushed version's `updates` may run ahead of the largest the replica holds for the
/// item (2²⁰: a million offline edits of one entry).
pub const MAX_UPDATES_STEP: u32 = 1 << 20;

fn too_big(id: &str, what: String) -> CoreError {
    CoreError::LimitExceeded(format!("item {id:?}: {what}"))
}

fn check_version(id: &str, v: &SyncMeta, ceiling: u32) -> Result<()> {
    if v.updates > MAX_UPDATES || v.updates > ceiling {
        return Err(too_big(
            id,
            format!(
                "updates {} is above the limit ({} here)",
                v.updates,
                ceiling.min(MAX_UPDATES)
            ),
        ));
    }
    if v.history.len() > MAX_HISTORY_ITEMS {
        return Err(too_big(
            id,
            format!(
                "{} history items (at most {MAX_HISTORY_ITEMS})",
                v.history.len()
            ),
        ));
    }
    let mut writers = std::collections::HashSet::new();
    let mut byless = 0usize;
    for h in &v.history {
        if h.sequence > MAX_UPDATES {
            return Err(too_big(
                id,
                format!("history sequence {} is above {MAX_UPDATES}", h.sequence),
            ));
        }
        match &h.by {
            Some(by) => {
                writers.insert(by);
            }
            None => byless += 1,
        }
        if writers.len() + byless > MAX_HISTORY_WRITERS {
            return Err(too_big(
                id,
                format!("more than {MAX_HISTORY_WRITERS} history items after compaction"),
            ));
        }
    }
    Ok(())
}

/// Checks an incoming item against the limits, given what the replica holds for it.
pub fn check_shape<T>(local: Option<&Item<T>>, incoming: &Item<T>) -> Result<()> {
    let id = incoming.sync.id.as_str();
    if incoming.conflicts.len() > MAX_CONFLICTS {
        return Err(too_big(
            id,
            format!(
                "{} conflicts (at most {MAX_CONFLICTS})",
                incoming.conflicts.len()
            ),
        ));
    }
    let held = local.map_or(0, |l| {
        std::iter::once(&l.sync)
            .chain(l.conflicts.iter().map(|c| &c.sync))
            .map(|s| s.updates)
            .max()
            .unwrap_or(0)
    });
    let ceiling = held.saturating_add(MAX_UPDATES_STEP);
    check_version(id, &incoming.sync, ceiling)?;
    for c in &incoming.conflicts {
        check_version(id, &c.sync, ceiling)?;
    }
    Ok(())
}
