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
        let mut s = Selection::new(self, usize::MAX);
        for e in entries {
            s.offer(e);
        }
        s.finish().0
    }

    /// The values of the sort keys of `e`.
    fn keys(&self, e: &Entry) -> Vec<Option<Value>> {
        self.order.iter().map(|(f, _)| f.value(e)).collect()
    }

    /// The order of results: by the sort keys, then by id.
    fn cmp(&self, (ka, a): &Keyed, (kb, b): &Keyed) -> Ordering {
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
    }
}

/// An entry with the values of its sort keys.
type Keyed = (Vec<Option<Value>>, Entry);

/// A [`Query`]'s results gathered from entries offered one at a time, holding at most about
/// twice `skip + top + 1` of them whatever is offered: how a server answers a query over a
/// feed it reads page by page, in memory bounded by the query, not by the feed.
///
/// `top` is the query's, or `page` when it names none.
///
/// ```
/// use mesh_core::model::{Query, Selection};
/// # use mesh_core::feedsync::{create, Stamp};
/// # use mesh_core::model::EntryDraft;
/// # let at = mesh_core::time::Timestamp::from_unix(1_700_000_000).unwrap();
/// # let entry = |i: u32| create(
/// #     format!("e{i:03}").parse().unwrap(),
/// #     &Stamp::new("d".parse().unwrap(), at),
/// #     EntryDraft::new("t", serde_json::json!({})).into_new_data("ann".parse().unwrap(), at),
/// # );
/// let query = Query::new().skip(2).top(3);
/// let mut selection = Selection::new(&query, 100);
/// for i in 0..10 {
///     selection.offer(entry(i));
/// }
/// let (page, more) = selection.finish();
/// let ids: Vec<_> = page.iter().map(|e| e.sync.id.to_string()).collect();
/// assert_eq!(ids, ["e002", "e003", "e004"]);
/// assert!(more, "entries match past the page");
/// ```
pub struct Selection<'q> {
    query: &'q Query,
    top: usize,
    /// `skip + top + 1`: enough to answer and to tell whether more match.
    cap: usize,
    kept: Vec<Keyed>,
}

impl<'q> Selection<'q> {
    /// An empty selection for `query`, answering `page` results when it names no `top`.
    pub fn new(query: &'q Query, page: usize) -> Self {
        let top = query.top.unwrap_or(page);
        Selection {
            query,
            top,
            cap: query.skip.saturating_add(top).saturating_add(1),
            kept: Vec::new(),
        }
    }

    /// Offers one entry: kept if it matches and may still be among the results.
    pub fn offer(&mut self, e: Entry) {
        let q = self.query;
        let hidden = e.is_deleted() && !q.include_deleted;
        if hidden || !q.filter.as_ref().is_none_or(|f| f.matches(&e)) {
            return;
        }
        self.kept.push((q.keys(&e), e));
        if self.kept.len() >= self.cap.saturating_mul(2).max(64) {
            self.trim();
        }
    }

    /// Whether, the entries being offered in id order, none offered later can change the
    /// results: no order was asked, so the results are the first matches, and enough of
    /// those are held. A reader of a feed in id order stops there.
    pub fn is_settled(&self) -> bool {
        self.query.order.is_empty() && self.kept.len() >= self.cap
    }

    /// Sorts what is kept and drops what can no longer be a result.
    fn trim(&mut self) {
        let q = self.query;
        self.kept.sort_by(|a, b| q.cmp(a, b));
        self.kept.truncate(self.cap);
    }

    /// The results, and whether more entries matched than `skip + top`.
    pub fn finish(mut self) -> (Vec<Entry>, bool) {
        self.trim();
        let more = self.kept.len() > self.query.skip.saturating_add(self.top);
        let page = self
            .kept
            .into_iter()
            .skip(self.query.skip)
            .take(self.top)
            .map(|(_, e)| e)
            .collect();
        (page, more)
    }
}
