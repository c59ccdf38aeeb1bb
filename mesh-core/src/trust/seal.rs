//! Seals: the signature a writer puts on a history item when it makes that item topmost.
//!
//! A seal binds one history item to the version it topped: the message signed is the
//! canonical encoding (see [`signing_bytes`] and `docs/protocol.md`, "Signed versions") of the
//! feed, the entry id, the item's sequence, `when` and `by`, the version's `deleted` flag and
//! author, and a BLAKE3 digest of the version's data ([`data_digest`]). The seal carries the
//! flag, the author and the digest itself, so that an item stays checkable after newer
//! versions have replaced its data (as a lower item of a later history).

use serde::{Deserialize, Serialize};

use crate::feedsync::HistoryItem;
use crate::id::{EntryId, UserId};
use crate::model::{EntryData, FeedKey};
use crate::trust::keys::{put_bytes, Digest, SecretKey, Signature};

/// The domain tag that starts every signed version message.
pub const VERSION_TAG: &[u8] = b"mesh-version-sig-v1\0";

/// The domain tag that starts every data digest.
pub const DATA_TAG: &[u8] = b"mesh-data-v1\0";

/// What a writer signed when it made a history item topmost.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Seal {
    /// Whether the version was a tombstone.
    pub deleted: bool,
    /// The version's author (the entry's author).
    pub author: UserId,
    /// The digest of the version's data ([`data_digest`]).
    pub digest: Digest,
    /// The writer's Ed25519 signature over [`signing_bytes`].
    pub sig: Signature,
}

/// The BLAKE3 digest of a version's data: title, content, media reference and the two
/// timestamps (the author is signed on its own).
///
/// Encoding (all integers big-endian): [`DATA_TAG`]; the title and the canonical JSON content,
/// each as a `u64` byte length then the UTF-8 bytes; the media reference as one byte `0`
/// (none) or `1` followed by the hash and the content type (each a `u32` length then bytes)
/// and the length as a `u64`; then `published` and `updated` as `i64` Unix seconds.
pub fn data_digest(data: &EntryData) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(DATA_TAG);
    for text in [data.title.as_str(), data.content.as_str()] {
        h.update(&(text.len() as u64).to_be_bytes());
        h.update(text.as_bytes());
    }
    match &data.media {
        None => {
            h.update(&[0]);
        }
        Some(m) => {
            let mut buf = vec![1];
            put_bytes(&mut buf, m.hash.as_bytes());
            put_bytes(&mut buf, m.content_type.as_bytes());
            buf.extend_from_slice(&m.length.to_be_bytes());
            h.update(&buf);
        }
    }
    h.update(&data.published.unix().to_be_bytes());
    h.update(&data.updated.unix().to_be_bytes());
    Digest(*h.finalize().as_bytes())
}

/// The exact bytes a writer signs for history item `item` of entry `id` in `feed`.
///
/// Encoding (integers big-endian; "text" is a `u32` byte length then UTF-8 bytes):
/// [`VERSION_TAG`]; the feed key's text form; the entry id; the sequence as `u32`; `when` as
/// one byte `0` (absent) or `1` then `i64` Unix seconds; `by` as text (empty when absent);
/// `deleted` as one byte `0`/`1`; the author as text; the 32 digest bytes.
pub fn signing_bytes(
    feed: &FeedKey,
    id: &EntryId,
    item: &HistoryItem,
    deleted: bool,
    author: &UserId,
    digest: &Digest,
) -> Vec<u8> {
    let feed = feed.to_string();
    let by = item.by.as_ref().map(|b| b.as_str()).unwrap_or("");
    let mut out = Vec::with_capacity(VERSION_TAG.len() + 64 + feed.len() + id.as_str().len());
    out.extend_from_slice(VERSION_TAG);
    put_bytes(&mut out, feed.as_bytes());
    put_bytes(&mut out, id.as_str().as_bytes());
    out.extend_from_slice(&item.sequence.to_be_bytes());
    match item.when {
        None => out.push(0),
        Some(w) => {
            out.push(1);
            out.extend_from_slice(&w.unix().to_be_bytes());
        }
    }
    put_bytes(&mut out, by.as_bytes());
    out.push(u8::from(deleted));
    put_bytes(&mut out, author.as_str().as_bytes());
    out.extend_from_slice(&digest.0);
    out
}

/// Seals the topmost history item of a version with `key`: computes the data digest and
/// signs. The item keeps its seal when later versions push it down the history.
pub fn seal_version(
    feed: &FeedKey,
    id: &EntryId,
    history: &mut [HistoryItem],
    deleted: bool,
    data: &EntryData,
    key: &SecretKey,
) {
    let Some(top) = history.first_mut() else {
        return;
    };
    let digest = data_digest(data);
    let msg = signing_bytes(feed, id, top, deleted, &data.author, &digest);
    top.seal = Some(Box::new(Seal {
        deleted,
        author: data.author.clone(),
        digest,
        sig: key.sign(&msg),
    }));
}
