//! FeedSync conformance vectors: parsing and running them.
//!
//! A vector is a JSON document (format: `conformance/feedsync/README.md` of the project's
//! shared data) describing one operation — a merge, an update or a resolve — and the item it
//! must produce. [`run_vector`] checks the engine against one; the `conformance` example runs
//! a whole directory. Reading files is the caller's business: the core does no I/O.
//!
//! ```
//! use mesh_core::conformance::{parse_vector, run_vector};
//! let v = parse_vector(r#"{
//!   "name": "create-then-update", "op": "update",
//!   "item": {"sync": {"id": "a", "updates": 1,
//!            "history": [{"sequence": 1, "when": "2007-01-19T10:00:00Z", "by": "A"}]},
//!            "content": {"t": 1}},
//!   "by": "A", "when": "2007-01-19T10:01:00Z", "content": {"t": 2},
//!   "expected": {"sync": {"id": "a", "updates": 2,
//!            "history": [{"sequence": 2, "when": "2007-01-19T10:01:00Z", "by": "A"},
//!                        {"sequence": 1, "when": "2007-01-19T10:00:00Z", "by": "A"}]},
//!            "content": {"t": 2}}
//! }"#).unwrap();
//! assert!(run_vector(&v).is_ok());
//! ```

use serde::Deserialize;
use serde_json::Value;

use crate::error::Result;
use crate::feedsync::{self, Item, Stamp};
use crate::id::DeviceId;
use crate::time::Timestamp;

/// An item of a vector: FeedSync metadata with opaque JSON content.
pub type VectorItem = Item<Value>;

/// One conformance vector.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Vector {
    /// The vector's name.
    #[serde(default)]
    pub name: String,
    /// What to do and what must come out.
    #[serde(flatten)]
    pub op: VectorOp,
}

/// The operation of a vector.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum VectorOp {
    /// Merging `incoming` into `local` gives `expected` (and the reverse too, unless one-way).
    Merge {
        /// The local item, if any.
        local: Option<VectorItem>,
        /// The incoming item.
        incoming: VectorItem,
        /// The result.
        expected: VectorItem,
        /// Only check the given direction.
        #[serde(default)]
        one_way: bool,
    },
    /// An update (or a delete) at endpoint `by`.
    Update(LocalOp),
    /// The endpoint resolves every conflict, keeping `content`.
    Resolve(LocalOp),
}

/// A local operation of a vector: an update or a resolve.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LocalOp {
    /// The item before.
    pub item: VectorItem,
    /// The endpoint; may be absent (then `when` is present).
    #[serde(default)]
    pub by: Option<DeviceId>,
    /// The time; may be absent (then `by` is present).
    #[serde(default)]
    pub when: Option<Timestamp>,
    /// The new content.
    pub content: Value,
    /// Whether the result is a tombstone.
    #[serde(default)]
    pub deleted: bool,
    /// The result.
    pub expected: VectorItem,
}

/// Parses a vector from JSON text.
pub fn parse_vector(text: &str) -> Result<Vector> {
    Ok(serde_json::from_str(text)?)
}

/// Runs a vector. `Ok(())` when the engine produced the expected item; otherwise a description
/// of the difference (or of the error the engine returned).
pub fn run_vector(v: &Vector) -> std::result::Result<(), String> {
    match &v.op {
        VectorOp::Merge {
            local,
            incoming,
            expected,
            one_way,
        } => {
            let got = merged(local.as_ref(), incoming)?;
            compare("merge(local, incoming)", &got, expected)?;
            if !one_way {
                let local = local
                    .as_ref()
                    .ok_or("a two-way merge vector needs a local item")?;
                let got = merged(Some(incoming), local)?;
                compare("merge(incoming, local)", &got, expected)?;
            }
            Ok(())
        }
        VectorOp::Update(op) => run_local("update", feedsync::update, op),
        VectorOp::Resolve(op) => run_local("resolve", feedsync::resolve, op),
    }
}

type LocalFn = fn(&VectorItem, &Stamp, Value, bool) -> Result<VectorItem>;

fn run_local(what: &str, f: LocalFn, op: &LocalOp) -> std::result::Result<(), String> {
    let stamp = Stamp::partial(op.by.clone(), op.when).map_err(|e| e.to_string())?;
    let got = f(&op.item, &stamp, op.content.clone(), op.deleted)
        .map_err(|e| format!("{what} failed: {e}"))?;
    compare(what, &got, &op.expected)
}

fn merged(
    local: Option<&VectorItem>,
    incoming: &VectorItem,
) -> std::result::Result<VectorItem, String> {
    let m = feedsync::merge(local, incoming.clone()).map_err(|e| format!("merge failed: {e}"))?;
    match (m.item, local) {
        (Some(item), _) => Ok(item),
        (None, Some(local)) => Ok(local.clone()),
        (None, None) => Err("merge into nothing reported no change".into()),
    }
}

/// Equal sync metadata (history order included) and content; conflicts compared as a set.
fn compare(what: &str, got: &VectorItem, expected: &VectorItem) -> std::result::Result<(), String> {
    let same_set = got.conflicts.len() == expected.conflicts.len()
        && got.conflicts.iter().all(|g| expected.conflicts.contains(g))
        && expected.conflicts.iter().all(|e| got.conflicts.contains(e));
    if got.sync == expected.sync && got.content == expected.content && same_set {
        return Ok(());
    }
    let show = |i: &VectorItem| serde_json::to_string(i).unwrap_or_default();
    Err(format!(
        "{what}:\n    expected {}\n    got      {}",
        show(expected),
        show(got)
    ))
}
