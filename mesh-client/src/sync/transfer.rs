//! Blob transfers: uploading the objects a remote lacks, downloading the ones this device
//! lacks, in bounded batches that each commit on their own, so an interrupted transfer resumes
//! where it stopped (only whole objects move, and an object once stored is never asked for
//! again). Progress is reported in bytes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use mesh_core::blob::{ChunkHash, Manifest};
use mesh_core::id::{FolderId, RemoteId};
use mesh_core::CoreError;
use tokio::sync::broadcast;

use crate::error::{ClientError, Result};
use crate::shared::SharedReplica;
use crate::sync::events::{Event, TransferDirection};
use crate::transport::{Transport, TransportError};

/// Hashes per `missing_objects` question.
const HASHES_PER_QUERY: usize = 16_384;
/// Bytes per upload request.
const UPLOAD_BATCH: usize = 4 << 20;
/// Hashes per download request.
const HASHES_PER_FETCH: usize = 4_096;
/// Bytes of chunks to upload from which a push travels beside them, to a remote that relays
/// blobs (see [`upload_then`]): two upload requests' worth.
pub(crate) const RELAY_FROM: u64 = 2 * UPLOAD_BATCH as u64;
/// How long a download asks a remote that relays blobs to wait for chunks still arriving.
const RELAY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Located chunks read (and stored) at a time when a download finds them in mapped files:
/// at most 16 MiB in memory.
const LOCATED_PER_READ: usize = 64;

/// Where transfer events go.
pub(crate) struct Progress<'a> {
    pub events: &'a broadcast::Sender<Event>,
    pub remote: &'a RemoteId,
    pub folder: &'a FolderId,
}

impl Progress<'_> {
    fn report(&self, direction: TransferDirection, done: u64, total: u64) {
        let _ = self.events.send(Event::Transfer {
            remote: self.remote.clone(),
            folder: self.folder.clone(),
            direction,
            done_bytes: done,
            total_bytes: total,
        });
    }
}

/// The objects of one blob this device can upload: its chunks and its manifest.
struct LocalBlob {
    manifest: (ChunkHash, u64),
    chunks: Vec<(ChunkHash, u64)>,
}

/// The blobs of `manifests` whose manifest is stored here, with their chunks (stored, or
/// located in a mapped file). Blobs whose manifest is not stored here are skipped: their
/// writer uploads them.
async fn local_blobs(shared: &SharedReplica, manifests: Vec<ChunkHash>) -> Result<Vec<LocalBlob>> {
    shared
        .run_blobs(move |b| {
            let mut out = Vec::new();
            for m in manifests {
                let Some(bytes) = b.get(&m)? else { continue };
                let manifest = Manifest::decode(&bytes)?;
                out.push(LocalBlob {
                    manifest: (m, bytes.len() as u64),
                    chunks: manifest
                        .chunks()
                        .iter()
                        .map(|c| (c.hash, u64::from(c.len)))
                        .collect(),
                });
            }
            Ok(out)
        })
        .await?
}

