//! Deleting a folder revokes it: once its folder record is a tombstone, the guard lets nobody
//! write into it and its members read only its `members` and `info` feeds (which tell their
//! devices that it was deleted), and the hub purges every other feed of it from its store. The
//! folder's id stays reserved: its `members` and `info` feeds remain, so nobody can create a
//! folder under the same id.

use mesh_core::id::FolderId;
use mesh_core::model::{names, FeedKey, Scope};
use mesh_core::replica::Replica;
use mesh_core::store::Store;
use mesh_core::sync::guard;
use mesh_core::CoreError;
use mesh_store::{AnyStore, BlobStore};

/// Purges the feeds of `folder` if it was deleted (a no-op otherwise); returns how many
/// entries were removed. Runs under the folder's write lock, right after the write that
/// deleted it.
pub(crate) fn if_deleted(
    r: &mut Replica<AnyStore>,
    blobs: &BlobStore,
    folder: &FolderId,
) -> Result<u64, CoreError> {
    if !guard::folder_deleted(r.store(), folder)? {
        return Ok(0);
    }
    let doomed: Vec<FeedKey> = r
        .store()
        .scope_feeds(&Scope::Folder(folder.clone()))?
        .into_iter()
        .map(|h| h.feed)
        .filter(|f| !matches!(f.name.as_str(), names::MEMBERS | names::INFO))
        .collect();
    let mut purged = 0;
    for feed in &doomed {
        purged += r.store_mut().purge_feed(feed)?;
    }
    // Its files: the objects no other folder claims (on PostgreSQL through the connection
    // this request already holds).
    let objects = blobs
        .release_folder_in(r.store(), folder)
        .map_err(|e| CoreError::Store(e.to_string()))?;
    if !doomed.is_empty() || objects > 0 {
        tracing::info!(
            %folder,
            feeds = doomed.len(),
            entries = purged,
            objects,
            "deleted folder purged"
        );
    }
    Ok(purged)
}
