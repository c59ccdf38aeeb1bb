//! Per-user quotas: how many folders one user may own.
//!
//! A folder is created by the first write to its members feed, through the REST API or a sync
//! push; both check the quota first, under the replica's lock, so two concurrent creations
//! cannot both slip under it.

use axum::http::StatusCode;
use mesh_core::id::{FolderId, UserId};
use mesh_core::model::{names, FeedKey, Role, Scope};
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
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            max_folders_per_user: 1000,
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

/// How many folders `user` owns (is an active owner of).
pub(crate) fn folders_owned(r: &Replica<ClientStore>, user: &UserId) -> Result<u32, CoreError> {
    let mut owned = 0u32;
    for h in r.store().feeds()? {
        if h.feed.name.as_str() != names::MEMBERS {
            continue;
        }
        let Scope::Folder(f) = &h.feed.scope else {
            continue;
        };
        if guard::membership(r.store(), f, user)?.and_then(|m| m.effective_role())
            == Some(Role::Owner)
        {
            owned = owned.saturating_add(1);
        }
    }
    Ok(owned)
}

/// Checks that `user` may create `folder`: nothing to check when it exists already.
pub(crate) fn check_new_folder(
    r: &Replica<ClientStore>,
    quotas: &Quotas,
    user: &UserId,
    folder: &FolderId,
) -> Result<Result<(), QuotaError>, CoreError> {
    if quotas.max_folders_per_user == 0 || folder_exists(r, folder)? {
        return Ok(Ok(()));
    }
    let owned = folders_owned(r, user)?;
    if owned >= quotas.max_folders_per_user {
        return Ok(Err(QuotaError::Folders {
            user: user.clone(),
            owned,
        }));
    }
    Ok(Ok(()))
}