/// Uploads the objects of `manifests` that `transport` lacks for `folder`, then runs `then`
/// (sends the push naming them): every blob's chunks first, then the manifests, so a remote
/// that holds a manifest holds its chunks.
///
/// Except where the remote relays blobs ([`Transport::relays_blobs`]) and at least
/// [`RELAY_FROM`] bytes of chunks are to go: then the manifests go first and `then` runs
/// beside the chunks' upload, so that the remote can serve the blob to other devices while it
/// arrives. The result waits for both: a push whose chunks failed to upload fails all the
/// same (its session ends, and the next one sends the push and the missing chunks again).
///
/// Chunks are read from the blob store, or from the mapped file they were published from
/// (checked against their hashes as they are read). A chunk that can no longer be read (its
/// file was edited or removed since it was published) makes its blob unavailable: the blob's
/// manifest is not uploaded (unless it went first), and the entry naming it waits for the
/// version that replaced it.
///
/// `known` holds objects this remote is known to have for the folder (answers and uploads of
/// earlier calls): they are not asked about again, so an edit of a large file asks only about
/// its new chunks.
pub(crate) async fn upload_then<T>(
    shared: &SharedReplica,
    transport: &Arc<dyn Transport>,
    folder: &FolderId,
    manifests: Vec<ChunkHash>,
    progress: &Progress<'_>,
    known: &KnownObjects,
    then: impl std::future::Future<Output = std::result::Result<T, UploadError>>,
) -> std::result::Result<T, UploadError> {
    let blobs = local_blobs(shared, manifests).await?;
    // Each blob's chunks, then its manifest; an object named twice is sent once.
    let mut seen = HashSet::new();
    let mut objects: Vec<(ChunkHash, u64)> = Vec::new();
    for blob in &blobs {
        objects.extend(blob.chunks.iter().filter(|(h, _)| seen.insert(*h)).copied());
        if seen.insert(blob.manifest.0) {
            objects.push(blob.manifest);
        }
    }
    objects.retain(|(h, _)| !known.contains(folder, h));
    if objects.is_empty() {
        return then.await;
    }
    let mut missing = HashSet::new();
    for part in objects.chunks(HASHES_PER_QUERY) {
        let hashes: Vec<_> = part.iter().map(|(h, _)| *h).collect();
        let lacking = transport.missing_objects(folder, &hashes).await?;
        let lacking_set: HashSet<_> = lacking.iter().copied().collect();
        known.add(folder, hashes.iter().filter(|h| !lacking_set.contains(h)));
        missing.extend(lacking);
    }
    objects.retain(|(h, _)| missing.contains(h));
    if objects.is_empty() {
        return then.await;
    }
    let total: u64 = objects.iter().map(|(_, n)| n).sum();
    // The manifests of blobs with chunks not in the store (read from the files they lie in,
    // which may have changed) go last, once their chunks are known to be sent; the others
    // travel with their chunks.
    let to_send: Vec<ChunkHash> = objects.iter().map(|(h, _)| *h).collect();
    // (Asked whether or not any file is located now: a file published in place and deleted
    // since is no longer located, and its chunks are no less absent from the store.)
    let unstored: HashSet<ChunkHash> = shared
        .run_blobs(move |b| {
            Ok::<_, crate::store::StoreError>(b.absent(&to_send)?.into_iter().collect())
        })
        .await?
        .map_err(ClientError::from)?;
    let vanished = |lost: &HashSet<ChunkHash>| match lost.iter().find(|h| !unstored.contains(h)) {
        Some(h) => Err(UploadError::from(ClientError::Store(format!(
            "object {h} vanished from the blob store"
        )))),
        None => Ok(()),
    };
    let mut done = 0u64;
    let heads: HashSet<ChunkHash> = blobs.iter().map(|b| b.manifest.0).collect();
    let chunk_bytes: u64 = objects
        .iter()
        .filter(|(h, _)| !heads.contains(h))
        .map(|(_, n)| n)
        .sum();
    if transport.relays_blobs() && chunk_bytes >= RELAY_FROM {
        let (first, chunks): (Vec<_>, Vec<_>) =
            objects.into_iter().partition(|(h, _)| heads.contains(h));
        let lost = send_all(shared, transport, folder, known, first, |size| {
            done += size;
            progress.report(TransferDirection::Upload, done, total);
        })
        .await?;
        vanished(&lost)?;
        let sending = send_all(shared, transport, folder, known, chunks, |size| {
            done += size;
            progress.report(TransferDirection::Upload, done, total);
        });
        let (sent, answer) = futures::join!(sending, then);
        let lost = sent?;
        vanished(&lost)?;
        if !lost.is_empty() {
            tracing::info!(
                chunks = lost.len(),
                "not uploaded: their file changed since it was published"
            );
        }
        return answer;
    }
    let deferred: HashMap<ChunkHash, &LocalBlob> = blobs
        .iter()
        .filter(|b| b.chunks.iter().any(|(c, _)| unstored.contains(c)))
        .map(|b| (b.manifest.0, b))
        .collect();
    let (last, first): (Vec<_>, Vec<_>) = objects
        .into_iter()
        .partition(|(h, _)| deferred.contains_key(h));
    let lost = send_all(shared, transport, folder, known, first, |size| {
        done += size;
        progress.report(TransferDirection::Upload, done, total);
    })
    .await?;
    vanished(&lost)?;
    let last: Vec<(ChunkHash, u64)> = last
        .into_iter()
        .filter(|(m, _)| {
            let whole = deferred[m].chunks.iter().all(|(c, _)| !lost.contains(c));
            if !whole {
                tracing::info!(blob = %m, "not uploaded: a chunk's file changed since it was published");
            }
            whole
        })
        .collect();
    send_all(shared, transport, folder, known, last, |size| {
        done += size;
        progress.report(TransferDirection::Upload, done, total);
    })
    .await?;
    then.await
}

