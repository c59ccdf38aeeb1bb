//! Writing Atom feeds and entries.

use super::escape::{escape_into, Escape};
use super::read::BLOB_HREF_PREFIX;
use super::{AtomFeed, ATOM_NS, FEEDSYNC_NS, MESH_NS};
use crate::feedsync::SyncMeta;
use crate::model::{Entry, EntryData};

const DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n";

/// Writes an Atom feed with FeedSync metadata (see the [module documentation](super) for the
/// mapping). The output is UTF-8 text that [`read_feed`](super::read_feed) reads back equal,
/// provided the entries' sync ids are unique and each entry is valid
/// ([`Item::validate`](crate::feedsync::Item::validate)).
pub fn write_feed(feed: &AtomFeed) -> String {
    let mut w = Writer::default();
    w.out.push_str(DECLARATION);
    w.open_root("feed");
    w.text_element(1, "title", &feed.title, Escape::Text);
    w.text_element(1, "id", &feed.id, Escape::TrimmedText);
    w.text_element(1, "updated", &feed.updated.to_string(), Escape::Text);
    if let Some(next) = &feed.next {
        w.indent(1);
        w.out.push_str("<link");
        w.attr("rel", "next");
        w.attr("href", next);
        w.out.push_str("/>\n");
    }
    for entry in &feed.entries {
        w.entry(1, entry, false);
    }
    w.out.push_str("</feed>\n");
    w.out
}

/// Writes one Atom entry with FeedSync metadata as a standalone document (the root element is
/// `entry`). [`read_entry`](super::read_entry) reads it back equal, provided the entry is
/// valid ([`Item::validate`](crate::feedsync::Item::validate)).
pub fn write_entry(entry: &Entry) -> String {
    let mut w = Writer::default();
    w.out.push_str(DECLARATION);
    w.entry(0, entry, true);
    w.out
}

#[derive(Default)]
struct Writer {
    out: String,
}

impl Writer {
    fn indent(&mut self, level: usize) {
        for _ in 0..level {
            self.out.push_str("  ");
        }
    }

    fn open_root(&mut self, name: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.attr("xmlns", ATOM_NS);
        self.attr("xmlns:sx", FEEDSYNC_NS);
        self.attr("xmlns:mesh", MESH_NS);
        self.out.push_str(">\n");
    }

    fn attr(&mut self, name: &str, value: &str) {
        self.out.push(' ');
        self.out.push_str(name);
        self.out.push_str("=\"");
        escape_into(&mut self.out, value, Escape::Attribute);
        self.out.push('"');
    }

    fn text_element(&mut self, level: usize, name: &str, text: &str, how: Escape) {
        self.indent(level);
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        escape_into(&mut self.out, text, how);
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    /// An entry with its conflicts; `root` adds the namespace declarations.
    fn entry(&mut self, level: usize, entry: &Entry, root: bool) {
        self.version(level, &entry.sync, &entry.content, root, |w, level| {
            if entry.conflicts.is_empty() {
                return;
            }
            w.indent(level);
            w.out.push_str("<sx:conflicts>\n");
            for c in &entry.conflicts {
                w.version(level + 1, &c.sync, &c.content, false, |_, _| {});
            }
            w.indent(level);
            w.out.push_str("</sx:conflicts>\n");
        });
    }

    /// One version as an `<entry>`; `inside_sync` writes what follows the history.
    fn version(
        &mut self,
        level: usize,
        sync: &SyncMeta,
        data: &EntryData,
        root: bool,
        inside_sync: impl FnOnce(&mut Self, usize),
    ) {
        self.indent(level);
        if root {
            self.open_root("entry");
        } else {
            self.out.push_str("<entry>\n");
        }
        let inner = level + 1;
        self.text_element(inner, "id", sync.id.as_str(), Escape::TrimmedText);
        self.text_element(inner, "title", &data.title, Escape::Text);
        self.text_element(
            inner,
            "published",
            &data.published.to_string(),
            Escape::Text,
        );
        self.text_element(inner, "updated", &data.updated.to_string(), Escape::Text);
        self.indent(inner);
        self.out.push_str("<author><name>");
        escape_into(&mut self.out, data.author.as_str(), Escape::TrimmedText);
        self.out.push_str("</name></author>\n");
        self.indent(inner);
        self.out.push_str("<content type=\"application/json\">");
        escape_into(&mut self.out, data.content.as_str(), Escape::Text);
        self.out.push_str("</content>\n");
        if let Some(media) = &data.media {
            self.indent(inner);
            self.out.push_str("<link");
            self.attr("rel", "enclosure");
            self.attr("href", &format!("{BLOB_HREF_PREFIX}{}", media.hash));
            self.attr("type", &media.content_type);
            self.attr("length", &media.length.to_string());
            self.out.push_str("/>\n");
        }
        self.indent(inner);
        self.out.push_str("<sx:sync");
        self.attr("id", sync.id.as_str());
        self.attr("updates", &sync.updates.to_string());
        self.attr("deleted", bool_str(sync.deleted));
        self.attr("noconflicts", bool_str(sync.noconflicts));
        self.out.push_str(">\n");
        for h in &sync.history {
            self.indent(inner + 1);
            self.out.push_str("<sx:history");
            self.attr("sequence", &h.sequence.to_string());
            if let Some(when) = h.when {
                self.attr("when", &when.to_string());
            }
            if let Some(by) = &h.by {
                self.attr("by", by.as_str());
            }
            match &h.seal {
                None => self.out.push_str("/>\n"),
                Some(seal) => {
                    self.out.push_str("><mesh:seal");
                    self.attr("deleted", bool_str(seal.deleted));
                    self.attr("author", seal.author.as_str());
                    self.attr("digest", &seal.digest.to_string());
                    self.attr("sig", &seal.sig.to_string());
                    self.out.push_str("/></sx:history>\n");
                }
            }
        }
        inside_sync(self, inner + 1);
        self.indent(inner);
        self.out.push_str("</sx:sync>\n");
        self.indent(level);
        self.out.push_str("</entry>\n");
    }
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}
