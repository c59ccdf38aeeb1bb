//! What a folder holds: [`FolderKind`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{CoreError, Result};

/// The longest folder kind accepted, in bytes (`app/` included).
pub const MAX_KIND_LEN: usize = 128;

const FILES: &str = "files";
const APP_PREFIX: &str = "app/";

/// What a folder holds, written as one short string on the wire (`"files"`, `"app/todo"`,
/// `"acme/ledger"`), so a [`Folder`](crate::model::Folder) record keeps its JSON shape.
///
/// A kind is one or more `/`-separated segments of ASCII letters, digits, `-`, `_` and `.`,
/// at most [`MAX_KIND_LEN`] bytes. The well-known kinds have variants of their own; any
/// other valid kind is [`FolderKind::Custom`]. Every kind prints as the text it was parsed
/// from, and parses back to the same value.
///
/// ```
/// use mesh_core::model::FolderKind;
/// let todo = FolderKind::app("todo").unwrap();
/// assert_eq!(todo.to_string(), "app/todo");
/// assert_eq!("app/todo".parse::<FolderKind>().unwrap(), todo);
/// assert_eq!("files".parse::<FolderKind>().unwrap(), FolderKind::Files);
/// assert!(matches!("acme/ledger".parse().unwrap(), FolderKind::Custom(_)));
/// assert!("app/".parse::<FolderKind>().is_err());
/// assert!("my files".parse::<FolderKind>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FolderKind {
    /// `files`: a tree of files and directories, which devices can map onto a directory.
    Files,
    /// `app/<name>`: the data of the application `<name>`.
    App(AppName),
    /// Any other valid kind.
    Custom(CustomKind),
}

impl FolderKind {
    /// `app/<name>`, for an application's data. `name` may itself hold `/` (`app/acme/notes`).
    pub fn app(name: &str) -> Result<Self> {
        Ok(FolderKind::App(AppName::new(name)?))
    }

    /// The kind as text, as it is written on the wire.
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        match self {
            FolderKind::Files => FILES.into(),
            FolderKind::App(name) => format!("{APP_PREFIX}{}", name.as_str()).into(),
            FolderKind::Custom(kind) => kind.as_str().into(),
        }
    }
}

/// The name of an application in a [`FolderKind::App`] (the text after `app/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppName(Box<str>);

impl AppName {
    /// Checks `name` (segments of `[A-Za-z0-9._-]` separated by `/`) and wraps it.
    pub fn new(name: &str) -> Result<Self> {
        check(name, APP_PREFIX.len())?;
        Ok(AppName(name.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A folder kind that is neither `files` nor `app/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomKind(Box<str>);

impl CustomKind {
    /// Checks `kind` and wraps it; the well-known kinds (`files`, `app/…`) are refused here,
    /// so that each kind has one value (parse them as [`FolderKind`]).
    pub fn new(kind: &str) -> Result<Self> {
        check(kind, 0)?;
        if kind == FILES || kind.starts_with(APP_PREFIX) {
            return Err(invalid(format!(
                "{kind:?} is a well-known kind, not a custom one"
            )));
        }
        Ok(CustomKind(kind.into()))
    }

    /// The kind as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn invalid(reason: String) -> CoreError {
    CoreError::InvalidId {
        kind: "folder kind",
        reason,
    }
}

/// Checks the segments of a kind; `prefix` bytes (`app/`) come before `s` on the wire.
fn check(s: &str, prefix: usize) -> Result<()> {
    if prefix + s.len() > MAX_KIND_LEN {
        return Err(invalid(format!(
            "{} bytes is longer than {MAX_KIND_LEN}",
            prefix + s.len()
        )));
    }
    if s.split('/').any(str::is_empty) {
        return Err(invalid(format!(
            "{s:?} has an empty segment (kinds are like \"files\" or \"app/<name>\")"
        )));
    }
    if let Some(c) = s
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')))
    {
        return Err(invalid(format!(
            "{c:?} is not allowed (ASCII letters, digits, '-', '_', '.' and '/' are)"
        )));
    }
    Ok(())
}

impl FromStr for FolderKind {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self> {
        if s == FILES {
            Ok(FolderKind::Files)
        } else if let Some(name) = s.strip_prefix(APP_PREFIX) {
            FolderKind::app(name)
        } else {
            Ok(FolderKind::Custom(CustomKind::new(s)?))
        }
    }
}

impl TryFrom<&str> for FolderKind {
    type Error = CoreError;
    fn try_from(s: &str) -> Result<Self> {
        s.parse()
    }
}

impl fmt::Display for FolderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl Serialize for FolderKind {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}

impl<'de> Deserialize<'de> for FolderKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn well_known_kinds_have_their_variants() {
        assert_eq!("files".parse::<FolderKind>().unwrap(), FolderKind::Files);
        let app = "app/acme/notes".parse::<FolderKind>().unwrap();
        assert_eq!(app, FolderKind::app("acme/notes").unwrap());
        assert!(CustomKind::new("files").is_err());
        assert!(CustomKind::new("app/x").is_err());
    }

    #[test]
    fn bad_kinds_are_refused_with_a_typed_error() {
        let long = "a".repeat(MAX_KIND_LEN + 1);
        let too_long_app = format!("app/{}", "a".repeat(MAX_KIND_LEN - 3));
        for bad in [
            "",
            "app/",
            "/x",
            "x/",
            "a//b",
            "my files",
            "x\n",
            "é",
            &long,
            &too_long_app,
        ] {
            let e = bad.parse::<FolderKind>().unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::InvalidId, "{bad:?}");
        }
        assert!(matches!("app".parse().unwrap(), FolderKind::Custom(_)));
        assert!(serde_json::from_str::<FolderKind>("\"a b\"").is_err());
    }

    proptest! {
        #[test]
        fn every_kind_round_trips_as_its_own_text(s in "[a-zA-Z0-9._/-]{0,140}") {
            match s.parse::<FolderKind>() {
                Ok(k) => {
                    prop_assert_eq!(k.to_string(), s.clone());
                    let json = serde_json::to_string(&k).unwrap();
                    prop_assert_eq!(&json, &serde_json::to_string(&s).unwrap());
                    prop_assert_eq!(serde_json::from_str::<FolderKind>(&json).unwrap(), k);
                }
                Err(e) => prop_assert_eq!(e.code(), crate::ErrorCode::InvalidId),
            }
        }
    }
}
