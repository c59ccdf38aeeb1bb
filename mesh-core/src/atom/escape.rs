//! Escaping for the writer and reference resolution for the reader.
//!
//! The writer escapes every character that would not read back as itself:
//!
//! * the markup characters `&`, `<`, `>` (and `"` in attribute values);
//! * `\r` everywhere, and `\t` and `\n` in attribute values (XML normalizes them away);
//! * the characters XML 1.0 cannot carry literally (C0 controls other than tab, line feed and
//!   carriage return, U+FFFE, U+FFFF), written as numeric character references;
//! * when asked, white space at either end of the text, for elements whose text the reader
//!   trims (ids, names, times).
//!
//! The reader resolves the five predefined entities and numeric character references to any
//! Unicode scalar value, so every Rust string reads back unchanged.

/// How text is escaped.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Escape {
    /// Element text that is read back verbatim (titles, content).
    Text,
    /// Element text whose literal white space at either end the reader trims.
    TrimmedText,
    /// An attribute value delimited by `"`.
    Attribute,
}

/// Whether XML 1.0 can carry `c` literally (the `Char` production).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Whether `c` is white space in the XML sense.
pub(super) fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn push_char_ref(out: &mut String, c: char) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = write!(out, "&#{};", u32::from(c));
}

/// Appends `s` to `out`, escaped for the given context.
pub(super) fn escape_into(out: &mut String, s: &str, how: Escape) {
    let (start, end) = if how == Escape::TrimmedText {
        let start = s.len() - s.trim_start_matches(is_xml_space).len();
        let end = s.trim_end_matches(is_xml_space).len().max(start);
        (start, end)
    } else {
        (0, s.len())
    };
    for (i, c) in s.char_indices() {
        let edge = i < start || i >= end;
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if how == Escape::Attribute => out.push_str("&quot;"),
            '\r' => push_char_ref(out, c),
            '\t' | '\n' if how == Escape::Attribute || edge => push_char_ref(out, c),
            ' ' if edge => push_char_ref(out, c),
            c if !is_xml_char(c) => push_char_ref(out, c),
            c => out.push(c),
        }
    }
}

/// Resolves the name of a reference (the text between `&` and `;`): a predefined entity or a
/// numeric character reference. Any Unicode scalar value is accepted, including those XML 1.0
/// does not allow, so that whatever the writer escapes reads back.
pub(super) fn resolve_reference(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => {
            let num = name.strip_prefix('#')?;
            let (digits, radix) = match num.strip_prefix('x') {
                Some(hex) => (hex, 16),
                None => (num, 10),
            };
            if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
                return None;
            }
            let code = u32::from_str_radix(digits, radix).ok()?;
            char::from_u32(code)
        }
    }
}

/// Unescapes and normalizes a raw attribute value: references are resolved, and each literal
/// tab, line feed, carriage return or CR LF pair becomes one space (XML attribute-value
/// normalization for undeclared attributes).
///
/// On error, returns the byte offset of the problem within `raw` and a message.
pub(super) fn unescape_attribute(raw: &str) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '&' => {
                let rest = &raw[i + 1..];
                let Some(semi) = rest.find(';') else {
                    return Err((i, "unterminated reference in attribute value".into()));
                };
                let name = &rest[..semi];
                let Some(resolved) = resolve_reference(name) else {
                    return Err((i, format!("unknown or invalid reference &{};", short(name))));
                };
                out.push(resolved);
                // Skip the name and the `;` (all ASCII or at least whole characters).
                while chars.next_if(|&(j, _)| j <= i + 1 + semi).is_some() {}
            }
            '<' => return Err((i, "'<' is not allowed in an attribute value".into())),
            '\r' => {
                chars.next_if(|&(_, n)| n == '\n');
                out.push(' ');
            }
            '\n' | '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// At most 32 characters of `s`, for error messages.
pub(super) fn short(s: &str) -> String {
    let mut it = s.chars();
    let head: String = it.by_ref().take(32).collect();
    if it.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str, how: Escape) -> String {
        let mut out = String::new();
        escape_into(&mut out, s, how);
        out
    }

    #[test]
    fn escapes_markup_and_unrepresentable_characters() {
        assert_eq!(esc("a<b>&\"'", Escape::Text), "a&lt;b&gt;&amp;\"'");
        assert_eq!(esc("a\"b", Escape::Attribute), "a&quot;b");
        assert_eq!(esc("\r\n\t", Escape::Text), "&#13;\n\t");
        assert_eq!(esc("\r\n\t", Escape::Attribute), "&#13;&#10;&#9;");
        assert_eq!(esc("\u{0}\u{1}\u{FFFF}", Escape::Text), "&#0;&#1;&#65535;");
        assert_eq!(esc(" a b\n", Escape::TrimmedText), "&#32;a b&#10;");
        assert_eq!(esc("  ", Escape::TrimmedText), "&#32;&#32;");
    }

    #[test]
    fn resolves_references() {
        assert_eq!(resolve_reference("lt"), Some('<'));
        assert_eq!(resolve_reference("#x1F600"), Some('😀'));
        assert_eq!(resolve_reference("#65"), Some('A'));
        assert_eq!(resolve_reference("#0"), Some('\0'));
        assert_eq!(resolve_reference("#xD800"), None);
        assert_eq!(resolve_reference("#x110000"), None);
        assert_eq!(resolve_reference("#+5"), None);
        assert_eq!(resolve_reference("#x"), None);
        assert_eq!(resolve_reference("#99999999999999999999"), None);
        assert_eq!(resolve_reference("nbsp"), None);
    }

    #[test]
    fn unescapes_and_normalizes_attributes() {
        assert_eq!(unescape_attribute("a&amp;b&#10;c").unwrap(), "a&b\nc");
        assert_eq!(unescape_attribute("a\r\nb\tc\rd").unwrap(), "a b c d");
        assert_eq!(unescape_attribute("é&#xE9;é").unwrap(), "ééé");
        assert_eq!(unescape_attribute("x&y").unwrap_err().0, 1);
        assert_eq!(unescape_attribute("xy&bogus;").unwrap_err().0, 2);
        assert!(unescape_attribute("a<b").is_err());
    }
}
