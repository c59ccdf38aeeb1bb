//! Checking a pushed entry's signatures: every history item the replica does not already hold,
//! in the winning version and in every conflict.

use std::collections::HashSet;

use crate::error::{CoreError, Result};
use crate::feedsync::{HistoryItem, SyncMeta};
use crate::id::EntryId;
use crate::model::{Entry, EntryData, EntryVersion, FeedKey};
use crate::trust::check::SignatureBatch;
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
    verify_entries_with(keyring, feed, &[(local, incoming)], 1, None)
        .pop()
        .unwrap_or(Ok(()))
}

/// The history items of the versions `local` holds (those need no check).
fn held_items(local: Option<&Entry>) -> HashSet<&HistoryItem> {
    match local {
        Some(l) => std::iter::once(&l.sync)
            .chain(l.conflicts.iter().map(|c| &c.sync))
            .flat_map(|s| s.history.iter())
            .collect(),
        None => HashSet::new(),
    }
}

/// [`verify_entry`], taking the signatures `marks` holds as passed (every other rule is
/// applied as usual); `held` is [`held_items`] of `local`.
fn verify_entry_with(
    keyring: &dyn Keyring,
    feed: &FeedKey,
    (local, incoming): (Option<&Entry>, &Entry),
    held: &HashSet<&HistoryItem>,
    marks: &Marks<'_>,
) -> Result<()> {
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
            verify_item(keyring, feed, id, h, top, marks)?;
        }
    }
    Ok(())
}

/// Adds to `batch` the signature check of every sealed history item of `incoming` that is not
/// in `held` (the replica holds it), whose `by` `key_of` gives a key for, and that `skip`
/// does not already hold. With `marks`, notes which item each check added is for, and which
/// items `skip` held, so that judging the entries afterwards need not make their signed bytes
/// again.
#[allow(clippy::too_many_arguments)]
fn gather<'e>(
    keyring: &dyn Keyring,
    feed: &FeedKey,
    incoming: &'e Entry,
    held: &HashSet<&HistoryItem>,
    key_of: &dyn Fn(KeyStatus) -> Option<PublicKey>,
    skip: Option<&Checked>,
    batch: &mut SignatureBatch,
    mut marks: Option<&mut Marks<'e>>,
) {
    let versions =
        std::iter::once(&incoming.sync).chain(incoming.conflicts.iter().map(|c| &c.sync));
    for h in versions.flat_map(|s| s.history.iter()) {
        let (Some(by), Some(seal)) = (&h.by, h.seal.as_deref()) else {
            continue;
        };
        if held.contains(h) {
            continue;
        }
        let Some(key) = key_of(keyring.lookup(by)) else {
            continue;
        };
        let msg = signing_bytes(
            feed,
            &incoming.sync.id,
            h,
            seal.deleted,
            &seal.author,
            &seal.digest,
        );
        if skip.is_some_and(|c| c.holds(&key, seal.sig.as_bytes(), &msg)) {
            if let Some(m) = marks.as_deref_mut() {
                m.good.insert(ItemAt::of(h), key);
            }
            continue;
        }
        if let Some(m) = marks.as_deref_mut() {
            m.queued.push((ItemAt::of(h), key));
        }
        batch.push(key, msg, seal.sig);
    }
}

/// Where a history item is in memory: which item of the entries being judged it is, for as
/// long as they are borrowed (they cannot move or change meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ItemAt(*const HistoryItem);

impl ItemAt {
    fn of(h: &HistoryItem) -> Self {
        ItemAt(std::ptr::from_ref(h))
    }
}

/// The items of the entries being judged whose signature is known to hold, under which key:
/// those an early check passed ([`Checked`]), and those the batch passed. `queued` is the
/// batch's items in order, until the batch is checked.
#[derive(Default)]
struct Marks<'e> {
    good: std::collections::HashMap<ItemAt, PublicKey>,
    queued: Vec<(ItemAt, PublicKey)>,
    /// The entries the addresses point into, borrowed for as long as the marks live.
    _entries: std::marker::PhantomData<&'e Entry>,
}

impl Marks<'_> {
    /// Takes the batch's answers (in the order its checks were added) into `good`.
    fn passed(&mut self, answers: Vec<bool>) {
        for ((at, key), ok) in self.queued.drain(..).zip(answers) {
            if ok {
                self.good.insert(at, key);
            }
        }
    }

    /// Whether `h`'s signature is known to hold under `key`.
    fn holds(&self, h: &HistoryItem, key: &PublicKey) -> bool {
        self.good.get(&ItemAt::of(h)) == Some(key)
    }
}

/// The digests of the checks in `batch` that pass.
fn passed(batch: &SignatureBatch) -> Vec<[u8; 32]> {
    batch
        .check()
        .into_iter()
        .zip(batch.items())
        .filter(|(ok, _)| *ok)
        .map(|(_, (key, msg, sig))| Checked::digest(key, sig.as_bytes(), msg))
        .collect()
}

