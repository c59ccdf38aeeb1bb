//! OData-style query options — `$filter`, `$orderby`, `$top`, `$skip` — parsed into a
//! [`Query`].
//!
//! The hub accepts these on every entry collection; the grammar is small and strict:
//!
//! ```text
//! filter   := or
//! or       := and ( "or" and )*
//! and      := primary ( "and" primary )*
//! primary  := "(" or ")" | field op value
//! op       := "eq" | "ne" | "lt" | "gt"
//! field    := "id" | "title" | "author" | "updated" | "published"
//!           | "content" | "content/" segment ( "/" segment )*
//! value    := 'text' (a quote doubled inside: 'it''s') | number | true | false | null
//!           | an unquoted RFC 3339 time (2026-01-31T10:00:00Z)
//! orderby  := field [ "asc" | "desc" ] ( "," field [ "asc" | "desc" ] )*
//! ```
//!
//! Keywords and the base field names are case-insensitive; content path segments are not.
//! Values compared with `updated` or `published` must be times (quoted or not), and are
//! normalised to UTC. Inputs are bounded ([`MAX_LEN`] bytes, [`MAX_DEPTH`] nested parentheses,
//! [`MAX_TERMS`] comparisons), so parsing is linear and never recurses without bound.
//!
//! ```
//! use mesh_core::model::odata;
//! let q = odata::parse_query(
//!     Some("content/done eq false and (title ne '' or author eq 'ann')"),
//!     Some("updated desc, title"),
//!     Some("20"),
//!     None,
//! )
//! .unwrap();
//! assert_eq!(q.top, Some(20));
//! assert_eq!(q.order.len(), 2);
//! assert!(odata::parse_filter("title eq").is_err());
//! ```

use std::fmt;

use serde_json::Value;

use crate::model::{Field, Filter, Query};
use crate::time::Timestamp;

/// The longest `$filter` or `$orderby` accepted, in bytes.
pub const MAX_LEN: usize = 4096;
/// The deepest nesting of parentheses accepted.
pub const MAX_DEPTH: usize = 32;
/// The most comparisons one filter may hold.
pub const MAX_TERMS: usize = 128;
/// The largest `$top` accepted.
pub const MAX_TOP: usize = 10_000;
/// The largest `$skip` accepted: a server walks past every skipped entry, so a larger skip is
/// refused rather than paid for (page further with a filter on the last key seen, or read the
/// feed's changes from a cursor).
pub const MAX_SKIP: usize = 100_000;

/// Why a query option was refused, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// Which option (`$filter`, `$orderby`, `$top`, `$skip`).
    pub option: &'static str,
    /// Byte offset in the option's value.
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at byte {}: {}",
            self.option, self.position, self.message
        )
    }
}

impl std::error::Error for QueryError {}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    Comma,
    Str(String),
    Word(String),
}

fn lex(option: &'static str, s: &str) -> Result<Vec<(usize, Tok)>, QueryError> {
    let err = |position: usize, message: String| QueryError {
        option,
        position,
        message,
    };
    if s.len() > MAX_LEN {
        return Err(err(
            MAX_LEN,
            format!("longer than {MAX_LEN} bytes ({})", s.len()),
        ));
    }
    let mut out = Vec::new();
    let mut it = s.char_indices().peekable();
    while let Some(&(i, c)) = it.peek() {
        match c {
            c if c.is_whitespace() => {
                it.next();
            }
            '(' => {
                it.next();
                out.push((i, Tok::Open));
            }
            ')' => {
                it.next();
                out.push((i, Tok::Close));
            }
            ',' => {
                it.next();
                out.push((i, Tok::Comma));
            }
            '\'' => {
                it.next();
                let mut text = String::new();
                let mut closed = false;
                while let Some((_, c)) = it.next() {
                    if c == '\'' {
                        if it.peek().map(|&(_, c)| c) == Some('\'') {
                            it.next();
                            text.push('\'');
                        } else {
                            closed = true;
                            break;
                        }
                    } else {
                        text.push(c);
                    }
                }
                if !closed {
                    return Err(err(i, "unterminated string".into()));
                }
                out.push((i, Tok::Str(text)));
            }
            c if is_word_char(c) => {
                let mut w = String::new();
                while let Some(&(_, c)) = it.peek() {
                    if !is_word_char(c) {
                        break;
                    }
                    w.push(c);
                    it.next();
                }
                out.push((i, Tok::Word(w)));
            }
            other => return Err(err(i, format!("unexpected character {other:?}"))),
        }
    }
    Ok(out)
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '/' | '.' | '-' | '+' | ':' | '$')
}

