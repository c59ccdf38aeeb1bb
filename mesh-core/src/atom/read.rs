//! Reading Atom feeds and entries.

use crate::trust::Seal;
use std::collections::HashSet;
use std::str::FromStr;

use serde_json::Value;

use super::cursor::{invalid_xml, Cursor, Element, Node, Ns};
use super::escape::short;
use super::AtomFeed;
use crate::content::JsonContent;
use crate::error::{CoreError, Result};
use crate::feedsync::{HistoryItem, SyncMeta};
use crate::id::{DeviceId, EntryId, UserId};
use crate::model::{Entry, EntryData, EntryVersion, MediaRef};
use crate::time::Timestamp;

/// The prefix of an enclosure link's `href` that names a mesh blob.
pub(super) const BLOB_HREF_PREFIX: &str = "mesh:blob:";

/// Reads an Atom feed whose entries carry FeedSync metadata.
///
/// Every entry is validated ([`Item::validate`](crate::feedsync::Item::validate)), and sync ids
/// must be unique within the feed.
///
/// # Errors
///
/// * [`CoreError::InvalidXml`], with the position of the offending element, for malformed XML,
///   a wrong root element, a missing required element or attribute, or a value that does not
///   parse;
/// * [`CoreError::InvalidSync`] for sync metadata that breaks a FeedSync rule;
/// * [`CoreError::DuplicateId`] when two entries share a sync id.
pub fn read_feed(xml: &str) -> Result<AtomFeed> {
    let mut cursor = Cursor::new(xml);
    let root = root(&mut cursor, "feed")?;
    let feed = feed(&mut cursor, &root)?;
    end_of_document(&mut cursor)?;
    // Semantics are checked once the whole document is known to be well-formed.
    let mut seen = HashSet::with_capacity(feed.entries.len());
    for entry in &feed.entries {
        entry.validate()?;
        if !seen.insert(entry.sync.id.as_str()) {
            return Err(CoreError::DuplicateId {
                id: entry.sync.id.to_string(),
                context: format!("Atom feed {:?}", short(&feed.id)),
            });
        }
    }
    Ok(feed)
}

/// Reads an Atom feed from bytes, which must be UTF-8 (see [`read_feed`]).
///
/// # Errors
///
/// As [`read_feed`]; bytes that are not UTF-8 give [`CoreError::InvalidXml`] at the first
/// invalid byte.
pub fn read_feed_bytes(xml: &[u8]) -> Result<AtomFeed> {
    match std::str::from_utf8(xml) {
        Ok(text) => read_feed(text),
        Err(e) => Err(invalid_xml(
            xml,
            e.valid_up_to() as u64,
            "the document is not valid UTF-8",
        )),
    }
}

/// Reads a single Atom entry (the root element is `entry`) with FeedSync metadata.
///
/// The entry is validated ([`Item::validate`](crate::feedsync::Item::validate)).
///
/// # Errors
///
/// As [`read_feed`], except that there are no duplicate ids to find.
pub fn read_entry(xml: &str) -> Result<Entry> {
    let mut cursor = Cursor::new(xml);
    let root = root(&mut cursor, "entry")?;
    let entry = entry(&mut cursor, &root)?;
    end_of_document(&mut cursor)?;
    entry.validate()?;
    Ok(entry)
}

/// Reads up to the root element and checks that it is the Atom element `local`.
fn root<'i>(cursor: &mut Cursor<'i>, local: &str) -> Result<Element<'i>> {
    loop {
        match cursor.next()? {
            Node::Start(el) if el.is(Ns::Atom, local) => return Ok(el),
            Node::Start(el) => {
                return Err(cursor.error(
                    el.offset,
                    format!(
                        "the root element must be <{local}> in the Atom namespace, not <{}>",
                        el.name()
                    ),
                ))
            }
            Node::Text { text, offset, .. } => outside_root(cursor, &text, offset)?,
            Node::End => return Err(cursor.error(0, "unexpected end tag")),
            Node::Eof => return Err(cursor.error(0, "the document has no root element")),
        }
    }
}

/// Checks that nothing but comments, processing instructions and white space follows the root.
fn end_of_document(cursor: &mut Cursor<'_>) -> Result<()> {
    loop {
        match cursor.next()? {
            Node::Eof => return Ok(()),
            Node::Text { text, offset, .. } => outside_root(cursor, &text, offset)?,
            Node::Start(el) => {
                return Err(cursor.error(
                    el.offset,
                    format!("element <{}> after the root element", el.name()),
                ))
            }
            Node::End => return Err(cursor.error(0, "unexpected end tag")),
        }
    }
}

