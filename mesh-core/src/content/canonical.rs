//! Recognising JSON text that is already canonical, so that it can be kept as it came.
//!
//! Canonical text is what serde_json writes for a [`serde_json::Value`]: compact, object keys
//! in byte order without duplicates, strings escaped only where JSON requires it. The check
//! here is deliberately narrower than that: it accepts only text it can vouch for byte by
//! byte, and says "no" to anything it is unsure of (floating-point numbers, integers of 19
//! digits or more, `\u` escapes, keys with escapes, nesting deeper than [`MAX_DEPTH`]). A "no"
//! costs only speed: such text is parsed and written again. A "yes" must never be wrong,
//! which the property tests of this module check against serde_json itself.

/// The deepest nesting the check follows (serde_json's own parser stops at 128).
pub(crate) const MAX_DEPTH: usize = 100;

/// Whether `text` is one JSON value, exactly as serde_json would write it.
pub(crate) fn is_canonical(text: &str) -> bool {
    let mut r = Reader {
        b: text.as_bytes(),
        at: 0,
    };
    r.value(0) && r.at == r.b.len()
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.b[self.at..].starts_with(word) {
            self.at += word.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'{') => depth < MAX_DEPTH && self.object(depth + 1),
            Some(b'[') => depth < MAX_DEPTH && self.array(depth + 1),
            Some(b'"') => self.string(true).is_some(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.integer(),
            _ => false,
        }
    }

    fn object(&mut self, depth: usize) -> bool {
        self.at += 1; // '{'
        if self.eat(b'}') {
            return true;
        }
        let mut last: Option<&'a [u8]> = None;
        loop {
            // Keys are compared as they are written: only keys without escapes, whose
            // bytes are their value's.
            let Some(key) = self.string(false) else {
                return false;
            };
            if last.is_some_and(|l| l >= key) {
                return false;
            }
            last = Some(key);
            if !self.eat(b':') || !self.value(depth) {
                return false;
            }
            if self.eat(b'}') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn array(&mut self, depth: usize) -> bool {
        self.at += 1; // '['
        if self.eat(b']') {
            return true;
        }
        loop {
            if !self.value(depth) {
                return false;
            }
            if self.eat(b']') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    /// A string's bytes between its quotes; `escapes` allows the escapes serde_json writes
    /// for `"`, `\` and the five named control characters (no `\u`, no `\/`).
    fn string(&mut self, escapes: bool) -> Option<&'a [u8]> {
        let b = self.b;
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        loop {
            let c = self.peek()?;
            self.at += 1;
            match c {
                b'"' => return Some(&b[start..self.at - 1]),
                b'\\' if escapes => match self.peek()? {
                    b'"' | b'\\' | b'n' | b't' | b'r' | b'b' | b'f' => self.at += 1,
                    _ => return None,
                },
                0..=0x1f | b'\\' => return None,
                _ => {}
            }
        }
    }

    /// An integer serde_json keeps as one and writes back alike: no sign but `-`, no leading
    /// zero, not `-0`, at most 18 digits (so it fits both `i64` and `u64`).
    fn integer(&mut self) -> bool {
        let negative = self.eat(b'-');
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        let digits = &self.b[start..self.at];
        let well_formed = match digits {
            [] => false,
            [b'0'] => !negative,
            [b'0', ..] => false,
            _ => digits.len() <= 18,
        };
        well_formed && !matches!(self.peek(), Some(b'.' | b'e' | b'E'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// What serde_json writes for the value `text` holds.
    fn rewritten(text: &str) -> Option<String> {
        serde_json::from_str::<Value>(text)
            .ok()
            .map(|v| serde_json::to_string(&v).unwrap())
    }

    #[test]
    fn canonical_text_is_recognised() {
        for t in [
            "null",
            "true",
            "0",
            "-12",
            "123456789012345678",
            r#""""#,
            "\"a\\\"b\\\\c\\nd\\te\\rf\\bg\\fh é 😀 \u{7f}\"",
            "[]",
            "{}",
            r#"{"a":[1,{"b":null}],"b":"x","ba":false}"#,
        ] {
            assert!(is_canonical(t), "{t}");
            assert_eq!(rewritten(t).as_deref(), Some(t));
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for t in [
            "",
            " null",
            "null ",
            "{ }",
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,}"#,
            "[1,]",
            "[1 ,2]",
            "-0",
            "01",
            "1.0",
            "1e3",
            "1234567890123456789",
            r#""\u0041""#,
            r#""\/""#,
            r#"{"\n":1}"#,
            "tru",
            "nulll",
            "[",
            r#""open"#,
            "\"tab\there\"",
        ] {
            assert!(!is_canonical(t), "{t:?}");
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(!is_canonical(&deep));
        let shallow = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(is_canonical(&shallow));
    }

    /// JSON values, mostly of the kinds devices write (small integers, plain strings and
    /// keys), some with what the check must refuse (floats, long integers, characters
    /// written as `\u` escapes, keys with escapes).
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            3 => Just(Value::Null),
            3 => any::<bool>().prop_map(Value::Bool),
            6 => (-1000i64..1000).prop_map(Value::from),
            6 => "[a-z é😀\"\\\\\n\t/]{0,8}".prop_map(Value::String),
            1 => any::<i64>().prop_map(Value::from),
            1 => any::<u64>().prop_map(Value::from),
            1 => any::<f64>().prop_map(Value::from),
            1 => ".{0,12}".prop_map(Value::String),
        ];
        let key = prop_oneof![8 => "[a-d]{0,2}", 1 => "[a-d\u{1}\"]{0,3}"];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// Text spelling `v` in other ways serde_json reads the same: keys in the order given,
    /// white space, `\u` escapes, numbers in other forms.
    fn respelled(v: &Value, seed: &mut u64) -> String {
        fn roll(seed: &mut u64, n: u64) -> u64 {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed % n
        }
        match v {
            Value::Object(m) => {
                let mut kv: Vec<_> = m.iter().collect();
                if roll(seed, 2) == 0 {
                    kv.reverse();
                }
                let body: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| {
                        let k = serde_json::to_string(k).unwrap();
                        format!("{k}:{}", respelled(v, seed))
                    })
                    .collect();
                let sep = if roll(seed, 4) == 0 { ", " } else { "," };
                format!("{{{}}}", body.join(sep))
            }
            Value::Array(a) => {
                let body: Vec<String> = a.iter().map(|x| respelled(x, seed)).collect();
                format!("[{}]", body.join(","))
            }
            Value::String(s) if roll(seed, 4) == 0 => {
                let mut out = String::from("\"");
                for c in s.chars() {
                    match c {
                        'a' => out.push_str("\\u0061"),
                        '/' => out.push_str("\\/"),
                        _ => {
                            let one = serde_json::to_string(&c.to_string()).unwrap();
                            out.push_str(&one[1..one.len() - 1]);
                        }
                    }
                }
                out.push('"');
                out
            }
            Value::Number(n) if roll(seed, 4) == 0 && n.is_i64() => format!("{n}.0"),
            Value::Number(n) if roll(seed, 4) == 0 && n.as_i64() == Some(0) => "-0".into(),
            _ => serde_json::to_string(v).unwrap(),
        }
    }

    /// Whether the check should take serde_json's text of `v` (see the test below).
    fn plain(v: &Value) -> bool {
        let u_escaped = |s: &str| {
            s.chars()
                .any(|c| c < ' ' && !matches!(c, '\n' | '\t' | '\r' | '\u{8}' | '\u{c}'))
        };
        match v {
            Value::Number(n) => {
                n.is_i64() && n.to_string().trim_start_matches('-').len() <= 18
                    || n.is_u64() && n.to_string().len() <= 18
            }
            Value::String(s) => !u_escaped(s),
            Value::Array(a) => a.iter().all(plain),
            Value::Object(m) => m
                .iter()
                .all(|(k, v)| !k.contains(|c: char| c < ' ' || c == '"' || c == '\\') && plain(v)),
            Value::Null | Value::Bool(_) => true,
        }
    }

    proptest! {
        /// The one rule that must hold: text taken as canonical is exactly what serde_json
        /// writes for its value.
        #[test]
        fn text_taken_as_canonical_is_what_serde_json_writes(v in json(), seed in 1u64..) {
            let mut seed = seed;
            for text in [
                serde_json::to_string(&v).unwrap(),
                serde_json::to_string_pretty(&v).unwrap(),
                respelled(&v, &mut seed),
                respelled(&v, &mut seed),
            ] {
                if is_canonical(&text) {
                    let again = rewritten(&text);
                    prop_assert_eq!(again.as_deref(), Some(text.as_str()));
                }
            }
        }

        /// And the check is not vacuous: serde_json's own text of values without floats,
        /// integers of 19 digits or more, characters it writes as `\u` escapes, or keys it
        /// escapes at all, is taken.
        #[test]
        fn serde_json_text_of_plain_values_is_taken(v in json()) {
            let text = serde_json::to_string(&v).unwrap();
            if plain(&v) {
                prop_assert!(is_canonical(&text), "{}", text);
            }
        }
    }
}
