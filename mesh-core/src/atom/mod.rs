//! Atom feeds and entries carrying FeedSync (`sx:`) metadata, read and written.
//!
//! This is the XML form of mesh's feeds: an [`AtomFeed`] of [`Entry`] values, each with the
//! winning version's data and sync metadata and, inside `sx:sync`, its conflicts as full
//! Atom entries. [`write_feed`] / [`read_feed`] and [`write_entry`] / [`read_entry`] round-trip
//! everything an [`Entry`] holds.
//!
//! ```
//! use mesh_core::atom::{read_feed, write_feed, AtomFeed};
//! use mesh_core::feedsync::{create, update, Stamp};
//! use mesh_core::model::EntryDraft;
//! use mesh_core::time::Timestamp;
//!
//! let t = Timestamp::from_unix(1_200_000_000).unwrap();
//! let laptop = Stamp::new("laptop".parse().unwrap(), t);
//! let draft = EntryDraft::new("Buy <milk> & eggs", serde_json::json!({"done": false}));
//! let data = draft.into_new_data("alice".parse().unwrap(), t);
//! let entry = create("todo.1".parse().unwrap(), &laptop, data.clone());
//!
//! let phone = Stamp::new("phone".parse().unwrap(), t.plus_secs(60));
//! let done = EntryDraft::new("Buy milk", serde_json::json!({"done": true}));
//! let entry = update(&entry, &phone, done.into_next_data(&data, t.plus_secs(60)), false).unwrap();
//!
//! let feed = AtomFeed {
//!     id: "urn:mesh:folder:f-1/todos".into(),
//!     title: "To Do List".into(),
//!     updated: t.plus_secs(60),
//!     entries: vec![entry],
//!     next: None,
//! };
//! let xml = write_feed(&feed);
//! assert!(xml.contains(r#"<sx:history sequence="2" when="2008-01-10T21:21:00Z" by="phone"/>"#));
//! assert_eq!(read_feed(&xml).unwrap(), feed);
//! ```
//!
//! # Mapping
//!
//! ```xml
//! <feed xmlns="http://www.w3.org/2005/Atom" xmlns:sx="http://feedsync.org/2007/feedsync">
//!   <title>FEED TITLE</title>
//!   <id>FEED ID</id>
//!   <updated>2007-01-19T00:14:38Z</updated>
//!   <link rel="next" href="NEXT PAGE"/>   (a paged feed only)
//!   <entry>
//!     <id>SYNC-ID</id>
//!     <title>TITLE</title>
//!     <published>…</published>
//!     <updated>…</updated>
//!     <author><name>USER-ID</name></author>
//!     <content type="application/json">{"canonical":"json"}</content>
//!     <link rel="enclosure" href="mesh:blob:HASH" type="CONTENT-TYPE" length="N"/>
//!     <sx:sync id="SYNC-ID" updates="2" deleted="false" noconflicts="false">
//!       <sx:history sequence="2" when="…" by="DEVICE-ID"/>
//!       <sx:history sequence="1" when="…" by="DEVICE-ID"/>
//!       <sx:conflicts>
//!         <entry>… a losing version: a full entry with its own sx:sync …</entry>
//!       </sx:conflicts>
//!     </sx:sync>
//!   </entry>
//! </feed>
//! ```
//!
//! | [`Entry`] | Atom / FeedSync |
//! |---|---|
//! | `sync.id` | `sx:sync/@id` (also written as `atom:id`, which the reader ignores) |
//! | `sync.updates`, `deleted`, `noconflicts` | attributes of `sx:sync` (`deleted` and `noconflicts` default to `false`) |
//! | `sync.history` | `sx:history` elements, newest first; `when` / `by` omitted when absent |
//! | a history item's `seal` | a `mesh:seal` child of its `sx:history` ([`MESH_NS`]): attributes `deleted`, `author`, `digest`, `sig` |
//! | `content.title` | `atom:title`, verbatim (white space included) |
//! | `content.content` | `atom:content type="application/json"` |
//! | `content.media` | `atom:link rel="enclosure" href="mesh:blob:HASH" type=… length=…` |
//! | `content.author` | `atom:author/atom:name` |
//! | `content.published`, `updated` | `atom:published`, `atom:updated` |
//! | `conflicts` | `sx:sync/sx:conflicts/atom:entry`, each with its own `sx:sync` |
//! | [`AtomFeed::next`] | the feed's `atom:link rel="next"` (RFC 5005), at most one |
//!
//! Times are RFC 3339 UTC with whole seconds ([`Timestamp`]).
//!
//! # Reading
//!
//! * Namespaces are resolved: any prefix (or the default namespace) may be bound to
//!   [`ATOM_NS`] and [`FEEDSYNC_NS`]. Elements and attributes the mapping does not name —
//!   from other namespaces, or Atom and FeedSync ones mesh does not use, such as
//!   `atom:summary` or `sx:sharing` — are skipped whole.
//! * `atom:content` of type `application/json` is parsed as JSON and canonicalized; content of
//!   type `text` or `html`, or without a type, becomes a JSON string (so plain FeedSync feeds
//!   can be read); other types and out-of-line content (`src`) are refused. A missing
//!   `atom:content` reads as JSON `null`. The writer always writes `application/json`.
//! * `atom:published` is optional and defaults to `atom:updated`. Of several `atom:author`
//!   elements the first is kept. Enclosure links whose `href` does not start with
//!   `mesh:blob:` are ignored, as are other links.
//! * Conflict entries nested inside conflict entries are flattened into the item's conflicts:
//!   every version is kept, in document order.
//! * Every entry is checked with [`Item::validate`](crate::feedsync::Item::validate)
//!   ([`CoreError::InvalidSync`](crate::CoreError::InvalidSync)); two entries of a feed with the
//!   same sync id give [`CoreError::DuplicateId`](crate::CoreError::DuplicateId).
//! * Everything else that is wrong — malformed XML, a missing required element (`sx:sync`,
//!   `atom:updated`, `atom:title`, `atom:author`) or attribute (`id`, `updates`, `sequence`),
//!   a value that does not parse, a repeated element, elements nested deeper than 64 levels —
//!   gives [`CoreError::InvalidXml`](crate::CoreError::InvalidXml) with the
//!   [`XmlPosition`](crate::error::XmlPosition) (byte offset, 1-based line and byte column) of
//!   the offending element or markup. A document is checked to be well-formed before its
//!   entries are validated.
//! * Document type declarations are ignored, and references to entities other than the five
//!   predefined ones are refused.
//! * Reading never panics, never recurses without bound and takes time linear in the input:
//!   elements may nest at most 64 deep, and at most 256 namespace declarations may be in scope
//!   at once.
//!
//! # Characters
//!
//! The writer escapes whatever would not read back as itself: markup characters, carriage
//! returns, and tabs and line feeds in attribute values. Ids, author names and times are read
//! with surrounding white space trimmed, so the writer escapes white space at their ends.
//! Characters XML 1.0 cannot carry (C0 controls other than tab, line feed and carriage return;
//! U+FFFE; U+FFFF) are written as numeric character references; mesh's reader accepts them
//! (even `&#0;`), so every string round-trips, but strict XML 1.0 parsers refuse such
//! documents — applications exchanging feeds with other tools should avoid those characters.

mod cursor;
mod escape;
mod read;
mod write;

pub use read::{read_entry, read_feed, read_feed_bytes};
pub use write::{write_entry, write_feed};

use crate::model::Entry;
use crate::time::Timestamp;

/// The FeedSync namespace (`sx:`).
pub const FEEDSYNC_NS: &str = "http://feedsync.org/2007/feedsync";

/// The Atom namespace.
pub const ATOM_NS: &str = "http://www.w3.org/2005/Atom";

/// mesh's own namespace (`mesh:`), for the seal of a history item (see [`crate::trust`]).
pub const MESH_NS: &str = "urn:mesh:2026";

/// An Atom feed of entries with FeedSync metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtomFeed {
    /// The feed's `atom:id`.
    pub id: String,
    /// The feed's `atom:title`.
    pub title: String,
    /// The feed's `atom:updated`.
    pub updated: Timestamp,
    /// The entries, in document order; their sync ids are unique.
    pub entries: Vec<Entry>,
    /// Where the feed's next page is, when it is split into pages (RFC 5005's paged feeds:
    /// `<link rel="next" href="…"/>`), as a URI reference, resolved against the document's
    /// own address. A reader follows it to read the rest.
    pub next: Option<String>,
}