fn outside_root(cursor: &Cursor<'_>, text: &str, offset: u64) -> Result<()> {
    if text.chars().all(super::escape::is_xml_space) {
        Ok(())
    } else {
        Err(cursor.error(cursor.skip_space(offset), "text outside the root element"))
    }
}

/// Stores `value` in `slot`, refusing a second occurrence of the element.
fn once<T>(cursor: &Cursor<'_>, el: &Element<'_>, slot: &mut Option<T>, value: T) -> Result<()> {
    if slot.is_some() {
        return Err(cursor.error(
            el.offset,
            format!("element <{}> appears more than once", el.name()),
        ));
    }
    *slot = Some(value);
    Ok(())
}

fn missing(cursor: &Cursor<'_>, el: &Element<'_>, what: &str) -> CoreError {
    cursor.error(el.offset, format!("element <{}> has no {what}", el.name()))
}

/// Parses `text` as `T`, or reports an error at `el`.
fn parse_at<T: FromStr>(cursor: &Cursor<'_>, el: &Element<'_>, what: &str, text: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| cursor.error(el.offset, format!("bad {what} {:?}: {e}", short(text))))
}

fn timestamp(cursor: &mut Cursor<'_>, el: &Element<'_>) -> Result<Timestamp> {
    let text = cursor.text(el, true)?;
    parse_at(cursor, el, &format!("<{}> time", el.name()), &text)
}

/// The body of `<feed>`.
fn feed(cursor: &mut Cursor<'_>, el: &Element<'_>) -> Result<AtomFeed> {
    let (mut id, mut title, mut updated, mut next) = (None, None, None, None);
    let mut entries = Vec::new();
    loop {
        match cursor.next()? {
            Node::Start(child) => {
                if child.is(Ns::Atom, "id") {
                    let text = cursor.text(&child, true)?;
                    once(cursor, &child, &mut id, text)?;
                } else if child.is(Ns::Atom, "title") {
                    let text = cursor.text(&child, false)?;
                    once(cursor, &child, &mut title, text)?;
                } else if child.is(Ns::Atom, "updated") {
                    let t = timestamp(cursor, &child)?;
                    once(cursor, &child, &mut updated, t)?;
                } else if child.is(Ns::Atom, "entry") {
                    entries.push(entry(cursor, &child)?);
                } else if child.is(Ns::Atom, "link") && child.attr("rel") == Some("next") {
                    let href = required(cursor, &child, "href")?.to_owned();
                    cursor.skip(&child)?;
                    once(cursor, &child, &mut next, href)?;
                } else {
                    cursor.skip(&child)?;
                }
            }
            Node::End => break,
            Node::Text { .. } => {}
            Node::Eof => return Err(cursor.unclosed(el)),
        }
    }
    Ok(AtomFeed {
        id: id.ok_or_else(|| missing(cursor, el, "<id>"))?,
        title: title.ok_or_else(|| missing(cursor, el, "<title>"))?,
        updated: updated.ok_or_else(|| missing(cursor, el, "<updated>"))?,
        entries,
        next,
    })
}

