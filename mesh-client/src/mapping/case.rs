//! Case-only differences between local names and the feed's.

use std::collections::BTreeMap;

use mesh_core::model::FilePath;

use super::scan::{self, LocalFile};
use super::{apply, Mapper};
use crate::error::{ClientError, Result};
use crate::sync::events::MappingEvent;

impl Mapper {
    /// Brings local names in line with remote case-only renames before a pass plans: where
    /// the feed names a path in another case than the local file (another device renamed
    /// `Foo.txt` to `foo.txt`, or created `Report.txt` while this one created `report.txt`),
    /// the local file is renamed to the feed's case — so the two meet as one path, and an edit
    /// on either side reaches the other. The pass then treats the file as usual: unchanged
    /// since it was synced, it takes the remote version; changed, both versions are kept (the
    /// local one as a conflict copy). A local case-only rename of the version the feed still
    /// holds is left alone: the pass publishes it.
    pub(super) async fn follow_case(
        &mut self,
        local: &mut BTreeMap<String, LocalFile>,
        remote: &super::remote::RemoteFiles,
        unknown: &[String],
    ) -> Result<()> {
        let mut moves: Vec<(String, FilePath, FilePath)> = Vec::new();
        for (key, l) in local.iter() {
            let Some((Some(meta), e)) = remote.get(key) else {
                continue;
            };
            if e.is_deleted() || l.path == meta.path || scan::is_unknown(unknown, key) {
                continue;
            }
            let i = self.index.get(key);
            // The feed still has the version this device last agreed on: the local name is
            // the newer one (published by the pass). When the feed changed too, its name wins
            // and the local content is kept as a conflict copy if it differs.
            if i.is_some_and(|i| i.path == meta.path && i.version == e.version()) {
                continue;
            }
            moves.push((key.clone(), l.path.clone(), meta.path.clone()));
        }
        if moves.is_empty() {
            return Ok(());
        }
        let root = self.opened()?;
        let done = tokio::task::spawn_blocking(move || apply::rename_cases(&root, moves))
            .await
            .map_err(|e| ClientError::Internal(e.to_string()))?;
        for (key, from, to, result) in done {
            match result {
                Ok(()) => {
                    // What was below a renamed directory moved with it.
                    let below = format!("{}/", from.as_str());
                    for l in local.values_mut() {
                        if l.path == from {
                            l.path = to.clone();
                        } else if let Some(rest) = l.path.as_str().strip_prefix(&below) {
                            if let Ok(p) = to.join(rest) {
                                l.path = p;
                            }
                        }
                    }
                    // Unchanged since it was synced stays so under its new name.
                    if let Some(mut rec) = self.index.get(&key).cloned() {
                        if rec.path == from {
                            rec.path = to.clone();
                            self.set_index(key, rec)?;
                        }
                    }
                    self.emit(MappingEvent::Applied {
                        path: to.to_string(),
                        deleted: false,
                    });
                }
                Err(reason) => self.report_once(
                    to.to_string(),
                    format!("differs only in case from the local {from}: {reason}"),
                    true,
                ),
            }
        }
        Ok(())
    }
}
