//! Reading [`Request`] and [`Response`] from any serde format without buffering.
//!
//! Each message is read as one flat object holding every field any of its kinds has, then
//! checked against the kind its `type` names: a field the kind requires and the object lacks
//! is refused as missing, as serde would. Fields of the other kinds are read and dropped
//! (they must still have their type's shape), unknown fields are ignored.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::{Epoch, PushResult, Request, Response};
use crate::id::ReplicaId;
use crate::model::{Entry, FeedKey};
use crate::store::{Cursor, FeedHead};
use crate::trust::{DeviceCertificate, Revocation};

/// The kinds of [`Request`], as `type` names them.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum RequestKind {
    Feeds,
    Pull,
    Push,
}

/// Every field of every kind of [`Request`].
#[derive(Deserialize)]
struct RequestFields {
    #[serde(rename = "type")]
    kind: RequestKind,
    from: Option<ReplicaId>,
    only: Option<Vec<FeedKey>>,
    certificates: Option<bool>,
    feed: Option<FeedKey>,
    since: Option<Cursor>,
    limit: Option<u32>,
    entries: Option<Vec<Entry>>,
}

/// The kinds of [`Response`], as `type` names them.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum ResponseKind {
    Feeds,
    Changes,
    Pushed,
}

/// Every field of every kind of [`Response`].
#[derive(Deserialize)]
struct ResponseFields {
    #[serde(rename = "type")]
    kind: ResponseKind,
    replica: Option<ReplicaId>,
    feeds: Option<Vec<FeedHead>>,
    epoch: Option<Epoch>,
    revocations: Option<Vec<Revocation>>,
    certificates: Option<Vec<DeviceCertificate>>,
    feed: Option<FeedKey>,
    entries: Option<Vec<Entry>>,
    next: Option<Cursor>,
    more: Option<bool>,
    results: Option<Vec<PushResult>>,
}

/// Reads `T` from a JSON object only (serde would take an array of its fields too).
fn from_object<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
) -> Result<T, D::Error> {
    struct Object<T>(&'static str, PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Object<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(Object(what, PhantomData))
}

/// A required field's value, or serde's "missing field" error.
fn required<T, E: serde::de::Error>(value: Option<T>, field: &'static str) -> Result<T, E> {
    value.ok_or_else(|| E::missing_field(field))
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f: RequestFields = from_object(d, "a sync request object")?;
        Ok(match f.kind {
            RequestKind::Feeds => Request::Feeds {
                from: required(f.from, "from")?,
                only: f.only,
                certificates: f.certificates.unwrap_or(false),
            },
            RequestKind::Pull => Request::Pull {
                from: required(f.from, "from")?,
                feed: required(f.feed, "feed")?,
                since: required(f.since, "since")?,
                limit: required(f.limit, "limit")?,
            },
            RequestKind::Push => Request::Push {
                from: required(f.from, "from")?,
                feed: required(f.feed, "feed")?,
                entries: required(f.entries, "entries")?,
            },
        })
    }
}

impl<'de> Deserialize<'de> for Response {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f: ResponseFields = from_object(d, "a sync response object")?;
        Ok(match f.kind {
            ResponseKind::Feeds => Response::Feeds {
                replica: required(f.replica, "replica")?,
                feeds: required(f.feeds, "feeds")?,
                epoch: f.epoch,
                revocations: f.revocations.unwrap_or_default(),
                certificates: f.certificates.unwrap_or_default(),
            },
            ResponseKind::Changes => Response::Changes {
                feed: required(f.feed, "feed")?,
                entries: required(f.entries, "entries")?,
                next: required(f.next, "next")?,
                more: required(f.more, "more")?,
            },
            ResponseKind::Pushed => Response::Pushed {
                feed: required(f.feed, "feed")?,
                results: required(f.results, "results")?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages serde's tagged-enum reading took, with `type` anywhere, and its
    /// refusals; an array of fields (which serde took) is refused too.
    #[test]
    fn messages_read_as_before_with_type_anywhere() {
        let pull: Request = serde_json::from_str(
            r#"{"from":"r1","feed":{"scope":{"mesh":"ann"},"name":"notes"},"since":3,"limit":10,"type":"pull"}"#,
        )
        .unwrap();
        assert!(matches!(pull, Request::Pull { limit: 10, .. }));
        let feeds: Request = serde_json::from_str(r#"{"type":"feeds","from":"r1"}"#).unwrap();
        assert!(matches!(
            feeds,
            Request::Feeds {
                only: None,
                certificates: false,
                ..
            }
        ));
        let changes: Response = serde_json::from_str(
            r#"{"more":false,"next":4,"entries":[],"feed":{"scope":{"mesh":"ann"},"name":"notes"},"type":"changes","x":1}"#,
        )
        .unwrap();
        assert!(matches!(changes, Response::Changes { more: false, .. }));
        for (bad, why) in [
            (r#"{"from":"r1"}"#, "missing field `type`"),
            (
                r#"{"type":"pull","from":"r1","since":3,"limit":10}"#,
                "missing field `feed`",
            ),
            (r#"{"type":"nope","from":"r1"}"#, "unknown variant `nope`"),
            (
                r#"{"type":"feeds","from":"r1","from":"r2"}"#,
                "duplicate field `from`",
            ),
            (
                r#"{"type":"push","from":"r1","feed":{"scope":{"mesh":"ann"},"name":"notes"}}"#,
                "missing field `entries`",
            ),
            (r#"["feeds","r1"]"#, "invalid type"),
        ] {
            let e = serde_json::from_str::<Request>(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = serde_json::from_str::<Response>(
            r#"{"type":"pushed","feed":{"scope":{"mesh":"ann"},"name":"notes"}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("missing field `results`"), "{e}");
    }
}
