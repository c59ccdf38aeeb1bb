//! A namespace-aware cursor over the XML events of one document.
//!
//! It wraps quick-xml's [`NsReader`] and adds what the Atom reader needs everywhere: byte
//! positions of elements, resolved namespaces, a nesting-depth limit, resolved references,
//! normalized attribute values and errors carrying an [`XmlPosition`].

use std::borrow::Cow;
use std::collections::HashSet;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use super::escape::{is_xml_space, resolve_reference, short, unescape_attribute};
use super::{ATOM_NS, FEEDSYNC_NS, MESH_NS};
use crate::error::{CoreError, XmlPosition};

/// The deepest element nesting accepted (the root element is at depth 1).
pub(super) const MAX_DEPTH: usize = 64;

/// The most namespace declarations in scope at once. quick-xml looks prefixes up by a linear
/// scan of the declarations in scope, so an unbounded number would make reading quadratic.
pub(super) const MAX_NAMESPACE_DECLARATIONS: usize = 256;

/// The namespaces the reader distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ns {
    /// `http://www.w3.org/2005/Atom`.
    Atom,
    /// `http://feedsync.org/2007/feedsync`.
    Sx,
    /// mesh's own namespace ([`MESH_NS`]).
    Mesh,
    /// Any other namespace, or none.
    Other,
}

/// A start tag.
pub(super) struct Element<'i> {
    /// The element's namespace.
    pub ns: Ns,
    /// Byte offset of the `<` in the document.
    pub offset: u64,
    /// The tag itself.
    start: BytesStart<'i>,
    /// Unprefixed attributes, unescaped and normalized.
    attrs: Vec<(String, String)>,
}

impl Element<'_> {
    /// Whether this is the element `local` of namespace `ns`.
    pub fn is(&self, ns: Ns, local: &str) -> bool {
        self.ns == ns && self.start.local_name().as_ref() == local.as_bytes()
    }

    /// The element's name as written, for messages.
    pub fn name(&self) -> String {
        short(&String::from_utf8_lossy(self.start.name().as_ref()))
    }

    /// The value of the unprefixed attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One step through the document.
pub(super) enum Node<'i> {
    /// A start tag (empty elements are reported as a start and an end).
    Start(Element<'i>),
    /// The end tag of the innermost open element.
    End,
    /// Character data: literal text (`literal`), or the character of a reference.
    Text {
        /// The characters.
        text: Cow<'i, str>,
        /// Whether they were written literally (text or CDATA) rather than as a reference.
        literal: bool,
        /// Byte offset where they start.
        offset: u64,
    },
    /// The end of the document.
    Eof,
}

/// The cursor.
pub(super) struct Cursor<'i> {
    reader: NsReader<&'i [u8]>,
    /// The whole document, for computing lines and columns.
    doc: &'i [u8],
    /// Offset of the parsed text within `doc` (3 when a byte order mark was skipped).
    base: u64,
    depth: usize,
    /// The number of namespace declarations of each open element.
    declarations: Vec<usize>,
    /// Their sum.
    declarations_in_scope: usize,
    /// An end tag owed for an empty element reported as a start.
    pending_end: bool,
}

impl<'i> Cursor<'i> {
    /// A cursor over `doc`, skipping a leading byte order mark.
    pub fn new(doc: &'i str) -> Self {
        let (text, base) = match doc.strip_prefix('\u{FEFF}') {
            Some(rest) => (rest, 3),
            None => (doc, 0),
        };
        let mut reader = NsReader::from_str(text);
        let config = reader.config_mut();
        config.expand_empty_elements = true;
        config.check_end_names = true;
        config.trim_text(false);
        Cursor {
            reader,
            doc: doc.as_bytes(),
            base,
            depth: 0,
            declarations: Vec::new(),
            declarations_in_scope: 0,
            pending_end: false,
        }
    }

    /// An `InvalidXml` error at byte `offset` of the document.
    pub fn error(&self, offset: u64, message: impl Into<String>) -> CoreError {
        invalid_xml(self.doc, offset, message)
    }

    /// The offset of the first byte at or after `offset` that is not XML white space.
    pub fn skip_space(&self, offset: u64) -> u64 {
        let start = usize::try_from(offset).map_or(self.doc.len(), |o| o.min(self.doc.len()));
        let spaces = self.doc[start..]
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .count();
        (start + spaces) as u64
    }

