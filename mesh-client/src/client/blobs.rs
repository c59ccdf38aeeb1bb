//! Blobs: an entry's media resource, stored as content-defined chunks and fetched on demand.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mesh_core::blob::{ChunkHash, Manifest};
use mesh_core::id::{FolderId, RemoteId};
use mesh_core::model::{Action, MediaRef};

use crate::error::{ClientError, Result};
use crate::sync::transfer;
use crate::transport::Transport;
use crate::MeshClient;

/// What a device's blob store holds ([`MeshClient::blob_usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlobUsage {
    /// Objects stored: chunks and manifests, each once however many blobs share it.
    pub objects: u64,
    /// Their total size in bytes.
    pub bytes: u64,
}

impl MeshClient {
    /// Stores `data` as a blob of `folder` (chunked and deduplicated) and returns the media
    /// reference to put in an entry. The bytes reach the remotes when the entry is synced.
    /// Needs the right to create entries in the folder.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> mesh_client::error::Result<()> {
    /// use mesh_client::MeshClient;
    /// use mesh_core::model::{EntryDraft, FolderKind};
    /// let client = MeshClient::builder().user("ann".parse()?).device("pc".parse()?).build().await?;
    /// let folder = client.create_folder("Photos", FolderKind::app("photos")?).await?;
    /// let feed = client.create_feed(&folder.id, "photos".parse()?, "Photos").await?;
    /// let media = client.put_blob(&folder.id, vec![42u8; 100_000], "image/png").await?;
    /// let mut draft = EntryDraft::new("Beach", serde_json::json!({}));
    /// draft.media = Some(media.clone());
    /// client.put(&folder.id, &feed, draft).await?;
    /// assert_eq!(client.read_blob(&folder.id, &media).await?, vec![42u8; 100_000]);
    /// # Ok(()) }
    /// ```
    pub async fn put_blob(
        &self,
        folder: &FolderId,
        data: Vec<u8>,
        content_type: &str,
    ) -> Result<MediaRef> {
        self.check(folder, Action::CreateEntry).await?;
        let f = folder.clone();
        let len = data.len() as u64;
        let manifest = self
            .shared()
            .run_blobs(move |b| b.ingest(&f, data.as_slice(), len))
            .await??;
        Ok(media_ref(&manifest, content_type))
    }

    /// Stores the content of the file at `path` as a blob of `folder`, streaming it (a large
    /// file never sits in memory).
    pub async fn put_file_blob(
        &self,
        folder: &FolderId,
        path: impl AsRef<Path>,
        content_type: &str,
    ) -> Result<MediaRef> {
        self.check(folder, Action::CreateEntry).await?;
        let (f, path) = (folder.clone(), path.as_ref().to_owned());
        let manifest = self
            .shared()
            .run_blobs(move |b| {
                let file = std::fs::File::open(&path).map_err(|e| io_error(&path, e))?;
                let len = file.metadata().map_err(|e| io_error(&path, e))?.len();
                Ok::<_, ClientError>(b.ingest(
                    &f,
                    std::io::BufReader::with_capacity(1 << 20, file),
                    len,
                )?)
            })
            .await??;
        Ok(media_ref(&manifest, content_type))
    }

    /// Makes the blob's content present on this device, downloading the objects it lacks from
    /// the remotes (in turn, until one has them all: peers reached directly first, then the
    /// others in the order they were added). Resumable: objects already downloaded
    /// are kept when a transfer is cut, and not asked for again. Reports
    /// [`Event::Transfer`](crate::Event::Transfer) progress. Returns the bytes downloaded.
    pub async fn fetch_blob(&self, folder: &FolderId, media: &MediaRef) -> Result<u64> {
        self.check(folder, Action::Read).await?;
        let manifest: ChunkHash = media.hash.parse()?;
        self.fetch_objects(folder, vec![manifest]).await
    }

    /// How much this device's blob store holds: the objects (chunks and manifests of every
    /// folder) and their total size. Objects are shared between folders and entries, so this
    /// is what the device keeps on disk, not the sum of the blobs' sizes.
    pub async fn blob_usage(&self) -> Result<BlobUsage> {
        let (objects, bytes) = self.shared().run_blobs(|b| b.usage()).await??;
        Ok(BlobUsage { objects, bytes })
    }

    /// Makes the blobs `manifests` present here, downloading from the remotes in turn (one
    /// shared download for all of them).
    pub(crate) async fn fetch_objects(
        &self,
        folder: &FolderId,
        manifests: Vec<ChunkHash>,
    ) -> Result<u64> {
        self.fetch_objects_with(folder, manifests, &transfer::Fetch::default())
            .await
    }

    /// [`MeshClient::fetch_objects`], with the chunks going where `how` says.
    pub(crate) async fn fetch_objects_with(
        &self,
        folder: &FolderId,
        manifests: Vec<ChunkHash>,
        how: &transfer::Fetch,
    ) -> Result<u64> {
        let remotes = self.remotes();
        transfer::download(
            self.shared(),
            &remotes,
            &self.inner.events,
            folder,
            manifests,
            how,
        )
        .await
    }

    /// The remotes, peers reached directly first (a stable order otherwise): what downloads
    /// ask in turn.
    pub(crate) fn remotes(&self) -> Vec<(RemoteId, Arc<dyn Transport>)> {
        let mut all: Vec<_> = self
            .inner
            .engines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|e| (e.remote.clone(), e.transport.clone()))
            .collect();
        all.sort_by_key(|(_, t)| !t.is_direct());
        all
    }

    /// The whole content of a blob, fetched first if needed (for small blobs; large ones go
    /// to a file with [`MeshClient::export_blob`]).
    pub async fn read_blob(&self, folder: &FolderId, media: &MediaRef) -> Result<Vec<u8>> {
        self.fetch_blob(folder, media).await?;
        let manifest: ChunkHash = media.hash.parse()?;
        self.shared()
            .run_blobs(move |b| {
                let mut out = Vec::new();
                b.write_to(&manifest, &mut out)?;
                Ok(out)
            })
            .await?
    }

    /// Writes a blob's content to the file `path`, fetched first if needed: into a temporary
    /// file beside it, synced, then renamed over `path`, so `path` never holds part of it.
    pub async fn export_blob(
        &self,
        folder: &FolderId,
        media: &MediaRef,
        path: impl AsRef<Path>,
    ) -> Result<()> {
        self.fetch_blob(folder, media).await?;
        let manifest: ChunkHash = media.hash.parse()?;
        let path = path.as_ref().to_owned();
        self.shared()
            .run_blobs(move |b| {
                crate::mapping::write_atomically(&path, |f| {
                    Ok(b.write_to(&manifest, f).map(|_| ())?)
                })
            })
            .await?
    }
}

/// The media reference of a stored blob.
fn media_ref(manifest: &Manifest, content_type: &str) -> MediaRef {
    MediaRef {
        hash: manifest.hash().to_string(),
        content_type: content_type.to_owned(),
        length: manifest.length(),
    }
}

pub(crate) fn io_error(path: &Path, e: std::io::Error) -> ClientError {
    ClientError::Io {
        path: PathBuf::from(path),
        error: e.to_string(),
    }
}
