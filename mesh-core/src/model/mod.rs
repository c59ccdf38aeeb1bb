//! The resource model (DESIGN §2).
//!
//! ```text
//! Mesh (one per user)
//!  ├─ devices      mesh:<user>/devices     Device
//!  ├─ folders      mesh:<user>/folders     Folder
//!  │   └─ Folder
//!  │       ├─ members    folder:<id>/members    Member (role, invitation state)
//!  │       ├─ feeds      folder:<id>/feeds      FeedInfo, one per application feed
//!  │       │   └─ folder:<id>/<feed>  Entry (title, JSON content, media, author, times, sync)
//!  │       ├─ mappings   folder:<id>/mappings   Mapping
//!  │       └─ news       folder:<id>/news       NewsItem
//!  └─ news         mesh:<user>/news        NewsItem
//! ```
//!
//! Every collection is a feed of [`Entry`] values with FeedSync metadata; the typed resources
//! ([`Device`], [`Folder`], [`Member`], [`Mapping`], [`NewsItem`]) are the JSON content of those
//! entries. JSON (serde) is the canonical form of every type.

mod entry;
mod feed;
mod file;
mod kind;
mod member;
mod mesh;
pub mod odata;
mod query;

pub use entry::{Entry, EntryData, EntryDraft, EntryVersion, MediaRef};
pub use feed::{names, FeedInfo, FeedKey, Scope};
pub use file::{FileKind, FileMeta, FilePath, MAX_NAME_LEN, MAX_PATH_LEN};
pub use kind::{AppName, CustomKind, FolderKind, MAX_KIND_LEN};
pub use member::{authorize, Action, InvitationState, Member, Role};
pub use mesh::{Device, Folder, Mapping, NewsItem, NewsKind};
pub use query::{Field, Filter, Query, Selection};