    /// The next node.
    pub fn next(&mut self) -> Result<Node<'i>, CoreError> {
        if self.pending_end {
            self.pending_end = false;
            self.close();
            return Ok(Node::End);
        }
        loop {
            let offset = self.base + self.reader.buffer_position();
            let (ns, event) = match self.reader.read_resolved_event() {
                Ok((ns, event)) => (namespace(&ns), event),
                Err(e) => {
                    let at = self.base + self.reader.error_position();
                    return Err(self.error(at, e.to_string()));
                }
            };
            return match event {
                Event::Start(start) => self.start(ns, start, offset),
                Event::Empty(start) => {
                    let el = self.start(ns, start, offset)?;
                    self.pending_end = true;
                    Ok(el)
                }
                Event::End(_) => {
                    self.close();
                    Ok(Node::End)
                }
                Event::Text(t) => match t.xml10_content() {
                    Ok(text) => Ok(Node::Text {
                        text,
                        literal: true,
                        offset,
                    }),
                    Err(e) => Err(self.error(offset, e.to_string())),
                },
                Event::CData(t) => match t.xml10_content() {
                    Ok(text) => Ok(Node::Text {
                        text,
                        literal: true,
                        offset,
                    }),
                    Err(e) => Err(self.error(offset, e.to_string())),
                },
                Event::GeneralRef(r) => {
                    let name = String::from_utf8_lossy(&r);
                    match resolve_reference(&name) {
                        Some(c) => Ok(Node::Text {
                            text: Cow::Owned(c.to_string()),
                            literal: false,
                            offset,
                        }),
                        None => Err(self.error(
                            offset,
                            format!("unknown or invalid reference &{};", short(&name)),
                        )),
                    }
                }
                Event::Eof => Ok(Node::Eof),
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) | Event::DocType(_) => continue,
            };
        }
    }

    /// Leaves the innermost open element.
    fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        let declared = self.declarations.pop().unwrap_or(0);
        self.declarations_in_scope = self.declarations_in_scope.saturating_sub(declared);
    }

    fn start(
        &mut self,
        ns: Result<Ns, String>,
        start: BytesStart<'i>,
        offset: u64,
    ) -> Result<Node<'i>, CoreError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(
                offset,
                format!("elements are nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        let ns = match ns {
            Ok(ns) => ns,
            Err(prefix) => {
                return Err(self.error(
                    offset,
                    format!("undeclared namespace prefix {:?}", short(&prefix)),
                ))
            }
        };
        let (attrs, declared) = self.attributes(&start, offset)?;
        self.declarations.push(declared);
        self.declarations_in_scope += declared;
        if self.declarations_in_scope > MAX_NAMESPACE_DECLARATIONS {
            return Err(self.error(
                offset,
                format!(
                    "more than {MAX_NAMESPACE_DECLARATIONS} namespace declarations are in scope"
                ),
            ));
        }
        Ok(Node::Start(Element {
            ns,
            offset,
            start,
            attrs,
        }))
    }

    /// Checks every attribute of `start` and keeps the unprefixed ones (attributes of other
    /// namespaces, including namespace declarations, are ignored). Also returns the number of
    /// namespace declarations.
    fn attributes(
        &self,
        start: &BytesStart<'i>,
        offset: u64,
    ) -> Result<(Vec<(String, String)>, usize), CoreError> {
        let mut out = Vec::new();
        let mut declared = 0;
        // quick-xml's own duplicate check is quadratic in the number of attributes.
        let mut seen = HashSet::new();
        for attr in start.attributes().with_checks(false) {
            let attr = attr.map_err(|e| self.error(offset, format!("bad attribute: {e}")))?;
            let key: &[u8] = attr.key.into_inner();
            if !seen.insert(key) {
                return Err(self.error(
                    offset,
                    format!(
                        "duplicate attribute {:?}",
                        short(&String::from_utf8_lossy(key))
                    ),
                ));
            }
            if key == b"xmlns" || key.starts_with(b"xmlns:") {
                declared += 1;
                continue;
            }
            let (ns, local) = self.reader.resolve_attribute(attr.key);
            match ns {
                ResolveResult::Unbound => {}
                ResolveResult::Bound(_) => continue,
                ResolveResult::Unknown(prefix) => {
                    return Err(self.error(
                        offset,
                        format!(
                            "undeclared namespace prefix {:?}",
                            short(&String::from_utf8_lossy(&prefix))
                        ),
                    ))
                }
            }
            let name = String::from_utf8_lossy(local.as_ref()).into_owned();
            let raw = std::str::from_utf8(&attr.value)
                .map_err(|e| self.error(offset, format!("attribute {name:?}: {e}")))?;
            let value = unescape_attribute(raw)
                .map_err(|(_, msg)| self.error(offset, format!("attribute {name:?}: {msg}")))?;
            out.push((name, value));
        }
        Ok((out, declared))
    }

    /// Reads the text content of the element just started, up to and including its end tag.
    ///
    /// Comments and processing instructions are ignored; a child element is an error. With
    /// `trim`, literal white space at either end is removed (white space written as character
    /// references is kept).
    pub fn text(&mut self, el: &Element<'_>, trim: bool) -> Result<String, CoreError> {
        // (text, literal) pieces, so that only literal white space is trimmed.
        let mut pieces: Vec<(Cow<'i, str>, bool)> = Vec::new();
        loop {
            match self.next()? {
                Node::Text { text, literal, .. } => pieces.push((text, literal)),
                Node::End => break,
                Node::Start(child) => {
                    return Err(self.error(
                        child.offset,
                        format!(
                            "unexpected element <{}> inside <{}>",
                            child.name(),
                            el.name()
                        ),
                    ))
                }
                Node::Eof => return Err(self.unclosed(el)),
            }
        }
        if trim {
            for (text, _) in pieces.iter_mut().take_while(|(_, literal)| *literal) {
                let trimmed = text.trim_start_matches(is_xml_space);
                if trimmed.is_empty() {
                    *text = Cow::Borrowed("");
                } else {
                    *text = Cow::Owned(trimmed.to_owned());
                    break;
                }
            }
            for (text, _) in pieces.iter_mut().rev().take_while(|(_, literal)| *literal) {
                let trimmed = text.trim_end_matches(is_xml_space);
                if trimmed.is_empty() {
                    *text = Cow::Borrowed("");
                } else {
                    *text = Cow::Owned(trimmed.to_owned());
                    break;
                }
            }
        }
        Ok(pieces.iter().map(|(text, _)| &**text).collect())
    }

    /// Skips the rest of the element just started, up to and including its end tag.
    pub fn skip(&mut self, el: &Element<'_>) -> Result<(), CoreError> {
        let mut open = 1usize;
        loop {
            match self.next()? {
                Node::Start(_) => open += 1,
                Node::End => {
                    open -= 1;
                    if open == 0 {
                        return Ok(());
                    }
                }
                Node::Text { .. } => {}
                Node::Eof => return Err(self.unclosed(el)),
            }
        }
    }

    /// The error for an element still open at the end of the document.
    pub fn unclosed(&self, el: &Element<'_>) -> CoreError {
        self.error(
            el.offset,
            format!(
                "element <{}> is not closed before the end of the document",
                el.name()
            ),
        )
    }
}