/// The body of an `<entry>`, with its conflicts flattened (not yet validated).
fn entry(cursor: &mut Cursor<'_>, el: &Element<'_>) -> Result<Entry> {
    let mut title = None;
    let mut published = None;
    let mut updated = None;
    let mut author = None;
    let mut content = None;
    let mut media = None;
    let mut sync = None;
    loop {
        match cursor.next()? {
            Node::Start(child) => {
                if child.is(Ns::Atom, "title") {
                    let text = cursor.text(&child, false)?;
                    once(cursor, &child, &mut title, text)?;
                } else if child.is(Ns::Atom, "published") {
                    let t = timestamp(cursor, &child)?;
                    once(cursor, &child, &mut published, t)?;
                } else if child.is(Ns::Atom, "updated") {
                    let t = timestamp(cursor, &child)?;
                    once(cursor, &child, &mut updated, t)?;
                } else if child.is(Ns::Atom, "author") {
                    // Atom allows several authors; mesh keeps the first.
                    let name = person(cursor, &child)?;
                    author.get_or_insert(name);
                } else if child.is(Ns::Atom, "content") {
                    let c = entry_content(cursor, &child)?;
                    once(cursor, &child, &mut content, c)?;
                } else if child.is(Ns::Atom, "link") {
                    let m = link(cursor, &child)?;
                    cursor.skip(&child)?;
                    if let Some(m) = m {
                        once(cursor, &child, &mut media, m)?;
                    }
                } else if child.is(Ns::Sx, "sync") {
                    let s = sync_element(cursor, &child)?;
                    once(cursor, &child, &mut sync, s)?;
                } else {
                    // Includes atom:id: the sync id is authoritative.
                    cursor.skip(&child)?;
                }
            }
            Node::End => break,
            Node::Text { .. } => {}
            Node::Eof => return Err(cursor.unclosed(el)),
        }
    }
    let (sync, conflicts) = sync.ok_or_else(|| missing(cursor, el, "<sx:sync>"))?;
    let updated = updated.ok_or_else(|| missing(cursor, el, "<updated>"))?;
    let data = EntryData {
        title: title.ok_or_else(|| missing(cursor, el, "<title>"))?,
        content: content.unwrap_or_else(JsonContent::null),
        media,
        author: author.ok_or_else(|| missing(cursor, el, "<author>"))?,
        // Atom makes <published> optional; a missing one means "published when updated".
        published: published.unwrap_or(updated),
        updated,
    };
    Ok(Entry {
        sync,
        content: data,
        conflicts,
    })
}

/// An Atom person construct: its `<name>` as a user id.
fn person(cursor: &mut Cursor<'_>, el: &Element<'_>) -> Result<UserId> {
    let mut name = None;
    loop {
        match cursor.next()? {
            Node::Start(child) if child.is(Ns::Atom, "name") => {
                let text = cursor.text(&child, true)?;
                let id: UserId = parse_at(cursor, &child, "author name", &text)?;
                once(cursor, &child, &mut name, id)?;
            }
            Node::Start(child) => cursor.skip(&child)?,
            Node::End => break,
            Node::Text { .. } => {}
            Node::Eof => return Err(cursor.unclosed(el)),
        }
    }
    name.ok_or_else(|| missing(cursor, el, "<name>"))
}

/// `<content>`: JSON for `application/json`, a JSON string for text.
fn entry_content(cursor: &mut Cursor<'_>, el: &Element<'_>) -> Result<JsonContent> {
    if el.attr("src").is_some() {
        return Err(cursor.error(el.offset, "out-of-line content (src) is not supported"));
    }
    let kind = el.attr("type").map(|t| {
        let media_type = t.split(';').next().unwrap_or_default();
        media_type.trim().to_ascii_lowercase()
    });
    match kind.as_deref() {
        Some("application/json") => {
            let text = cursor.text(el, false)?;
            JsonContent::parse(&text)
                .map_err(|e| cursor.error(el.offset, format!("bad JSON content: {e}")))
        }
        None | Some("text") | Some("html") => {
            let text = cursor.text(el, false)?;
            JsonContent::from_value(&Value::String(text))
                .map_err(|e| cursor.error(el.offset, format!("bad content: {e}")))
        }
        Some(other) => Err(cursor.error(
            el.offset,
            format!("unsupported content type {:?}", short(other)),
        )),
    }
}

/// An Atom `<link>`: the media reference if it is an enclosure naming a mesh blob.
fn link(cursor: &Cursor<'_>, el: &Element<'_>) -> Result<Option<MediaRef>> {
    if el.attr("rel") != Some("enclosure") {
        return Ok(None);
    }
    let Some(hash) = el
        .attr("href")
        .and_then(|h| h.strip_prefix(BLOB_HREF_PREFIX))
    else {
        return Ok(None);
    };
    let content_type = el
        .attr("type")
        .ok_or_else(|| missing(cursor, el, "type attribute"))?;
    let length = el
        .attr("length")
        .ok_or_else(|| missing(cursor, el, "length attribute"))?;
    Ok(Some(MediaRef {
        hash: hash.to_owned(),
        content_type: content_type.to_owned(),
        length: parse_at(cursor, el, "length", length.trim())?,
    }))
}