/// Sends `todo` in batches of about [`UPLOAD_BATCH`] bytes, two in flight (one is read and
/// sent while the remote stores the other), calling `sent` with each batch's size. Returns
/// the objects that could not be read here (neither stored nor readable where located).
async fn send_all(
    shared: &SharedReplica,
    transport: &Arc<dyn Transport>,
    folder: &FolderId,
    known: &KnownObjects,
    todo: Vec<(ChunkHash, u64)>,
    mut sent: impl FnMut(u64),
) -> std::result::Result<HashSet<ChunkHash>, UploadError> {
    let mut batches: Vec<(Vec<ChunkHash>, u64)> = Vec::new();
    let mut i = 0;
    while i < todo.len() {
        let mut j = i;
        let mut size = 0u64;
        while j < todo.len() && (j == i || size + todo[j].1 <= UPLOAD_BATCH as u64) {
            size += todo[j].1;
            j += 1;
        }
        batches.push((todo[i..j].iter().map(|(h, _)| *h).collect(), size));
        i = j;
    }
    let sends = batches.into_iter().map(|(hashes, size)| async move {
        let asked = hashes.clone();
        let batch = shared
            .run_blobs(move |b| crate::mapping::read_objects(b, None, &hashes, usize::MAX))
            .await??;
        let got: HashSet<ChunkHash> = batch.iter().map(|(h, _)| *h).collect();
        let lost: Vec<ChunkHash> = asked.into_iter().filter(|h| !got.contains(h)).collect();
        if !batch.is_empty() {
            transport.put_objects(folder, batch).await?;
            known.add(folder, got.iter());
        }
        Ok::<(u64, Vec<ChunkHash>), UploadError>((size, lost))
    });
    let mut sends = futures::stream::iter(sends).buffered(2);
    let mut unavailable = HashSet::new();
    while let Some(r) = sends.next().await {
        let (size, lost) = r?;
        unavailable.extend(lost);
        sent(size);
    }
    Ok(unavailable)
}

/// Objects a remote is known to hold, per folder (in memory; forgotten when it grows past a
/// bound, which only costs a question).
#[derive(Default)]
pub(crate) struct KnownObjects(std::sync::Mutex<HashSet<(FolderId, ChunkHash)>>);

impl KnownObjects {
    const MAX: usize = 1 << 20;

    fn contains(&self, folder: &FolderId, h: &ChunkHash) -> bool {
        let set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.contains(&(folder.clone(), *h))
    }

    /// Forgets everything: the remote may have lost objects (it was restored from a copy).
    pub(crate) fn forget(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn add<'a>(&self, folder: &FolderId, hashes: impl Iterator<Item = &'a ChunkHash>) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if set.len() > Self::MAX {
            set.clear();
        }
        set.extend(hashes.map(|h| (folder.clone(), *h)));
    }
}

/// Why an upload stopped.
pub(crate) enum UploadError {
    Transport(TransportError),
    Client(ClientError),
}

impl From<TransportError> for UploadError {
    fn from(e: TransportError) -> Self {
        UploadError::Transport(e)
    }
}

impl From<ClientError> for UploadError {
    fn from(e: ClientError) -> Self {
        UploadError::Client(e)
    }
}

