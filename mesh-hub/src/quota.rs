//! Per-user quotas: how many folders one user may own.
//!
//! A folder is created by the first write to its members feed, through the REST API or a sync
//! push; both check the quota in the same step as the write (under the replica's lock, and
//! with PostgreSQL under the database's lock on the user's folders), so two concurrent
//! creations cannot both slip under it, in one process or several.

use axum::http::StatusCode;
use mesh_core::id::{FolderId, UserId};
use mesh_core::model::{FeedKey, Role};
use mesh_core::replica::Replica;
use mesh_core::store::Store;
use mesh_core::sync::guard;
use mesh_core::CoreError;
use mesh_store::AnyStore as ClientStore;

use crate::error::ApiError;

/// What one user may hold on the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quotas {
    /// The most folders one user may own (0: no limit). Default 1000.
    pub max_folders_per_user: u32,
    /// The most bytes of files (blob objects, each counted once) the folders one user owns
    /// may hold (0: no limit). Default 10 GiB. A folder counts in full against each of its
    /// owners.
    pub max_bytes_per_user: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            max_folders_per_user: 1000,
            max_bytes_per_user: 10 << 30,
        }
    }
}

/// A quota that a request would exceed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// The user owns as many folders as they may.
    #[error("{user} owns {owned} folders, the most a user may own")]
    Folders {
        /// The user.
        user: UserId,
        /// How many they own.
        owned: u32,
    },
    /// The folders the user owns would hold more bytes than they may.
    #[error("{user}'s folders hold {used} bytes; {incoming} more would pass the limit of {limit}")]
    Bytes {
        /// The owner whose quota it is.
        user: UserId,
        /// What their folders hold now.
        used: u64,
        /// What the upload would add.
        incoming: u64,
        /// Their limit.
        limit: u64,
    },
}

impl QuotaError {
    /// The stable code of the error body (`quota_exceeded`).
    pub fn code(&self) -> &'static str {
        "quota_exceeded"
    }
}

impl From<QuotaError> for ApiError {
    fn from(e: QuotaError) -> Self {
        // 403: retrying does not help; the user must delete something or be given more.
        ApiError::new(StatusCode::FORBIDDEN, e.code(), e.to_string())
    }
}

/// The folders `user` owns (is an active owner of).
pub(crate) fn owned_folders(
    r: &Replica<ClientStore>,
    user: &UserId,
) -> Result<Vec<FolderId>, CoreError> {
    let mut owned = Vec::new();
    for f in r.store().member_folders(user)? {
        if guard::membership(r.store(), &f, user)?.and_then(|m| m.effective_role())
            == Some(Role::Owner)
        {
            owned.push(f);
        }
    }
    Ok(owned)
}

/// The active owners of `folder` and, for each, the folders they own.
pub(crate) fn owners_and_folders(
    r: &Replica<ClientStore>,
    folder: &FolderId,
) -> Result<Vec<(UserId, Vec<FolderId>)>, CoreError> {
    let mut out = Vec::new();
    let mut after = None;
    // Bounded by the folder's member records, read in pages.
    loop {
        let page = r
            .store()
            .list(&FeedKey::members(folder), after.as_ref(), 1000)?;
        for e in &page {
            if e.is_deleted() {
                continue;
            }
            let Ok(m) = e.content.content.decode::<mesh_core::model::Member>() else {
                continue;
            };
            if m.effective_role() == Some(Role::Owner) {
                let folders = owned_folders(r, &m.user)?;
                out.push((m.user, folders));
            }
        }
        match page.last() {
            Some(last) if page.len() == 1000 => after = Some(last.sync.id.clone()),
            _ => break,
        }
    }
    Ok(out)
}

/// Whether `folder` exists (its members feed has an entry).
pub(crate) fn folder_exists(
    r: &Replica<ClientStore>,
    folder: &FolderId,
) -> Result<bool, CoreError> {
    Ok(!r
        .store()
        .list(&FeedKey::members(folder), None, 1)?
        .is_empty())
}

/// Checks that `user` may create `folder`: nothing to check when it exists already. With
/// PostgreSQL the check first takes the database-wide lock on `user`'s folders, held until
/// the request's store is dropped (after its commit), so that two processes creating two of
/// the user's folders at once cannot both pass the check; in one process the replica's lock
/// does the same for the caller that checks and writes in one run.
pub(crate) fn check_new_folder(
    r: &mut Replica<ClientStore>,
    quotas: &Quotas,
    user: &UserId,
    folder: &FolderId,
) -> Result<Result<(), QuotaError>, CoreError> {
    if quotas.max_folders_per_user == 0 || folder_exists(r, folder)? {
        return Ok(Ok(()));
    }
    if let ClientStore::Postgres(s) = r.store_mut() {
        s.lock_scope(&format!("quota:folders:{user}"))?;
    }
    let owned = u32::try_from(owned_folders(r, user)?.len()).unwrap_or(u32::MAX);
    if owned >= quotas.max_folders_per_user {
        return Ok(Err(QuotaError::Folders {
            user: user.clone(),
            owned,
        }));
    }
    Ok(Ok(()))
}

/// Checks that storing `objects` in a folder keeps each of its owners within
/// [`Quotas::max_bytes_per_user`]: an owner's folders hold each object once, so only the
/// objects none of them claims yet count. `owners` comes from [`owners_and_folders`].
pub(crate) fn check_bytes(
    blobs: &mesh_store::BlobStore,
    quotas: &Quotas,
    owners: &[(UserId, Vec<FolderId>)],
    objects: &[(mesh_core::blob::ChunkHash, Vec<u8>)],
) -> Result<Result<(), QuotaError>, mesh_store::StoreError> {
    let limit = quotas.max_bytes_per_user;
    if limit == 0 || objects.is_empty() {
        return Ok(Ok(()));
    }
    let hashes: Vec<_> = objects.iter().map(|(h, _)| *h).collect();
    for (user, folders) in owners {
        let held: std::collections::HashSet<_> =
            blobs.claimed_among(folders, &hashes)?.into_iter().collect();
        let mut seen = std::collections::HashSet::new();
        let incoming: u64 = objects
            .iter()
            .filter(|(h, _)| !held.contains(h) && seen.insert(*h))
            .map(|(_, d)| d.len() as u64)
            .sum();
        if incoming == 0 {
            continue;
        }
        // The kept per-folder totals first: they can only say more than the folders hold
        // (an object in two of them counts twice), so under the limit with them is under it.
        // The exact count reads every object the folders claim: only near the limit.
        if blobs.claimed_bytes_bound(folders)?.saturating_add(incoming) <= limit {
            continue;
        }
        let used = blobs.claimed_bytes(folders)?;
        if used.saturating_add(incoming) > limit {
            return Ok(Err(QuotaError::Bytes {
                user: user.clone(),
                used,
                incoming,
                limit,
            }));
        }
    }
    Ok(Ok(()))
}
