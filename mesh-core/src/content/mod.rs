//! Canonical JSON content.
//!
//! An entry's application data is a JSON value. mesh keeps it as canonical compact JSON text
//! (object keys sorted, no insignificant white space) in a shared buffer: cloning is a reference
//! count, equality is byte equality, and memory is the text's own length. Writing it out (to
//! the wire, to a store) copies the text as it is: it is neither copied first nor parsed again.
//!
//! ```
//! use mesh_core::content::JsonContent;
//! let a = JsonContent::parse(r#"{ "b": 1, "a": [true, null] }"#).unwrap();
//! assert_eq!(a.as_str(), r#"{"a":[true,null],"b":1}"#);
//! assert_eq!(a, JsonContent::parse(r#"{"a":[true,null],"b":1}"#).unwrap());
//! assert!(JsonContent::parse("{oops").is_err());
//! ```

use std::fmt;
use std::sync::Arc;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::{CoreError, Result};

mod canonical;

/// The largest content accepted, in bytes of canonical JSON (16 MiB).
pub const MAX_CONTENT_LEN: usize = 16 << 20;

/// A JSON value held as canonical compact text.
#[derive(Clone)]
pub struct JsonContent(Arc<RawValue>);

impl PartialEq for JsonContent {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for JsonContent {}

impl std::hash::Hash for JsonContent {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl JsonContent {
    /// The JSON `null` value.
    pub fn null() -> Self {
        JsonContent(Arc::from(RawValue::NULL.to_owned()))
    }

    /// Parses JSON text and canonicalizes it.
    pub fn parse(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)?;
        Self::from_value(&v)
    }

    /// Canonicalizes a JSON value.
    pub fn from_value(v: &Value) -> Result<Self> {
        // serde_json's own output: taken as it is, not parsed again.
        let raw = serde_json::value::to_raw_value(v)?;
        if raw.get().len() > MAX_CONTENT_LEN {
            return Err(CoreError::InvalidJson(format!(
                "content of {} bytes exceeds the limit of {MAX_CONTENT_LEN}",
                raw.get().len()
            )));
        }
        Ok(JsonContent(Arc::from(raw)))
    }

    /// Serializes any serde value as content.
    pub fn from_serialize<T: Serialize + ?Sized>(v: &T) -> Result<Self> {
        Self::from_value(&serde_json::to_value(v)?)
    }

    /// The canonical JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The content as a `serde_json::Value`.
    pub fn to_value(&self) -> Value {
        // Canonical text always parses.
        serde_json::from_str(self.as_str()).unwrap_or(Value::Null)
    }

    /// Deserializes the content into a typed value.
    pub fn decode<T: for<'de> Deserialize<'de>>(&self) -> Result<T> {
        Ok(serde_json::from_str(self.as_str())?)
    }

    /// Size of the canonical text in bytes.
    pub fn len(&self) -> usize {
        self.as_str().len()
    }

    /// Whether the canonical text is empty (never true: the smallest JSON is one byte).
    pub fn is_empty(&self) -> bool {
        self.as_str().is_empty()
    }
}

impl Default for JsonContent {
    fn default() -> Self {
        JsonContent::null()
    }
}

impl fmt::Display for JsonContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for JsonContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonContent({})", self.as_str())
    }
}

impl From<&Value> for JsonContent {
    fn from(v: &Value) -> Self {
        // Serializing a Value cannot fail; only the size limit can refuse it, and a Value built
        // in memory by the caller is theirs to size.
        JsonContent(Arc::from(
            serde_json::value::to_raw_value(v).unwrap_or_else(|_| RawValue::NULL.to_owned()),
        ))
    }
}

impl Serialize for JsonContent {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for JsonContent {
    /// Text that arrives canonical (as a device writes it) is kept as it came: from a
    /// serde_json deserializer the value's text is taken whole and, when [`canonical`]
    /// vouches for it, neither parsed into a tree nor written again. Other text, and values
    /// from other deserializers (serde's buffered content, say), are parsed and written in
    /// canonical form.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // serde_json answers this name with the value's text (see `RawValue`); any other
        // deserializer with the value itself.
        d.deserialize_newtype_struct(RAW_VALUE, ContentVisitor)
    }
}

/// The newtype name through which serde_json hands out a value's text (what `RawValue`'s
/// own `Deserialize` asks for). Were it ever to change, serde_json would hand out the value
/// instead, and content would only be parsed again: slower, never wrong.
const RAW_VALUE: &str = "$serde_json::private::RawValue";

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = JsonContent;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    /// serde_json's answer: a map of one entry holding the value's text, well-formed but
    /// not necessarily canonical.
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<JsonContent, A::Error> {
        let raw = Box::<RawValue>::deserialize(MapAccessDeserializer::new(map))?;
        JsonContent::from_raw(raw).map_err(serde::de::Error::custom)
    }

    /// Any other deserializer: the value itself.
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<JsonContent, D::Error> {
        let v = Value::deserialize(d)?;
        JsonContent::from_value(&v).map_err(serde::de::Error::custom)
    }
}

impl JsonContent {
    /// Content from well-formed JSON text: kept as it is when canonical, written again
    /// otherwise.
    fn from_raw(raw: Box<RawValue>) -> Result<Self> {
        let len = raw.get().len();
        if len <= MAX_CONTENT_LEN && canonical::is_canonical(raw.get()) {
            return Ok(JsonContent(Arc::from(raw)));
        }
        Self::parse(raw.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Canonical text is kept as it came; any other spelling of a value is written again,
    /// whichever way the content is read (serde_json text, a `Value`, serde's buffered
    /// content inside a tagged enum).
    #[test]
    fn content_reads_to_its_canonical_text_every_way() {
        #[derive(Deserialize)]
        #[serde(tag = "type")]
        enum Tagged {
            Note { content: JsonContent },
        }
        let canonical = r#"{"a":[1,{"x":"y\n"}],"b":"é"}"#;
        for text in [
            canonical,
            r#"{ "b": "\u00e9", "a": [1, {"x": "y\n"}] }"#,
            r#"{"b":"é","a":[1.0e0,{"x":"y\n"}]}"#,
        ] {
            let direct: JsonContent = serde_json::from_str(text).unwrap();
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            let from_value: JsonContent = serde_json::from_value(value).unwrap();
            let Tagged::Note { content: buffered } =
                serde_json::from_str(&format!(r#"{{"content":{text},"type":"Note"}}"#)).unwrap();
            if text.contains("1.0e0") {
                // A float stays a float: not the same value as the integer 1.
                assert_eq!(direct.as_str(), r#"{"a":[1.0,{"x":"y\n"}],"b":"é"}"#);
            } else {
                assert_eq!(direct.as_str(), canonical, "{text}");
            }
            assert_eq!(from_value, direct);
            assert_eq!(buffered, direct);
        }
    }

    /// Hostile content: nesting too deep for the check is refused by the parser (an error,
    /// not a crash), and content over the limit is refused however it is spelt.
    #[test]
    fn deep_or_oversized_content_is_refused() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(serde_json::from_str::<JsonContent>(&deep).is_err());
        let big = format!(r#""{}""#, "x".repeat(MAX_CONTENT_LEN));
        assert!(serde_json::from_str::<JsonContent>(&big).is_err());
        let fits = format!(r#""{}""#, "x".repeat(MAX_CONTENT_LEN - 2));
        assert_eq!(
            serde_json::from_str::<JsonContent>(&fits).unwrap().len(),
            MAX_CONTENT_LEN
        );
    }
}