/// Makes every object of the blobs `manifests` present here (and claimed by `folder`),
/// downloading what is missing from the remotes in turn: first the missing manifests, then
/// all missing chunks of all blobs, in batches that are stored as they arrive (so a cut
/// transfer resumes where it stopped). Returns the bytes downloaded.
pub(crate) async fn download(
    shared: &SharedReplica,
    remotes: &[(RemoteId, Arc<dyn Transport>)],
    events: &broadcast::Sender<Event>,
    folder: &FolderId,
    manifests: Vec<ChunkHash>,
    how: &Fetch,
) -> Result<u64> {
    let mut last_error: Option<ClientError> = None;
    let mut downloaded = 0u64;
    for (remote, transport) in remotes {
        let progress = Progress {
            events,
            remote,
            folder,
        };
        match download_from(shared, transport, folder, &manifests, &progress, how).await {
            // Every object it asked for arrived and was stored: nothing is left to look up.
            Ok((n, true)) => return Ok(downloaded + n),
            Ok((n, false)) => {
                downloaded += n;
                // (Chunks a sink took are not in the store: only a complete answer ends.)
                if how.sink.is_none()
                    && missing_locally(
                        shared,
                        folder,
                        manifests.clone(),
                        Decoded::default(),
                        how.clone(),
                    )
                    .await?
                    .objects
                    .is_empty()
                {
                    return Ok(downloaded);
                }
            }
            Err((n, e)) => {
                downloaded += n;
                last_error = Some(ClientError::Transport {
                    remote: remote.to_string(),
                    error: e,
                });
            }
        }
    }
    let missing =
        missing_locally(shared, folder, manifests, Decoded::default(), how.clone()).await?;
    if missing.objects.is_empty() && how.sink.is_none() {
        return Ok(downloaded);
    }
    let missing_one = missing.objects.first().map(|(h, _)| h.to_string());
    Err(last_error.unwrap_or_else(|| {
        CoreError::NotFound {
            kind: "blob object",
            id: missing_one.unwrap_or_default(),
        }
        .into()
    }))
}

/// Where a download puts the chunks it receives, and which it leaves out.
#[derive(Default, Clone)]
pub(crate) struct Fetch {
    /// Takes the chunks (not the manifests) instead of the blob store, batch by batch as they
    /// arrive, checked against their hashes: a large file written straight into place.
    pub sink: Option<Arc<dyn ChunkSink>>,
    /// Chunks not to download (a local copy holds them).
    pub except: Arc<HashSet<ChunkHash>>,
}

/// Takes downloaded chunks instead of the blob store (see [`Fetch::sink`]).
pub(crate) trait ChunkSink: Send + Sync {
    /// Takes a batch of chunks, each already checked against its hash.
    fn take(&self, chunks: &[(ChunkHash, Vec<u8>)]) -> Result<()>;
}

/// Manifests a download has just received, decoded, by hash: the next round reads their
/// chunk lists from here instead of from the store.
type Decoded = Arc<std::collections::HashMap<ChunkHash, Manifest>>;

/// What is not stored here of some blobs.
struct Missing {
    /// Whether `objects` are manifests (some manifest is itself missing) rather than chunks.
    manifests: bool,
    /// The objects, each with its length (0 for a manifest, whose length is not known yet).
    objects: Vec<(ChunkHash, u64)>,
}

