//! Everything an application needs, in one import: `use mesh_client::prelude::*;`.
//!
//! The client, its builder and configuration, the transports, the events and errors, and the
//! `mesh-core` types its methods take and return (ids, drafts, queries, roles, entries,
//! folders…), so that an application depends on `mesh-client` alone.

pub use crate::error::{ClientError, ErrorKind, SyncError};
pub use crate::peer::{PeerConfig, PeerCredentials, PeerListener, PeerTransport, PeerTrust};
pub use crate::store::{Durability, StoreConfig};
pub use crate::sync::{
    ChangeKind, ChangeSource, Event, MappingEvent, RemoteStatus, SyncOptions, TransferDirection,
};
pub use crate::transport::{HttpConfig, HttpTransport, InProcessHub, Transport, TransportError};
pub use crate::{BatchItem, BlobUsage, MeshClient, MeshClientBuilder};
pub use mesh_core::id::{DeviceId, EntryId, FeedName, FolderId, RemoteId, UserId};
pub use mesh_core::model::{
    Device, Entry, EntryDraft, FeedInfo, FeedKey, Field, Filter, Folder, FolderKind,
    InvitationState, Mapping, MediaRef, Member, NewsItem, NewsKind, Query, Role, Scope,
};
pub use mesh_core::replica::Resolution;
pub use mesh_core::sync::SyncReport;
pub use mesh_core::time::Timestamp;
/// JSON content for [`EntryDraft`]s.
pub use serde_json::{json, Value};