struct Parser<'a> {
    option: &'static str,
    toks: &'a [(usize, Tok)],
    pos: usize,
    end: usize,
    terms: usize,
}

impl Parser<'_> {
    fn err(&self, message: impl Into<String>) -> QueryError {
        QueryError {
            option: self.option,
            position: self.toks.get(self.pos).map_or(self.end, |t| t.0),
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.1)
    }

    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn or(&mut self, depth: usize) -> Result<Filter, QueryError> {
        let mut f = self.and(depth)?;
        while self.keyword("or") {
            self.pos += 1;
            f = f.or(self.and(depth)?);
        }
        Ok(f)
    }

    fn and(&mut self, depth: usize) -> Result<Filter, QueryError> {
        let mut f = self.primary(depth)?;
        while self.keyword("and") {
            self.pos += 1;
            f = f.and(self.primary(depth)?);
        }
        Ok(f)
    }

    fn primary(&mut self, depth: usize) -> Result<Filter, QueryError> {
        if self.peek() == Some(&Tok::Open) {
            if depth >= MAX_DEPTH {
                return Err(self.err(format!("parentheses nested deeper than {MAX_DEPTH}")));
            }
            self.pos += 1;
            let f = self.or(depth + 1)?;
            if self.peek() != Some(&Tok::Close) {
                return Err(self.err("expected ')'"));
            }
            self.pos += 1;
            return Ok(f);
        }
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(self.err(format!("more than {MAX_TERMS} comparisons")));
        }
        let field = self.field()?;
        let op = match self.peek() {
            Some(Tok::Word(w)) => w.to_ascii_lowercase(),
            _ => return Err(self.err("expected eq, ne, lt or gt")),
        };
        let make: fn(Field, Value) -> Filter = match op.as_str() {
            "eq" => Filter::eq,
            "ne" => Filter::ne,
            "lt" => Filter::lt,
            "gt" => Filter::gt,
            _ => return Err(self.err(format!("unknown operator {op:?} (eq, ne, lt, gt)"))),
        };
        self.pos += 1;
        let value = self.value(&field)?;
        Ok(make(field, value))
    }

    fn field(&mut self) -> Result<Field, QueryError> {
        let Some(Tok::Word(w)) = self.peek() else {
            return Err(self.err("expected a field name"));
        };
        let f = parse_field(w).ok_or_else(|| {
            self.err(format!(
                "unknown field {w:?} (id, title, author, updated, published, content/<path>)"
            ))
        })?;
        self.pos += 1;
        Ok(f)
    }

    fn value(&mut self, field: &Field) -> Result<Value, QueryError> {
        let is_time = matches!(field, Field::Updated | Field::Published);
        let v = match self.peek() {
            Some(Tok::Str(s)) => Value::String(s.clone()),
            Some(Tok::Word(w)) => match w.to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ if is_time => Value::String(w.clone()),
                _ => match serde_json::from_str::<serde_json::Number>(w) {
                    Ok(n) => Value::Number(n),
                    Err(_) => return Err(self.err(format!("{w:?} is not a value"))),
                },
            },
            _ => return Err(self.err("expected a value")),
        };
        let v = if is_time {
            match &v {
                Value::String(s) => match s.parse::<Timestamp>() {
                    Ok(t) => Value::String(t.to_string()),
                    Err(e) => return Err(self.err(e.to_string())),
                },
                _ => return Err(self.err("updated and published compare with times")),
            }
        } else {
            v
        };
        self.pos += 1;
        Ok(v)
    }
}

