//! Who may read which folder, cached for the notification streams: every stream checks each
//! changed feed against its user, and with many streams open those checks would otherwise
//! be one store read per stream per folder. The cache keeps each folder's roster (one read of
//! its members feed), drops it when the members or info feed changes, and holds at most
//! [`MAX_FOLDERS`] folders.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mesh_core::id::{FolderId, UserId};
use mesh_core::model::{names, FeedKey, Scope};
use mesh_core::sync::guard::Roster;

/// The most folders whose rosters are kept (all are dropped beyond it).
pub(crate) const MAX_FOLDERS: usize = 4096;

#[derive(Default)]
pub(crate) struct Readers {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    rosters: HashMap<FolderId, Arc<Roster>>,
    /// Bumped for a folder whenever its members change: a roster read before the bump is
    /// not kept.
    generation: HashMap<FolderId, u64>,
}

impl Readers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached answer for `user` and `feed`, and otherwise the generation a freshly read
    /// roster must be stored under.
    pub fn lookup(&self, user: &UserId, feed: &FeedKey) -> Result<bool, u64> {
        let Scope::Folder(folder) = &feed.scope else {
            return Ok(false);
        };
        let g = self.lock();
        match g.rosters.get(folder) {
            Some(r) => Ok(r.can_read(user, feed)),
            None => Err(g.generation.get(folder).copied().unwrap_or(0)),
        }
    }

    /// Keeps a roster read while the folder's generation was `generation`.
    pub fn store(&self, folder: &FolderId, generation: u64, roster: Roster) {
        let mut g = self.lock();
        if g.generation.get(folder).copied().unwrap_or(0) != generation {
            return;
        }
        if g.rosters.len() >= MAX_FOLDERS {
            g.rosters.clear();
        }
        g.rosters.insert(folder.clone(), Arc::new(roster));
    }

    /// A feed changed: a members feed makes its folder's roster stale, and so does its `info`
    /// feed (the folder's deletion is read from it).
    pub fn changed(&self, feed: &FeedKey) {
        let Scope::Folder(folder) = &feed.scope else {
            return;
        };
        if !matches!(feed.name.as_str(), names::MEMBERS | names::INFO) {
            return;
        }
        let mut g = self.lock();
        g.rosters.remove(folder);
        if g.generation.len() >= MAX_FOLDERS * 4 {
            // Forgetting generations could let a stale roster in: drop the rosters too.
            g.generation.clear();
            g.rosters.clear();
        }
        *g.generation.entry(folder.clone()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roster_read_before_a_members_change_is_not_kept() {
        let r = Readers::default();
        let feed: FeedKey = "folder:f/notes".parse().unwrap();
        let members: FeedKey = "folder:f/members".parse().unwrap();
        let ann: UserId = "ann".parse().unwrap();
        let g = r.lookup(&ann, &feed).unwrap_err();
        r.changed(&members);
        r.store(&"f".parse().unwrap(), g, Roster::default());
        assert!(r.lookup(&ann, &feed).is_err(), "stale roster dropped");
        let g = r.lookup(&ann, &feed).unwrap_err();
        r.store(&"f".parse().unwrap(), g, Roster::default());
        assert_eq!(
            r.lookup(&ann, &feed),
            Ok(false),
            "kept and answered from memory"
        );
        r.changed(&"folder:f/notes".parse().unwrap());
        assert!(
            r.lookup(&ann, &feed).is_ok(),
            "other feeds do not invalidate"
        );
        r.changed(&members);
        assert!(r.lookup(&ann, &feed).is_err());
    }
}
