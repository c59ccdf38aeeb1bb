//! Queries over a feed's entries: filter, order and paging.
//!
//! The client evaluates queries against its local replica; the hub will parse `$filter`,
//! `$orderby`, `$top` and `$skip` into the same [`Query`].
//!
//! ```
//! use mesh_core::model::{Field, Filter, Query};
//! use serde_json::json;
//! let q = Query::new()
//!     .filter(Filter::eq(Field::content("done"), json!(false)).and(Filter::ne(Field::Title, json!(""))))
//!     .order_by(Field::Updated, true)
//!     .top(20);
//! assert_eq!(q.top, Some(20));
//! ```

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::Entry;
use crate::time::Timestamp;

/// A field of an entry that queries can look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// The entry id.
    Id,
    /// The title.
    Title,
    /// The author's user id.
    Author,
    /// When the current version was written.
    Updated,
    /// When the entry was created.
    Published,
    /// A value inside the JSON content, by path (`["address", "city"]`; array indexes as
    /// decimal segments).
    Content(Vec<String>),
}

impl Field {
    /// A content field from a `/`-separated path, e.g. `"address/city"`.
    pub fn content(path: &str) -> Self {
        Field::Content(
            path.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    fn value(&self, e: &Entry) -> Option<Value> {
        let d = &e.content;
        match self {
            Field::Id => Some(Value::String(e.sync.id.to_string())),
            Field::Title => Some(Value::String(d.title.clone())),
            Field::Author => Some(Value::String(d.author.to_string())),
            Field::Updated => Some(Value::String(d.updated.to_string())),
            Field::Published => Some(Value::String(d.published.to_string())),
            Field::Content(path) => {
                let mut v = d.content.to_value();
                for seg in path {
                    v = match v {
                        Value::Object(mut m) => m.remove(seg)?,
                        Value::Array(mut a) => {
                            let i: usize = seg.parse().ok()?;
                            if i < a.len() {
                                a.swap_remove(i)
                            } else {
                                return None;
                            }
                        }
                        _ => return None,
                    };
                }
                Some(v)
            }
        }
    }
}

/// A condition on entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// The field equals the value.
    Eq(Field, Value),
    /// The field is absent or differs from the value.
    Ne(Field, Value),
    /// The field is less than the value (same JSON type only).
    Lt(Field, Value),
    /// The field is greater than the value (same JSON type only).
    Gt(Field, Value),
    /// Both hold.
    And(Box<Filter>, Box<Filter>),
    /// Either holds.
    Or(Box<Filter>, Box<Filter>),
}

impl Filter {
    /// `field eq value`.
    pub fn eq(f: Field, v: Value) -> Self {
        Filter::Eq(f, v)
    }
    /// `field ne value`.
    pub fn ne(f: Field, v: Value) -> Self {
        Filter::Ne(f, v)
    }
    /// `field lt value`.
    pub fn lt(f: Field, v: Value) -> Self {
        Filter::Lt(f, v)
    }
    /// `field gt value`.
    pub fn gt(f: Field, v: Value) -> Self {
        Filter::Gt(f, v)
    }
    /// `self and other`.
    pub fn and(self, other: Filter) -> Self {
        Filter::And(Box::new(self), Box::new(other))
    }
    /// `self or other`.
    pub fn or(self, other: Filter) -> Self {
        Filter::Or(Box::new(self), Box::new(other))
    }

    /// Whether `e` satisfies the filter.
    pub fn matches(&self, e: &Entry) -> bool {
        match self {
            Filter::Eq(f, v) => f
                .value(e)
                .is_some_and(|x| compare(f, &x, v) == Some(Ordering::Equal)),
            Filter::Ne(f, v) => f
                .value(e)
                .is_none_or(|x| compare(f, &x, v) != Some(Ordering::Equal)),
            Filter::Lt(f, v) => f
                .value(e)
                .is_some_and(|x| compare(f, &x, v) == Some(Ordering::Less)),
            Filter::Gt(f, v) => f
                .value(e)
                .is_some_and(|x| compare(f, &x, v) == Some(Ordering::Greater)),
            Filter::And(a, b) => a.matches(e) && b.matches(e),
            Filter::Or(a, b) => a.matches(e) || b.matches(e),
        }
    }
}

/// Compares two JSON values of the same type; times compare as instants.
fn compare(field: &Field, a: &Value, b: &Value) -> Option<Ordering> {
    if matches!(field, Field::Updated | Field::Published) {
        if let (Value::String(x), Value::String(y)) = (a, b) {
            if let (Ok(x), Ok(y)) = (x.parse::<Timestamp>(), y.parse::<Timestamp>()) {
                return Some(x.cmp(&y));
            }
        }
    }
    match (a, b) {
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (x, y) if x == y => Some(Ordering::Equal),
        _ => None,
    }
}

/// A query: filter, order, paging. The default returns every live entry in id order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Query {
    /// Keep only matching entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// Sort keys, most significant first, each with `true` for descending; ties fall back to
    /// id order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order: Vec<(Field, bool)>,
    /// Skip this many results.
    #[serde(default)]
    pub skip: usize,
    /// Return at most this many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<usize>,
    /// Include tombstones.
    #[serde(default)]
    pub include_deleted: bool,
}

impl Query {
    /// Every live entry.
    pub fn new() -> Self {
        Query::default()
    }
    /// Sets the filter.
    pub fn filter(mut self, f: Filter) -> Self {
        self.filter = Some(f);
        self
    }
    /// Adds a sort key.
    pub fn order_by(mut self, f: Field, descending: bool) -> Self {
        self.order.push((f, descending));
        self
    }
    /// Sets the number of results to skip.
    pub fn skip(mut self, n: usize) -> Self {
        self.skip = n;
        self
    }
    /// Sets the maximum number of results.
    pub fn top(mut self, n: usize) -> Self {
        self.top = Some(n);
        self
    }

    /// Runs the query over entries (given in any order).
    pub fn run(&self, entries: impl IntoIterator<Item = Entry>) -> Vec<Entry> {
        let mut out: Vec<Entry> = entries
            .into_iter()
            .filter(|e| self.include_deleted || !e.is_deleted())
            .filter(|e| self.filter.as_ref().is_none_or(|f| f.matches(e)))
            .collect();
        let keyed = !self.order.is_empty();
        if keyed {
            let mut with_keys: Vec<(Vec<Option<Value>>, Entry)> = out
                .into_iter()
                .map(|e| (self.order.iter().map(|(f, _)| f.value(&e)).collect(), e))
                .collect();
            with_keys.sort_by(|(ka, a), (kb, b)| {
                for ((f, desc), (x, y)) in self.order.iter().zip(ka.iter().zip(kb)) {
                    let o = match (x, y) {
                        (Some(x), Some(y)) => compare(f, x, y).unwrap_or(Ordering::Equal),
                        (None, Some(_)) => Ordering::Less,
                        (Some(_), None) => Ordering::Greater,
                        (None, None) => Ordering::Equal,
                    };
                    let o = if *desc { o.reverse() } else { o };
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                a.sync.id.cmp(&b.sync.id)
            });
            out = with_keys.into_iter().map(|(_, e)| e).collect();
        } else {
            out.sort_by(|a, b| a.sync.id.cmp(&b.sync.id));
        }
        out.into_iter()
            .skip(self.skip)
            .take(self.top.unwrap_or(usize::MAX))
            .collect()
    }
}