/// Signature checks already passed: digests of (key, signature, signed bytes), so that a
/// check made early, outside any lock, is not made again under it. Holding a digest proves
/// only that this very signature verified under this very key over these very bytes; the
/// rules around it (the certificate's validity, revocations, roles) are still applied when
/// the push is judged.
#[derive(Debug, Default)]
pub struct Checked(HashSet<[u8; 32]>);

impl Checked {
    fn digest(key: &PublicKey, sig: &[u8], msg: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"mesh-checked-signature-v1\0");
        h.update(key.as_bytes());
        h.update(sig);
        h.update(msg);
        *h.finalize().as_bytes()
    }

    fn holds(&self, key: &PublicKey, sig: &[u8], msg: &[u8]) -> bool {
        !self.0.is_empty() && self.0.contains(&Self::digest(key, sig, msg))
    }
}

/// Checks early the signatures of `entries` that `user`'s own certified devices made (the
/// bulk of what a device pushes), on up to `threads` threads, with no store and no lock:
/// judging the push afterwards ([`crate::sync::guard`], given the result through
/// [`Pusher::with_checked`](crate::sync::guard::Pusher::with_checked)) then skips those
/// checks. Entries over the item-shape limits are left out (the judgement refuses them), so
/// the work stays bounded by the push's size; items by anyone else are checked when judged.
pub fn check_signatures(
    keyring: &dyn Keyring,
    user: &crate::id::UserId,
    feed: &FeedKey,
    entries: &[Entry],
    threads: usize,
) -> Checked {
    let own = |status: KeyStatus| match status {
        KeyStatus::Device(d) if d.certificate.user == *user => Some(d.certificate.key),
        _ => None,
    };
    let parts = spread(entries, threads, |part| {
        let mut batch = SignatureBatch::new();
        for e in part {
            if crate::feedsync::limits::check_shape(None, e).is_ok() {
                gather(
                    keyring,
                    feed,
                    e,
                    &HashSet::new(),
                    &own,
                    None,
                    &mut batch,
                    None,
                );
            }
        }
        passed(&batch)
    });
    Checked(parts.into_iter().flatten().flatten().collect())
}

/// Runs `f` over `items` in up to `threads` parts on scoped threads (one part, on the calling
/// thread, for small batches); the results in the order of the parts.
fn spread<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&[T]) -> R + Sync,
) -> Vec<Option<R>> {
    const MIN_PER_THREAD: usize = 64;
    let threads = threads
        .clamp(1, 64)
        .min(items.len() / MIN_PER_THREAD)
        .max(1);
    if threads == 1 {
        return vec![Some(f(items))];
    }
    let per = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let parts: Vec<_> = items
            .chunks(per)
            .map(|part| s.spawn(move || f(part)))
            .collect();
        // Verification does not panic; should a part, its answer is missing (`None`).
        parts.into_iter().map(|h| h.join().ok()).collect()
    })
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
    verify_entries_with(keyring, feed, pairs, threads, None)
}

/// [`verify_entries`], taking the checks in `checked` as passed (see [`Checked`]).
pub(crate) fn verify_entries_with(
    keyring: &dyn Keyring,
    feed: &FeedKey,
    pairs: &[(Option<&Entry>, &Entry)],
    threads: usize,
    checked: Option<&Checked>,
) -> Vec<Result<()>> {
    // Each part's signatures are checked in one batch first; the rules around them are
    // then applied entry by entry, taking the batch's passed checks as passed.
    let signer = |status: KeyStatus| match status {
        KeyStatus::Device(d) => Some(d.certificate.key),
        KeyStatus::Authority(key) => Some(key),
        KeyStatus::Uncertified | KeyStatus::Foreign => None,
    };
    let parts = spread(pairs, threads, |part| {
        let held: Vec<HashSet<&HistoryItem>> =
            part.iter().map(|&(local, _)| held_items(local)).collect();
        let mut batch = SignatureBatch::new();
        let mut marks = Marks::default();
        for (&(_, incoming), held) in part.iter().zip(&held) {
            let marks = Some(&mut marks);
            gather(
                keyring, feed, incoming, held, &signer, checked, &mut batch, marks,
            );
        }
        marks.passed(batch.check());
        part.iter()
            .zip(&held)
            .map(|(&pair, held)| verify_entry_with(keyring, feed, pair, held, &marks))
            .collect::<Vec<_>>()
    });
    let per = pairs.len().div_ceil(parts.len().max(1));
    parts
        .into_iter()
        .flat_map(|p| {
            // Should a part have panicked, its entries are refused, not lost.
            p.unwrap_or_else(|| {
                vec![Err(CoreError::InvalidSignature("verification failed".into())); per]
            })
        })
        .take(pairs.len())
        .collect()
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
    marks: &Marks<'_>,
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
    if marks.holds(h, &key) {
        return Ok(());
    }
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