fn namespace(ns: &ResolveResult<'_>) -> Result<Ns, String> {
    match ns {
        ResolveResult::Bound(n) if n.as_ref() == ATOM_NS.as_bytes() => Ok(Ns::Atom),
        ResolveResult::Bound(n) if n.as_ref() == FEEDSYNC_NS.as_bytes() => Ok(Ns::Sx),
        ResolveResult::Bound(n) if n.as_ref() == MESH_NS.as_bytes() => Ok(Ns::Mesh),
        ResolveResult::Bound(_) | ResolveResult::Unbound => Ok(Ns::Other),
        ResolveResult::Unknown(prefix) => Err(String::from_utf8_lossy(prefix).into_owned()),
    }
}

/// An `InvalidXml` error at byte `offset` of `doc`, with its line and column.
pub(super) fn invalid_xml(doc: &[u8], offset: u64, message: impl Into<String>) -> CoreError {
    CoreError::InvalidXml {
        position: position(doc, offset),
        message: message.into(),
    }
}

/// The line and column of byte `offset` of `doc` (lines end at `\n`; columns count bytes).
pub(super) fn position(doc: &[u8], offset: u64) -> XmlPosition {
    let end = usize::try_from(offset).map_or(doc.len(), |o| o.min(doc.len()));
    let before = &doc[..end];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    XmlPosition {
        offset: end as u64,
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(end - line_start + 1).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_byte_columns() {
        let doc = b"ab\ncd\n\xc3\xa9f";
        let p = |o| {
            let p = position(doc, o);
            (p.line, p.column)
        };
        assert_eq!(p(0), (1, 1));
        assert_eq!(p(2), (1, 3));
        assert_eq!(p(3), (2, 1));
        assert_eq!(p(8), (3, 3));
        assert_eq!(p(1000), (3, 4));
    }

    #[test]
    fn trims_only_literal_white_space() {
        let doc = "<a> &#32;x&#10;\n </a>";
        let mut c = Cursor::new(doc);
        let Node::Start(el) = c.next().unwrap() else {
            panic!("expected a start tag")
        };
        assert_eq!(c.text(&el, true).unwrap(), " x\n");
    }
}
