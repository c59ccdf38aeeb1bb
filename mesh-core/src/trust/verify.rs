//! Checking a pushed entry's signatures: every history item the replica does not already hold,
//! in the winning version and in every conflict.

use std::collections::HashSet;

use crate::error::{CoreError, Result};
use crate::feedsync::{HistoryItem, SyncMeta};
use crate::id::EntryId;
use crate::model::{Entry, EntryData, EntryVersion, FeedKey};
use crate::trust::keyring::{KeyStatus, Keyring, Signer};
use crate::trust::keys::PublicKey;
use crate::trust::seal::{data_digest, signing_bytes, Seal};

/// Verifies `incoming` against `keyring` before it is merged over `local`.
///
/// * Every history item of every incoming version that `local` does not hold (same fields
///   and seal) is checked: an item by a device of the mesh must carry a seal that its
///   device's certified key signed, within the certificate's validity; an item by the
///   authority's endpoint must be signed with the authority key; items without `by`, or by an
///   endpoint outside the mesh, may be unsigned.
/// * The topmost item of every incoming version that carries a seal must match that version
///   (its `deleted` flag, author and data digest, and `updates` must equal its sequence),
///   held or not, so that a genuine seal cannot be put on other data or count.
/// * A revoked device's items are accepted only if they were made before the revocation and
///   are not the topmost item of a version the replica does not hold.
pub fn verify_entry(
    keyring: &dyn Keyring,
    feed: &FeedKey,
    local: Option<&Entry>,
    incoming: &Entry,
) -> Result<()> {
    let held: HashSet<&HistoryItem> = match local {
        Some(l) => std::iter::once(&l.sync)
            .chain(l.conflicts.iter().map(|c| &c.sync))
            .flat_map(|s| s.history.iter())
            .collect(),
        None => HashSet::new(),
    };
    let held_versions: Vec<(&SyncMeta, &EntryData)> = match local {
        Some(l) => std::iter::once((&l.sync, &l.content))
            .chain(l.conflicts.iter().map(|c| (&c.sync, &c.content)))
            .collect(),
        None => Vec::new(),
    };
    let id = &incoming.sync.id;
    let versions = std::iter::once((&incoming.sync, &incoming.content))
        .chain(incoming.conflicts.iter().map(|c| (&c.sync, &c.content)));
    for (sync, data) in versions {
        let known = held_versions.iter().any(|(s, d)| *s == sync && *d == data);
        for (i, h) in sync.history.iter().enumerate() {
            let top = i == 0;
            if top && !known {
                check_top_matches(id, h, sync, data)?;
            }
            if held.contains(h) {
                continue;
            }
            verify_item(keyring, feed, id, h, top)?;
        }
    }
    Ok(())
}

/// [`verify_entry`] for many entries (each beside what the replica holds for it), spread over
/// up to `threads` scoped threads when the batch is large enough to pay for them. The answers
/// are in the order of `pairs`.
pub fn verify_entries(
    keyring: &dyn Keyring,
    feed: &FeedKey,
    pairs: &[(Option<&Entry>, &Entry)],
    threads: usize,
) -> Vec<Result<()>> {
    const MIN_PER_THREAD: usize = 64;
    let threads = threads
        .clamp(1, 64)
        .min(pairs.len() / MIN_PER_THREAD)
        .max(1);
    let one = |&(local, incoming): &(Option<&Entry>, &Entry)| {
        verify_entry(keyring, feed, local, incoming)
    };
    if threads == 1 {
        return pairs.iter().map(one).collect();
    }
    let per = pairs.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = pairs
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(one).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                // Verification does not panic; should it, the entries are refused, not lost.
                Err(_) => vec![Err(CoreError::InvalidSignature("verification failed".into())); per],
            })
            .take(pairs.len())
            .collect()
    })
}

fn check_top_matches(
    id: &EntryId,
    h: &HistoryItem,
    sync: &SyncMeta,
    data: &EntryData,
) -> Result<()> {
    let Some(seal) = &h.seal else {
        return Ok(());
    };
    // `updates` is not signed on its own: a signed version's count is its topmost sequence
    // (as every mesh write makes it), so that no relay can raise it to win a merge.
    if sync.noconflicts {
        return Err(CoreError::InvalidSignature(format!(
            "entry {id}: a signed version cannot say noconflicts (the flag is not signed)"
        )));
    }
    if sync.updates != h.sequence {
        return Err(CoreError::InvalidSignature(format!(
            "entry {id}: updates {} is not the signed sequence {}",
            sync.updates, h.sequence
        )));
    }
    if seal.deleted != sync.deleted
        || seal.author != data.author
        || seal.digest != data_digest(data)
    {
        return Err(CoreError::InvalidSignature(format!(
            "the seal of entry {id}'s topmost history item (sequence {}) does not match its data",
            h.sequence
        )));
    }
    Ok(())
}

fn verify_item(
    keyring: &dyn Keyring,
    feed: &FeedKey,
    id: &EntryId,
    h: &HistoryItem,
    top: bool,
) -> Result<()> {
    let Some(by) = &h.by else {
        return Ok(()); // FeedSync allows by-less items; nothing to check them against
    };
    let key: PublicKey = match keyring.lookup(by) {
        KeyStatus::Foreign => return Ok(()),
        KeyStatus::Uncertified => {
            return Err(CoreError::UntrustedCertificate(format!(
                "device {by} holds no valid certificate"
            )))
        }
        KeyStatus::Authority(key) => key,
        KeyStatus::Device(d) => {
            let when = h.when.ok_or_else(|| {
                CoreError::InvalidSignature(format!(
                    "history item {} of entry {id} by {by} has no time",
                    h.sequence
                ))
            })?;
            if !d.certificate.covers(when) {
                return Err(CoreError::UntrustedCertificate(format!(
                    "the certificate of device {by} ended before {when}"
                )));
            }
            if let Some(revoked) = d.revoked_at {
                if top || when >= revoked {
                    return Err(CoreError::Revoked {
                        device: by.to_string(),
                    });
                }
            }
            d.certificate.key
        }
    };
    let seal: &Seal = h.seal.as_deref().ok_or_else(|| {
        CoreError::InvalidSignature(format!(
            "history item {} of entry {id} by {by} is not signed",
            h.sequence
        ))
    })?;
    let msg = signing_bytes(feed, id, h, seal.deleted, &seal.author, &seal.digest);
    key.verify(&msg, &seal.sig).map_err(|_| {
        CoreError::InvalidSignature(format!(
            "the signature of history item {} of entry {id} by {by} does not verify",
            h.sequence
        ))
    })
}

/// Who answers for `version`: the user of the certified device that wrote its topmost item,
/// the authority, or (for by-less items and endpoints outside the mesh) the pusher.
pub fn signer_of(keyring: &dyn Keyring, version: &EntryVersion) -> Signer {
    signer_of_meta(keyring, &version.sync)
}

/// [`signer_of`] from the sync metadata alone.
pub fn signer_of_meta(keyring: &dyn Keyring, sync: &SyncMeta) -> Signer {
    match sync.topmost().and_then(|h| h.by.as_ref()) {
        None => Signer::Foreign,
        Some(by) => match keyring.lookup(by) {
            KeyStatus::Device(d) => Signer::User(d.certificate.user),
            KeyStatus::Authority(_) => Signer::Authority,
            // Unreachable after `verify_entry`, which refuses uncertified devices.
            KeyStatus::Uncertified | KeyStatus::Foreign => Signer::Foreign,
        },
    }
}
