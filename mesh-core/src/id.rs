//! Typed identifiers.
//!
//! Every id in mesh is a short, immutable string wrapped in its own type, so that a
//! [`FolderId`] can never be passed where an [`EntryId`] is expected. Ids are cheap to clone
//! (they share one allocation), compare by content, and serialize as plain JSON strings.
//!
//! An id is 1 to 256 bytes of UTF-8 without control, bidirectional or zero-width characters.
//! The core never invents ids:
//! the caller (normally `mesh-client`) generates them and passes them in.
//!
//! ```
//! use mesh_core::id::{DeviceId, EntryId};
//! let device: DeviceId = "laptop-7f3a".parse().unwrap();
//! assert_eq!(device.as_str(), "laptop-7f3a");
//! assert!(EntryId::new("").is_err());
//! ```

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{CoreError, Result};

/// The longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 256;

pub(crate) fn check_id(kind: &'static str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(CoreError::InvalidId {
            kind,
            reason: "must not be empty".into(),
        });
    }
    if s.len() > MAX_ID_LEN {
        return Err(CoreError::InvalidId {
            kind,
            reason: format!("{} bytes is longer than {MAX_ID_LEN}", s.len()),
        });
    }
    if s.chars().any(char::is_control) {
        return Err(CoreError::InvalidId {
            kind,
            reason: "must not contain control characters".into(),
        });
    }
    if let Some(c) = s.chars().find(|&c| is_invisible_format(c)) {
        return Err(CoreError::InvalidId {
            kind,
            reason: format!(
                "must not contain bidirectional or zero-width characters (U+{:04X})",
                c as u32
            ),
        });
    }
    Ok(())
}

/// Characters that change how an id is displayed without being seen: bidirectional controls
/// (which can make a name read in another order), zero-width characters (which make
/// two ids that look equal differ) and the other invisible format characters. Two users must
/// never be able to hold ids that look the same.
pub(crate) fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'               // soft hyphen
            | '\u{061C}'         // Arabic letter mark
            | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
            | '\u{180E}'         // Mongolian vowel separator
            | '\u{200B}'..='\u{200F}' // zero-width space/non-joiner/joiner, LRM, RLM
            | '\u{202A}'..='\u{202E}' // LRE, RLE, PDF, LRO, RLO
            | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
            | '\u{2066}'..='\u{206F}' // LRI, RLI, FSI, PDI, deprecated format characters
            | '\u{FEFF}'         // zero-width no-break space (BOM)
            | '\u{FFF9}'..='\u{FFFB}' // interlinear annotation
            | '\u{E0000}'..='\u{E007F}' // tags
    )
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Checks `s` and wraps it.
            pub fn new(s: impl AsRef<str>) -> Result<Self> {
                let s = s.as_ref();
                check_id($kind, s)?;
                Ok($name(Arc::from(s)))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl FromStr for $name {
            type Err = CoreError;
            fn from_str(s: &str) -> Result<Self> {
                $name::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = CoreError;
            fn try_from(s: &str) -> Result<Self> {
                $name::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = CoreError;
            fn try_from(s: String) -> Result<Self> {
                check_id($kind, &s)?;
                Ok($name(Arc::from(s)))
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::new(&*s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A device (a FeedSync *endpoint*): the `by` of every history item it writes.
    /// Two devices never share an id.
    DeviceId,
    "device id"
);
string_id!(
    /// A user account: the owner of a mesh, the author of entries, a folder member.
    UserId,
    "user id"
);
string_id!(
    /// A folder ("mesh object"): the unit of sharing and of device mapping.
    FolderId,
    "folder id"
);
string_id!(
    /// The sync id of an entry, unique within its feed and immutable.
    EntryId,
    "entry id"
);
string_id!(
    /// A replica (a device's store or a hub): stamps change-log records so that a peer is
    /// never sent back what it just sent.
    ReplicaId,
    "replica id"
);
string_id!(
    /// The name a client gives one of its remotes (the hub, a peer device); sync cursors are
    /// kept per remote.
    RemoteId,
    "remote id"
);

/// What separates a new folder id's own name from the user who founded it.
pub const FOUNDER_SEPARATOR: char = '@';

impl FolderId {
    /// The id of a new folder `founder` creates: `<name>@<founder>`. A replica serving several
    /// users accepts a new folder only under an id that names the user founding it, so that
    /// nobody can learn whether a folder of someone else exists by trying to create it: an id
    /// that names someone else is refused whether or not that folder exists. `name` (normally
    /// random) must not be empty nor contain `@`; the whole id is at most [`MAX_ID_LEN`]
    /// bytes.
    ///
    /// ```
    /// use mesh_core::id::{FolderId, UserId};
    /// let ann: UserId = "ann@example.com".parse().unwrap();
    /// let f = FolderId::founded_by("3f9a", &ann).unwrap();
    /// assert_eq!(f.as_str(), "3f9a@ann@example.com");
    /// assert_eq!(f.founder(), Some("ann@example.com"));
    /// assert!(FolderId::founded_by("a@b", &ann).is_err());
    /// ```
    pub fn founded_by(name: &str, founder: &UserId) -> Result<FolderId> {
        if name.is_empty() || name.contains(FOUNDER_SEPARATOR) {
            return Err(CoreError::InvalidId {
                kind: "folder id",
                reason: format!(
                    "a folder's own name must be non-empty and without {FOUNDER_SEPARATOR:?}"
                ),
            });
        }
        FolderId::new(format!("{name}{FOUNDER_SEPARATOR}{founder}"))
    }

    /// The user this id names as its founder: what follows its first `@`, when both sides of
    /// it are non-empty. Ids of folders founded before ids named their founders name none.
    pub fn founder(&self) -> Option<&str> {
        match self.0.split_once(FOUNDER_SEPARATOR) {
            Some((name, founder)) if !name.is_empty() && !founder.is_empty() => Some(founder),
            _ => None,
        }
    }

    /// Whether this id names `user` as its founder.
    pub fn is_founded_by(&self, user: &UserId) -> bool {
        self.founder() == Some(user.as_str())
    }
}

/// The name of a feed inside a folder, such as `todos` or `files`.
///
/// Feed names are 1 to 64 characters of ASCII letters, digits, `-`, `_` and `.`, so that they
/// can appear in URL paths unescaped.
///
/// ```
/// use mesh_core::id::FeedName;
/// assert!(FeedName::new("todos").is_ok());
/// assert!(FeedName::new("a/b").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FeedName(Arc<str>);

impl FeedName {
    /// Checks `s` and wraps it.
    pub fn new(s: impl AsRef<str>) -> Result<Self> {
        let s = s.as_ref();
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s != "."
            && s != "..";
        if ok {
            Ok(FeedName(Arc::from(s)))
        } else {
            Err(CoreError::InvalidId {
                kind: "feed name",
                reason: format!(
                    "{s:?} is not 1-64 characters of ASCII letters, digits, '-', '_' and '.'"
                ),
            })
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FeedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FeedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FeedName({:?})", &*self.0)
    }
}

impl FromStr for FeedName {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        FeedName::new(s)
    }
}

impl Serialize for FeedName {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for FeedName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        FeedName::new(&*s).map_err(serde::de::Error::custom)
    }
}