fn parse_field(w: &str) -> Option<Field> {
    let (head, rest) = match w.split_once('/') {
        Some((h, r)) => (h, Some(r)),
        None => (w, None),
    };
    let head = head.to_ascii_lowercase();
    match (head.as_str(), rest) {
        ("id", None) => Some(Field::Id),
        ("title", None) => Some(Field::Title),
        ("author", None) => Some(Field::Author),
        ("updated", None) => Some(Field::Updated),
        ("published", None) => Some(Field::Published),
        ("content", None) => Some(Field::Content(Vec::new())),
        ("content", Some(path)) => {
            let segs: Vec<String> = path.split('/').map(str::to_owned).collect();
            if segs.iter().any(String::is_empty) {
                None
            } else {
                Some(Field::Content(segs))
            }
        }
        _ => None,
    }
}

/// Parses a `$filter` expression.
pub fn parse_filter(s: &str) -> Result<Filter, QueryError> {
    let toks = lex("$filter", s)?;
    let mut p = Parser {
        option: "$filter",
        toks: &toks,
        pos: 0,
        end: s.len(),
        terms: 0,
    };
    let f = p.or(0)?;
    if p.pos < toks.len() {
        return Err(p.err("unexpected text after the expression"));
    }
    Ok(f)
}

/// Parses an `$orderby` list: `(field, descending)` pairs, most significant first.
pub fn parse_orderby(s: &str) -> Result<Vec<(Field, bool)>, QueryError> {
    let toks = lex("$orderby", s)?;
    let mut p = Parser {
        option: "$orderby",
        toks: &toks,
        pos: 0,
        end: s.len(),
        terms: 0,
    };
    let mut out = Vec::new();
    loop {
        let f = p.field()?;
        let desc = if p.keyword("desc") {
            p.pos += 1;
            true
        } else {
            if p.keyword("asc") {
                p.pos += 1;
            }
            false
        };
        out.push((f, desc));
        if out.len() > 16 {
            return Err(p.err("more than 16 sort keys"));
        }
        match p.peek() {
            None => return Ok(out),
            Some(Tok::Comma) => p.pos += 1,
            Some(_) => return Err(p.err("expected ',' or the end")),
        }
    }
}

fn parse_count(option: &'static str, s: &str, max: usize) -> Result<usize, QueryError> {
    let t = s.trim();
    match t.parse::<usize>() {
        Ok(n) if n <= max => Ok(n),
        Ok(_) => Err(QueryError {
            option,
            position: 0,
            message: format!("at most {max}"),
        }),
        Err(_) => Err(QueryError {
            option,
            position: 0,
            message: format!(
                "{:?} is not a non-negative integer",
                t.chars().take(32).collect::<String>()
            ),
        }),
    }
}