/// The objects of the blobs that are not stored here, after claiming for `folder` those that
/// are: the missing manifests when some manifest is itself missing, else the missing chunks.
/// A manifest in `decoded` is not read from the store.
async fn missing_locally(
    shared: &SharedReplica,
    folder: &FolderId,
    manifests: Vec<ChunkHash>,
    decoded: Decoded,
    how: Fetch,
) -> Result<Missing> {
    let folder = folder.clone();
    shared
        .run_blobs(move |b| {
            let unknown: Vec<ChunkHash> = manifests
                .iter()
                .filter(|h| !decoded.contains_key(h))
                .copied()
                .collect();
            let absent_manifests = b.absent(&unknown)?;
            if !absent_manifests.is_empty() {
                let absent: HashSet<&ChunkHash> = absent_manifests.iter().collect();
                let present: Vec<ChunkHash> = manifests
                    .iter()
                    .filter(|h| !absent.contains(h))
                    .copied()
                    .collect();
                b.claim(&folder, &present)?;
                return Ok(Missing {
                    manifests: true,
                    objects: absent_manifests.into_iter().map(|h| (h, 0)).collect(),
                });
            }
            let mut seen = HashSet::new();
            let mut chunks: Vec<(ChunkHash, u64)> = Vec::new();
            let mut add = |m: &Manifest| {
                for c in m.chunks() {
                    if !how.except.contains(&c.hash) && seen.insert(c.hash) {
                        chunks.push((c.hash, u64::from(c.len)));
                    }
                }
            };
            for h in &manifests {
                match decoded.get(h) {
                    Some(m) => add(m),
                    None => {
                        if let Some(m) = b.manifest(h)? {
                            add(&m)
                        }
                    }
                }
            }
            let mut all: Vec<ChunkHash> = chunks.iter().map(|(h, _)| *h).collect();
            all.extend(manifests.iter().copied());
            b.claim(&folder, &all)?;
            let mut absent: HashSet<_> = b
                .absent(&chunks.iter().map(|(h, _)| *h).collect::<Vec<_>>())?
                .into_iter()
                .collect();
            // Chunks that lie in files here (published in place, or written straight into
            // place) are read from those files: into the store, or into the sink.
            if !absent.is_empty() && b.has_located(None)? {
                let wanted: Vec<ChunkHash> = chunks
                    .iter()
                    .map(|(h, _)| *h)
                    .filter(|h| absent.contains(h))
                    .collect();
                for part in wanted.chunks(LOCATED_PER_READ) {
                    let found = crate::mapping::read_located(b, None, part, usize::MAX)?;
                    match &how.sink {
                        Some(sink) => sink.take(
                            &found
                                .iter()
                                .map(|(h, d)| (*h, d.clone()))
                                .collect::<Vec<_>>(),
                        )?,
                        None => {
                            b.put_trusted(&folder, found.iter().map(|(h, d)| (*h, d.as_slice())))?;
                        }
                    }
                    for h in found.keys() {
                        absent.remove(h);
                    }
                }
            }
            Ok(Missing {
                manifests: false,
                objects: chunks
                    .into_iter()
                    .filter(|(h, _)| absent.contains(h))
                    .collect(),
            })
        })
        .await?
}