fn boolean(cursor: &Cursor<'_>, el: &Element<'_>, name: &str) -> Result<bool> {
    match el.attr(name).map(str::trim) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(cursor.error(
            el.offset,
            format!(
                "bad {name} value {:?}: expected true or false",
                short(other)
            ),
        )),
    }
}

fn required<'e>(cursor: &Cursor<'_>, el: &'e Element<'_>, name: &str) -> Result<&'e str> {
    el.attr(name)
        .ok_or_else(|| missing(cursor, el, &format!("{name} attribute")))
}

/// `<sx:sync>`: the version's metadata and its flattened conflicts.
fn sync_element(
    cursor: &mut Cursor<'_>,
    el: &Element<'_>,
) -> Result<(SyncMeta, Vec<EntryVersion>)> {
    let id: EntryId = parse_at(cursor, el, "sync id", required(cursor, el, "id")?)?;
    let updates: u32 = parse_at(
        cursor,
        el,
        "updates",
        required(cursor, el, "updates")?.trim(),
    )?;
    let deleted = boolean(cursor, el, "deleted")?;
    let noconflicts = boolean(cursor, el, "noconflicts")?;
    let mut history = Vec::new();
    let mut conflicts = None;
    loop {
        match cursor.next()? {
            Node::Start(child) if child.is(Ns::Sx, "history") => {
                history.push(history_item(cursor, &child)?);
            }
            Node::Start(child) if child.is(Ns::Sx, "conflicts") => {
                let cs = conflict_list(cursor, &child)?;
                once(cursor, &child, &mut conflicts, cs)?;
            }
            Node::Start(child) => cursor.skip(&child)?,
            Node::End => break,
            Node::Text { .. } => {}
            Node::Eof => return Err(cursor.unclosed(el)),
        }
    }
    let meta = SyncMeta {
        id,
        updates,
        deleted,
        noconflicts,
        history,
    };
    Ok((meta, conflicts.unwrap_or_default()))
}

fn history_item(cursor: &mut Cursor<'_>, el: &Element<'_>) -> Result<HistoryItem> {
    let sequence = parse_at(
        cursor,
        el,
        "sequence",
        required(cursor, el, "sequence")?.trim(),
    )?;
    let when = match el.attr("when") {
        Some(w) => Some(parse_at::<Timestamp>(cursor, el, "when", w.trim())?),
        None => None,
    };
    let by = match el.attr("by") {
        Some(b) => Some(parse_at::<DeviceId>(cursor, el, "by", b)?),
        None => None,
    };
    let mut item = HistoryItem::new(sequence, when, by);
    let mut seal = None;
    loop {
        match cursor.next()? {
            Node::Start(child) if child.is(Ns::Mesh, "seal") => {
                let s = seal_element(cursor, &child)?;
                once(cursor, &child, &mut seal, s)?;
                cursor.skip(&child)?;
            }
            Node::Start(child) => cursor.skip(&child)?,
            Node::End => break,
            Node::Text { .. } => {}
            Node::Eof => return Err(cursor.unclosed(el)),
        }
    }
    item.seal = seal.map(Box::new);
    Ok(item)
}

/// `<mesh:seal deleted author digest sig/>`: the signature on a history item.
fn seal_element(cursor: &Cursor<'_>, el: &Element<'_>) -> Result<Seal> {
    Ok(Seal {
        deleted: boolean(cursor, el, "deleted")?,
        author: parse_at(cursor, el, "seal author", required(cursor, el, "author")?)?,
        digest: parse_at(
            cursor,
            el,
            "seal digest",
            required(cursor, el, "digest")?.trim(),
        )?,
        sig: parse_at(
            cursor,
            el,
            "seal signature",
            required(cursor, el, "sig")?.trim(),
        )?,
    })
}

/// `<sx:conflicts>`: every version of every conflict entry, nested conflicts flattened.
fn conflict_list(cursor: &mut Cursor<'_>, el: &Element<'_>) -> Result<Vec<EntryVersion>> {
    let mut out = Vec::new();
    loop {
        match cursor.next()? {
            Node::Start(child) if child.is(Ns::Atom, "entry") => {
                let (version, nested) = entry(cursor, &child)?.into_versions();
                out.push(version);
                out.extend(nested);
            }
            Node::Start(child) => cursor.skip(&child)?,
            Node::End => break,
            Node::Text { .. } => {}
            Node::Eof => return Err(cursor.unclosed(el)),
        }
    }
    Ok(out)
}
