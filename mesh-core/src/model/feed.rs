//! Feeds and the keys that name them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::id::{FeedName, FolderId, UserId};
use crate::time::Timestamp;

/// Where a feed lives: in a user's mesh, or in a folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// A mesh-wide collection of one user (devices, the list of folders, news).
    Mesh(UserId),
    /// A collection inside a folder (members, mappings, news, application feeds).
    Folder(FolderId),
}

/// Names one feed of a replica: every collection — devices, folders, members, mappings, news
/// and application feeds — is a feed of entries, synced by the same engine.
///
/// The text form is `mesh:<user>/<feed>` or `folder:<folder>/<feed>`; feed names never hold a
/// `/`, so the form parses back unambiguously.
///
/// ```
/// use mesh_core::model::FeedKey;
/// let k = FeedKey::folder("f-1".parse().unwrap(), "todos".parse().unwrap());
/// assert_eq!(k.to_string(), "folder:f-1/todos");
/// assert_eq!(k.to_string().parse::<FeedKey>().unwrap(), k);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FeedKey {
    /// The feed's scope.
    pub scope: Scope,
    /// The feed's name within its scope.
    pub name: FeedName,
}

/// Well-known feed names.
pub mod names {
    /// A user's devices (mesh scope).
    pub const DEVICES: &str = "devices";
    /// The folders a user belongs to (mesh scope).
    pub const FOLDERS: &str = "folders";
    /// Activity (mesh and folder scope).
    pub const NEWS: &str = "news";
    /// A folder's members.
    pub const MEMBERS: &str = "members";
    /// A folder's device mappings.
    pub const MAPPINGS: &str = "mappings";
    /// A folder's application feeds (one entry per feed).
    pub const FEEDS: &str = "feeds";
    /// A folder's file entries.
    pub const FILES: &str = "files";
    /// A folder's own record (one entry, [`FOLDER_RECORD`]).
    pub const INFO: &str = "info";
    /// The id of the folder record in the `info` feed.
    pub const FOLDER_RECORD: &str = "folder";

    /// Names an application may not use for its own feeds.
    pub const RESERVED: &[&str] = &[DEVICES, FOLDERS, NEWS, MEMBERS, MAPPINGS, FEEDS, INFO];
}

impl Scope {
    /// What the text of every feed key of this scope starts with (`folder:<id>/` or
    /// `mesh:<user>/`). Ids may hold a `/`, so the keys of a scope whose id goes on after
    /// this one's with a `/` start with it too: compare parsed scopes, not only text.
    ///
    /// ```
    /// use mesh_core::model::{FeedKey, Scope};
    /// let scope = Scope::Folder("f1".parse().unwrap());
    /// assert_eq!(scope.key_prefix(), "folder:f1/");
    /// let other: FeedKey = "folder:f10/todos".parse().unwrap();
    /// assert!(!other.to_string().starts_with(&scope.key_prefix()));
    /// let nested: FeedKey = "folder:f1/x/todos".parse().unwrap();
    /// assert!(nested.to_string().starts_with(&scope.key_prefix()));
    /// assert_ne!(nested.scope, scope);
    /// ```
    pub fn key_prefix(&self) -> String {
        match self {
            Scope::Mesh(u) => format!("mesh:{u}/"),
            Scope::Folder(id) => format!("folder:{id}/"),
        }
    }
}

impl FeedKey {
    /// The folder whose `members` feed this is (`None` for any other feed). A store keeps
    /// the ids of such feeds' entries, which are their users' ids, in an index
    /// ([`Store::member_folders`](crate::store::Store::member_folders)).
    pub fn members_folder(&self) -> Option<&FolderId> {
        match &self.scope {
            Scope::Folder(f) if self.name.as_str() == names::MEMBERS => Some(f),
            _ => None,
        }
    }

    /// A feed in a folder.
    pub fn folder(folder: FolderId, name: FeedName) -> Self {
        FeedKey {
            scope: Scope::Folder(folder),
            name,
        }
    }

    /// A mesh-wide feed of a user.
    pub fn mesh(user: UserId, name: FeedName) -> Self {
        FeedKey {
            scope: Scope::Mesh(user),
            name,
        }
    }

    fn well_known(scope: Scope, name: &str) -> Self {
        FeedKey {
            scope,
            // Well-known names are valid by construction.
            name: FeedName::new(name).unwrap_or_else(|_| unreachable!("well-known feed name")),
        }
    }

    /// The devices feed of `user`'s mesh.
    pub fn devices(user: &UserId) -> Self {
        Self::well_known(Scope::Mesh(user.clone()), names::DEVICES)
    }

    /// The folders feed of `user`'s mesh.
    pub fn folders(user: &UserId) -> Self {
        Self::well_known(Scope::Mesh(user.clone()), names::FOLDERS)
    }

    /// The members feed of a folder.
    pub fn members(folder: &FolderId) -> Self {
        Self::well_known(Scope::Folder(folder.clone()), names::MEMBERS)
    }

    /// The mappings feed of a folder.
    pub fn mappings(folder: &FolderId) -> Self {
        Self::well_known(Scope::Folder(folder.clone()), names::MAPPINGS)
    }

    /// The feeds feed of a folder (which application feeds it holds).
    pub fn feeds(folder: &FolderId) -> Self {
        Self::well_known(Scope::Folder(folder.clone()), names::FEEDS)
    }

    /// The info feed of a folder (its own record).
    pub fn info(folder: &FolderId) -> Self {
        Self::well_known(Scope::Folder(folder.clone()), names::INFO)
    }

    /// The news feed of a folder.
    pub fn folder_news(folder: &FolderId) -> Self {
        Self::well_known(Scope::Folder(folder.clone()), names::NEWS)
    }

    /// The news feed of a user's mesh.
    pub fn mesh_news(user: &UserId) -> Self {
        Self::well_known(Scope::Mesh(user.clone()), names::NEWS)
    }

    /// The folder this feed belongs to, if any.
    pub fn folder_id(&self) -> Option<&FolderId> {
        match &self.scope {
            Scope::Folder(f) => Some(f),
            Scope::Mesh(_) => None,
        }
    }

    /// Whether the name is one the system manages rather than an application feed.
    pub fn is_system(&self) -> bool {
        names::RESERVED.contains(&self.name.as_str())
    }
}

impl fmt::Display for FeedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            Scope::Mesh(u) => write!(f, "mesh:{u}/{}", self.name),
            Scope::Folder(id) => write!(f, "folder:{id}/{}", self.name),
        }
    }
}

impl FromStr for FeedKey {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || CoreError::InvalidId {
            kind: "feed key",
            reason: format!("{s:?} is not mesh:<user>/<feed> or folder:<folder>/<feed>"),
        };
        let (head, name) = s.rsplit_once('/').ok_or_else(bad)?;
        let name = FeedName::new(name)?;
        let scope = if let Some(u) = head.strip_prefix("mesh:") {
            Scope::Mesh(u.parse()?)
        } else if let Some(id) = head.strip_prefix("folder:") {
            Scope::Folder(id.parse()?)
        } else {
            return Err(bad());
        };
        Ok(FeedKey { scope, name })
    }
}

/// What a folder's `feeds` feed says about one application feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedInfo {
    /// The feed's name.
    pub name: FeedName,
    /// A human-readable title.
    pub title: String,
    /// When it was created.
    pub created_at: Timestamp,
}