/// One remote's attempt: downloads what it has of the missing objects. `Ok` carries the bytes
/// downloaded and whether every missing object arrived (and was stored and claimed); `Err`
/// the bytes downloaded before a transport failure.
async fn download_from(
    shared: &SharedReplica,
    transport: &Arc<dyn Transport>,
    folder: &FolderId,
    manifests: &[ChunkHash],
    progress: &Progress<'_>,
    how: &Fetch,
) -> std::result::Result<(u64, bool), (u64, TransportError)> {
    let local =
        |done: u64, e: ClientError| (done, TransportError::Server(format!("local store: {e}")));
    let mut done = 0u64;
    let mut decoded = std::collections::HashMap::new();
    // Two rounds: the manifests, then the chunks they list (from the manifests as they
    // arrived, without reading them back).
    for _ in 0..2 {
        let todo = missing_locally(
            shared,
            folder,
            manifests.to_vec(),
            Arc::new(std::mem::take(&mut decoded)),
            how.clone(),
        )
        .await
        .map_err(|e| local(done, e))?;
        if todo.objects.is_empty() {
            return Ok((done, true));
        }
        let total: u64 = todo.objects.iter().map(|(_, n)| n).sum();
        let mut round = 0u64;
        let mut rest: Vec<ChunkHash> = todo.objects.iter().map(|(h, _)| *h).collect();
        let mut storing: Option<tokio::task::JoinHandle<Result<u64>>> = None;
        // Whether the remote has sent every object asked for so far.
        let mut all_sent = true;
        // A remote that relays blobs may still be receiving these chunks: what an answer
        // skips is asked for again after the rest, and an empty answer is asked once more,
        // waiting for uploads under way (a waited answer that is empty ends the round). Each
        // answer either brings an object or is one of those two, so the rounds are bounded.
        let relay = transport.relays_blobs() && !todo.manifests;
        let mut later: Vec<ChunkHash> = Vec::new();
        let mut wait_next = false;
        loop {
            if rest.is_empty() {
                rest = std::mem::take(&mut later);
            }
            // The next batch is asked for while the last one is being stored.
            let ask: Vec<ChunkHash> = rest.iter().take(HASHES_PER_FETCH).copied().collect();
            let got = if ask.is_empty() {
                None
            } else if wait_next {
                Some(
                    transport
                        .get_objects_waiting(folder, &ask, RELAY_WAIT)
                        .await,
                )
            } else {
                Some(transport.get_objects(folder, &ask).await)
            };
            let stored = stored_bytes(storing.take())
                .await
                .map_err(|e| local(done, e))?;
            if stored > 0 {
                done += stored;
                round += stored;
                progress.report(TransferDirection::Download, round, total.max(round));
            }
            let Some(got) = got else { break };
            // Only objects asked for count (a remote sending others would otherwise keep
            // this loop going without ever shrinking what is left to ask).
            let asked: HashSet<&ChunkHash> = ask.iter().collect();
            let got: Vec<(ChunkHash, Vec<u8>)> = got
                .map_err(|e| (done, e))?
                .into_iter()
                .filter(|(h, _)| asked.contains(h))
                .collect();
            if got.is_empty() {
                if relay && !wait_next {
                    wait_next = true;
                    continue;
                }
                // This remote has no more of them.
                return Ok((done, false));
            }
            wait_next = false;
            if todo.manifests {
                // One that does not decode is read (and refused) from the store instead.
                for (h, bytes) in &got {
                    if let Ok(m) = Manifest::decode(bytes) {
                        if h.verifies(bytes) {
                            decoded.insert(*h, m);
                        }
                    }
                }
            }
            let received: HashSet<ChunkHash> = got.iter().map(|(h, _)| *h).collect();
            let bytes: u64 = got.iter().map(|(_, d)| d.len() as u64).sum();
            let (sh, f) = (shared.clone(), folder.clone());
            storing = Some(match (&how.sink, todo.manifests) {
                (Some(sink), false) => {
                    let sink = sink.clone();
                    tokio::task::spawn_blocking(move || {
                        if let Some((h, _)) = got.iter().find(|(h, d)| !h.verifies(d)) {
                            return Err(CoreError::InvalidBlob(format!(
                                "object {h} does not match its content"
                            ))
                            .into());
                        }
                        sink.take(&got).map(|()| bytes)
                    })
                }
                _ => tokio::spawn(async move { store(&sh, &f, got).await.map(|()| bytes) }),
            });
            rest.retain(|h| !received.contains(h));
            // What it skipped in this answer, it does not have.
            if let Some(pos) = ask.iter().rposition(|h| received.contains(h)) {
                let skipped: HashSet<_> = ask[..pos]
                    .iter()
                    .filter(|h| !received.contains(h))
                    .collect();
                if !skipped.is_empty() {
                    if relay {
                        later.extend(rest.iter().filter(|h| skipped.contains(h)));
                    } else {
                        all_sent = false;
                    }
                    rest.retain(|h| !skipped.contains(h));
                }
            }
        }
        if todo.manifests {
            continue;
        }
        // The chunks' round, stored to the last batch: complete if every one arrived.
        return Ok((done, all_sent));
    }
    Ok((done, false))
}

/// Waits for a batch being stored; the bytes it stored (0 without one).
async fn stored_bytes(storing: Option<tokio::task::JoinHandle<Result<u64>>>) -> Result<u64> {
    match storing {
        Some(h) => h
            .await
            .map_err(|e| ClientError::Internal(format!("storing objects: {e}")))?,
        None => Ok(0),
    }
}

/// Stores downloaded objects (checked against their hashes).
async fn store(
    shared: &SharedReplica,
    folder: &FolderId,
    objects: Vec<(ChunkHash, Vec<u8>)>,
) -> Result<()> {
    let folder = folder.clone();
    shared
        .run_blobs(move |b| b.put(&folder, &objects).map(|_| ()))
        .await??;
    Ok(())
}