/// Builds a [`Query`] from the raw values of `$filter`, `$orderby`, `$top` and `$skip`.
pub fn parse_query(
    filter: Option<&str>,
    orderby: Option<&str>,
    top: Option<&str>,
    skip: Option<&str>,
) -> Result<Query, QueryError> {
    let mut q = Query::new();
    if let Some(f) = filter.filter(|f| !f.trim().is_empty()) {
        q.filter = Some(parse_filter(f)?);
    }
    if let Some(o) = orderby.filter(|o| !o.trim().is_empty()) {
        q.order = parse_orderby(o)?;
    }
    if let Some(t) = top {
        q.top = Some(parse_count("$top", t, MAX_TOP)?);
    }
    if let Some(s) = skip {
        q.skip = parse_count("$skip", s, MAX_SKIP)?;
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn skip_and_top_are_bounded() {
        assert_eq!(
            parse_query(None, None, None, Some("100000")).unwrap().skip,
            MAX_SKIP
        );
        let e = parse_query(None, None, None, Some("100001")).unwrap_err();
        assert_eq!(e.option, "$skip");
        assert!(parse_query(None, None, None, Some("100000000")).is_err());
        assert!(parse_query(None, None, Some("10001"), None).is_err());
    }

    #[test]
    fn filters_parse_with_precedence() {
        let f = parse_filter("title eq 'a' or author eq 'b' and content/n gt 3").unwrap();
        assert_eq!(
            f,
            Filter::eq(Field::Title, json!("a")).or(Filter::eq(Field::Author, json!("b"))
                .and(Filter::gt(Field::content("n"), json!(3))))
        );
        let g = parse_filter("(title eq 'a' or author eq 'b') and content/n gt 3").unwrap();
        assert_eq!(
            g,
            Filter::eq(Field::Title, json!("a"))
                .or(Filter::eq(Field::Author, json!("b")))
                .and(Filter::gt(Field::content("n"), json!(3)))
        );
        assert_eq!(
            parse_filter("Title NE 'it''s'").unwrap(),
            Filter::ne(Field::Title, json!("it's"))
        );
        assert_eq!(
            parse_filter("content/done eq true and content/x eq null and content lt -1.5e2")
                .unwrap(),
            Filter::eq(Field::content("done"), json!(true))
                .and(Filter::eq(Field::content("x"), json!(null)))
                .and(Filter::lt(Field::Content(vec![]), json!(-150.0)))
        );
    }

    #[test]
    fn times_are_checked_and_normalised() {
        assert_eq!(
            parse_filter("updated gt 2026-01-01T01:00:00+01:00").unwrap(),
            Filter::gt(Field::Updated, json!("2026-01-01T00:00:00Z"))
        );
        assert_eq!(
            parse_filter("published lt '2026-01-01T00:00:00Z'").unwrap(),
            Filter::lt(Field::Published, json!("2026-01-01T00:00:00Z"))
        );
        assert!(parse_filter("updated gt 'yesterday'").is_err());
        assert!(parse_filter("updated gt 3").is_err());
    }

    #[test]
    fn bad_filters_are_refused_with_a_position() {
        for bad in [
            "",
            "title",
            "title eq",
            "title like 'a'",
            "nope eq 1",
            "content/ eq 1",
            "title eq 'a' and",
            "(title eq 'a'",
            "title eq 'a')",
            "title eq 'open",
            "title eq abc",
            "title eq 1 2",
            "title # 1",
            "title eq ,",
        ] {
            let e = parse_filter(bad).unwrap_err();
            assert!(e.position <= bad.len(), "{bad:?}: {e}");
        }
        let deep = format!("{}title eq 1{}", "(".repeat(40), ")".repeat(40));
        assert!(parse_filter(&deep).unwrap_err().message.contains("deeper"));
        let long = "title eq 1 or ".repeat(400) + "title eq 1";
        assert!(parse_filter(&long).is_err());
    }

    #[test]
    fn orderby_and_paging() {
        assert_eq!(
            parse_orderby("updated desc, title asc,content/n").unwrap(),
            vec![
                (Field::Updated, true),
                (Field::Title, false),
                (Field::content("n"), false)
            ]
        );
        for bad in ["", "title up", "title,", "x desc", "title desc desc"] {
            assert!(parse_orderby(bad).is_err(), "{bad:?}");
        }
        let q = parse_query(None, None, Some("5"), Some("10")).unwrap();
        assert_eq!((q.top, q.skip), (Some(5), 10));
        assert!(parse_query(None, None, Some("-1"), None).is_err());
        assert!(parse_query(None, None, Some("99999999"), None).is_err());
        assert!(parse_query(None, None, None, Some("x")).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = parse_filter(&s);
            let _ = parse_orderby(&s);
        }

        #[test]
        fn never_panics_on_near_misses(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "title", "eq", "ne", "lt", "gt", "and", "or", "(", ")", "'x'", "'", "1",
                    "-2.5", "true", "null", "content/a", "updated", "2026-01-01T00:00:00Z",
                    ",", "desc", "asc",
                ]),
                0..30,
            )
        ) {
            let s = parts.join(" ");
            let _ = parse_filter(&s);
            let _ = parse_orderby(&s);
        }
    }
}
