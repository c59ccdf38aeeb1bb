//! The mapping calls of [`MeshClient`]: map, unmap, rescan.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use mesh_core::id::FolderId;
use mesh_core::model::Mapping;
use tokio::sync::{mpsc, oneshot};

use super::index::IndexRecord;
use super::{root, Cmd, Mapper, MappingHandle, MappingOptions};
use crate::error::{ClientError, Result};
use crate::MeshClient;

impl MeshClient {
    /// Maps `folder` onto the directory `dir` on this device with default [`MappingOptions`],
    /// and starts keeping the two in sync; see the [module documentation](crate::mapping).
    /// Replaces an earlier mapping of the folder. Needs a role that may create entries to
    /// publish local files (a Reader's mapping only receives).
    ///
    /// The directory is marked ([`MARKER_FILE`](super::MARKER_FILE)); a directory already marked for this folder
    /// and device carries on from its index, an unmarked one is merged with the feed. A missing
    /// directory is created — unless it is the one this device last mapped the folder onto:
    /// then the mapping starts paused ([`Event::MappingPaused`](crate::Event::MappingPaused))
    /// until the directory is back. Fails with [`ClientError::MappingPaused`] for a directory
    /// marked for another folder or device, or one that cannot be read.
    pub async fn map_folder(&self, folder: &FolderId, dir: impl Into<PathBuf>) -> Result<Mapping> {
        self.map_folder_with(folder, dir, MappingOptions::default())
            .await
    }

    /// [`MeshClient::map_folder`] with chosen options.
    pub async fn map_folder_with(
        &self,
        folder: &FolderId,
        dir: impl Into<PathBuf>,
        options: MappingOptions,
    ) -> Result<Mapping> {
        let dir: PathBuf = dir.into();
        let blobs = self.shared().blobs().clone();
        let f = folder.clone();
        let device = self.device().to_string();
        let start = tokio::task::spawn_blocking(move || {
            let known = blobs.mapped_dir(&f)?;
            root::prepare(f.as_str(), &device, &dir, known).map_err(|reason| {
                ClientError::MappingPaused {
                    folder: f.to_string(),
                    reason,
                }
            })
        })
        .await
        .map_err(|e| ClientError::Internal(e.to_string()))??;
        let root::Start {
            root: dir,
            marker,
            paused,
        } = start;
        let record = self
            .record_mapping(folder, Some(dir.display().to_string()))
            .await?;
        let index = {
            let f = folder.clone();
            let (root, mapping) = (dir.display().to_string(), marker.mapping.clone());
            self.shared()
                .run_blobs(move |b| {
                    b.set_mapped_dir(&f, Some((&root, &mapping)))?;
                    b.index_load(&f, &mapping)
                })
                .await??
        };
        let mut index_map = BTreeMap::new();
        for (key, body) in index {
            if let Ok(rec) = serde_json::from_str::<IndexRecord>(&body) {
                index_map.insert(key, rec);
            }
        }
        let device_name = self
            .devices()
            .await
            .ok()
            .and_then(|ds| ds.into_iter().find(|d| d.id == *self.device()))
            .map(|d| d.name)
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| self.device().to_string());
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let mut mapper = Mapper {
            device_name,
            client: Arc::downgrade(&self.inner),
            folder: folder.clone(),
            root: dir,
            marker,
            paused: None,
            opened: None,
            index: index_map,
            feed_read: Default::default(),
            reported: HashSet::new(),
            unsaved: Vec::new(),
            replaced: Vec::new(),
            content_pending: false,
            retry: None,
            options,
        };
        if let Some(reason) = paused {
            // Told before this call returns, so a caller subscribed to events sees it.
            mapper.pause(reason);
        }
        let task = tokio::spawn(mapper.run(cmd_rx));
        let old = self
            .inner
            .mappings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(folder.clone(), MappingHandle { cmd, task });
        drop(old);
        Ok(record)
    }

    /// Stops the mapping of `folder` on this device and removes its mapping record. Local
    /// files are never deleted.
    pub async fn unmap_folder(&self, folder: &FolderId) -> Result<()> {
        let old = self
            .inner
            .mappings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(folder);
        drop(old);
        // The index stays with its directory (under the id in the directory's marker): mapping
        // that directory again carries on where this mapping stopped.
        let f = folder.clone();
        self.shared()
            .run_blobs(move |b| b.set_mapped_dir(&f, None))
            .await??;
        self.remove_mapping_record(folder).await
    }

    /// Runs a pass of the folder's mapping now (publish local changes, apply remote ones) and
    /// waits for it. Fails if the folder is not mapped on this device.
    pub async fn rescan(&self, folder: &FolderId) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        {
            let maps = self
                .inner
                .mappings
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let h = maps
                .get(folder)
                .ok_or_else(|| mesh_core::CoreError::NotFound {
                    kind: "mapping",
                    id: folder.to_string(),
                })?;
            h.cmd
                .send(Cmd::Rescan(tx))
                .map_err(|_| ClientError::Closed)?;
        }
        rx.await.map_err(|_| ClientError::Closed)?
    }
}
