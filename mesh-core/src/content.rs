//! Canonical JSON content.
//!
//! An entry's application data is a JSON value. mesh keeps it as canonical compact JSON text
//! (object keys sorted, no insignificant white space) in a shared buffer: cloning is a reference
//! count, equality is byte equality, and memory is the text's own length.
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

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::{CoreError, Result};

/// The largest content accepted, in bytes of canonical JSON (16 MiB).
pub const MAX_CONTENT_LEN: usize = 16 << 20;

/// A JSON value held as canonical compact text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JsonContent(Arc<str>);

impl JsonContent {
    /// The JSON `null` value.
    pub fn null() -> Self {
        JsonContent(Arc::from("null"))
    }

    /// Parses JSON text and canonicalizes it.
    pub fn parse(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)?;
        Self::from_value(&v)
    }

    /// Canonicalizes a JSON value.
    pub fn from_value(v: &Value) -> Result<Self> {
        let text = serde_json::to_string(v)?;
        if text.len() > MAX_CONTENT_LEN {
            return Err(CoreError::InvalidJson(format!(
                "content of {} bytes exceeds the limit of {MAX_CONTENT_LEN}",
                text.len()
            )));
        }
        Ok(JsonContent(Arc::from(text)))
    }

    /// Serializes any serde value as content.
    pub fn from_serialize<T: Serialize + ?Sized>(v: &T) -> Result<Self> {
        Self::from_value(&serde_json::to_value(v)?)
    }

    /// The canonical JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The content as a `serde_json::Value`.
    pub fn to_value(&self) -> Value {
        // Canonical text always parses.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    /// Deserializes the content into a typed value.
    pub fn decode<T: for<'de> Deserialize<'de>>(&self) -> Result<T> {
        Ok(serde_json::from_str(&self.0)?)
    }

    /// Size of the canonical text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the canonical text is empty (never true: the smallest JSON is one byte).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Default for JsonContent {
    fn default() -> Self {
        JsonContent::null()
    }
}

impl fmt::Display for JsonContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for JsonContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonContent({})", &*self.0)
    }
}

impl From<&Value> for JsonContent {
    fn from(v: &Value) -> Self {
        // Serializing a Value cannot fail; only the size limit can refuse it, and a Value built
        // in memory by the caller is theirs to size.
        JsonContent(Arc::from(
            serde_json::to_string(v).unwrap_or_else(|_| "null".into()),
        ))
    }
}

impl Serialize for JsonContent {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match RawValue::from_string(self.0.to_string()) {
            Ok(raw) => raw.serialize(s),
            Err(e) => Err(serde::ser::Error::custom(e)),
        }
    }
}

impl<'de> Deserialize<'de> for JsonContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        JsonContent::from_value(&v).map_err(serde::de::Error::custom)
    }
}
