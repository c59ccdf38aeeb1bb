//! History items, coverage (subsumption) and history compaction.

use serde::{Deserialize, Serialize};

use crate::id::DeviceId;
use crate::time::Timestamp;
use crate::trust::Seal;

/// One `sx:history` element: which update, when and by which endpoint.
///
/// At least one of `when` and `by` is present in valid metadata.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HistoryItem {
    /// The item's `updates` count after this update.
    pub sequence: u32,
    /// When the update was made (UTC, whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Timestamp>,
    /// The endpoint (device) that made the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<DeviceId>,
    /// The writer's signature, made when this item was topmost (see [`crate::trust`]).
    /// Coverage ignores it; equality does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<Box<Seal>>,
}

impl HistoryItem {
    /// A history item made by `by` at `when`.
    pub fn new(sequence: u32, when: Option<Timestamp>, by: Option<DeviceId>) -> Self {
        HistoryItem {
            sequence,
            when,
            by,
            seal: None,
        }
    }

    /// Whether `self` covers (subsumes) `other`: the same `by` with a sequence at least as
    /// high, or, when `other` has no `by`, the same `when` and the same sequence.
    ///
    /// ```
    /// use mesh_core::feedsync::HistoryItem;
    /// let a = |seq| HistoryItem::new(seq, None, Some("A".parse().unwrap()));
    /// assert!(a(3).covers(&a(2)));
    /// assert!(!a(2).covers(&a(3)));
    /// ```
    #[inline]
    pub fn covers(&self, other: &HistoryItem) -> bool {
        match &other.by {
            Some(by) => self.by.as_ref() == Some(by) && self.sequence >= other.sequence,
            None => self.by.is_none() && self.when == other.when && self.sequence == other.sequence,
        }
    }
}

/// Whether any item of `history` covers `item`.
#[inline]
pub fn history_covers(history: &[HistoryItem], item: &HistoryItem) -> bool {
    history.iter().any(|h| h.covers(item))
}

/// Compacts a newest-first history to the topmost item plus, for every `by`, the item with the
/// highest sequence; items without `by` are kept (they are matched by `when` and sequence).
///
/// Coverage is unchanged by compaction: every dropped item is covered by a kept item of the
/// same `by`, so no merge result changes.
pub fn compact_history(history: &[HistoryItem]) -> Vec<HistoryItem> {
    let mut out: Vec<HistoryItem> = Vec::with_capacity(history.len());
    for (i, h) in history.iter().enumerate() {
        let keep = i == 0
            || h.by.is_none()
            || !history.iter().enumerate().any(|(j, o)| {
                o.by == h.by && (o.sequence > h.sequence || (o.sequence == h.sequence && j < i))
            });
        if keep {
            out.push(h.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(seq: u32, when: Option<i64>, by: Option<&str>) -> HistoryItem {
        HistoryItem::new(
            seq,
            when.map(|w| Timestamp::from_unix(w).unwrap()),
            by.map(|b| b.parse().unwrap()),
        )
    }

    #[test]
    fn coverage_rules() {
        assert!(h(2, Some(5), Some("A")).covers(&h(2, Some(1), Some("A"))));
        assert!(h(3, None, Some("A")).covers(&h(1, Some(1), Some("A"))));
        assert!(!h(3, None, Some("B")).covers(&h(1, None, Some("A"))));
        // Without `by`: same when and same sequence only.
        assert!(h(2, Some(7), None).covers(&h(2, Some(7), None)));
        assert!(!h(3, Some(7), None).covers(&h(2, Some(7), None)));
        assert!(!h(2, Some(7), Some("A")).covers(&h(2, Some(7), None)));
    }

    #[test]
    fn compaction_keeps_topmost_and_highest_per_by() {
        let hist = vec![
            h(5, Some(5), Some("B")),
            h(4, Some(4), Some("A")),
            h(3, Some(3), Some("B")),
            h(2, Some(2), None),
            h(1, Some(1), Some("A")),
        ];
        let c = compact_history(&hist);
        assert_eq!(
            c,
            vec![
                h(5, Some(5), Some("B")),
                h(4, Some(4), Some("A")),
                h(2, Some(2), None)
            ]
        );
        for item in &hist {
            assert_eq!(history_covers(&hist, item), history_covers(&c, item));
        }
    }
}
