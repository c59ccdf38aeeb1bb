//! Folders, their feeds, members, mappings and news; and this user's devices.

use mesh_core::error::CoreError;
use mesh_core::id::{EntryId, FeedName, FolderId, UserId};
use mesh_core::model::{
    names, Action, Device, Entry, EntryDraft, FeedInfo, FeedKey, Folder, FolderKind,
    InvitationState, Mapping, Member, NewsItem, NewsKind, Role, Scope,
};
use mesh_core::store::Store;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::MeshClient;
use crate::error::Result;

fn eid(s: &str) -> Result<EntryId> {
    Ok(s.parse()?)
}

fn decode<T: DeserializeOwned>(e: &Entry) -> Result<T> {
    Ok(e.content.content.decode()?)
}

impl MeshClient {
    /// Creates or updates a typed system record (a member, a mapping, a device…).
    pub(crate) async fn upsert<T: Serialize>(
        &self,
        feed: FeedKey,
        id: EntryId,
        title: String,
        value: &T,
    ) -> Result<Entry> {
        let draft = EntryDraft {
            title,
            content: mesh_core::content::JsonContent::from_serialize(value)?,
            media: None,
        };
        let (actor, now) = (self.actor().clone(), self.now());
        self.write_entry(feed, move |r, k| match r.get(k, &id)? {
            Some(_) => r.update(k, &id, draft, &actor, now),
            None => r.create(k, id, draft, &actor, now),
        })
        .await
    }

    async fn tombstone(&self, feed: FeedKey, id: EntryId) -> Result<Entry> {
        let (actor, now) = (self.actor().clone(), self.now());
        self.write_entry(feed, move |r, k| r.delete(k, &id, &actor, now))
            .await
    }

    async fn records<T: DeserializeOwned + Send + 'static>(&self, feed: FeedKey) -> Result<Vec<T>> {
        let entries = self
            .read(move |r| r.store().list(&feed, None, usize::MAX))
            .await?;
        entries
            .iter()
            .filter(|e| !e.is_deleted())
            .map(decode)
            .collect()
    }

    async fn news(
        &self,
        folder: &FolderId,
        kind: NewsKind,
        entry: Option<EntryId>,
        summary: String,
    ) -> Result<()> {
        let item = NewsItem {
            kind,
            actor: self.user().clone(),
            device: Some(self.device().clone()),
            folder: Some(folder.clone()),
            feed: None,
            entry,
            summary: summary.clone(),
            at: self.now(),
        };
        let id = super::entries::new_id()?;
        self.upsert(FeedKey::folder_news(folder), id, summary, &item)
            .await?;
        Ok(())
    }

    // ---- folders -------------------------------------------------------------------------

    /// Creates a folder owned by this user. `kind` says what it holds:
    /// [`FolderKind::Files`] for a tree of files that devices can map onto a directory,
    /// [`FolderKind::app`]`("<name>")` for an application's data (text kinds parse with
    /// `"app/todo".parse()?`, and a malformed one is an [`ErrorKind::InvalidInput`]).
    ///
    /// [`ErrorKind::InvalidInput`]: crate::ErrorKind::InvalidInput
    pub async fn create_folder(&self, name: &str, kind: FolderKind) -> Result<Folder> {
        // The id names its founder, so that hubs and peers accept the new folder.
        let id = FolderId::founded_by(&uuid::Uuid::new_v4().simple().to_string(), self.user())?;
        let folder = Folder {
            id: id.clone(),
            name: name.to_owned(),
            kind,
            created_by: self.user().clone(),
            created_at: self.now(),
        };
        let owner = Member {
            user: self.user().clone(),
            role: Role::Owner,
            state: InvitationState::Active,
            invited_by: self.user().clone(),
            invited_at: folder.created_at,
        };
        self.upsert(
            FeedKey::members(&id),
            eid(self.user().as_str())?,
            self.user().to_string(),
            &owner,
        )
        .await?;
        self.upsert(
            FeedKey::info(&id),
            eid(names::FOLDER_RECORD)?,
            name.to_owned(),
            &folder,
        )
        .await?;
        self.news(
            &id,
            NewsKind::FolderCreated,
            None,
            format!("{} created {name:?}", self.user()),
        )
        .await?;
        Ok(folder)
    }

    /// The folders this user is an active member of (whose record has arrived).
    pub async fn folders(&self) -> Result<Vec<Folder>> {
        let user = self.user().clone();
        let entries = self
            .read(move |r| {
                let mut out = Vec::new();
                for h in r.store().feeds()? {
                    if h.feed.name.as_str() != names::MEMBERS {
                        continue;
                    }
                    let Scope::Folder(f) = &h.feed.scope else {
                        continue;
                    };
                    let active = mesh_core::sync::guard::membership(r.store(), f, &user)?
                        .is_some_and(|m| m.effective_role().is_some());
                    if !active {
                        continue;
                    }
                    if let Some(e) = r.get(&FeedKey::info(f), &names::FOLDER_RECORD.parse()?)? {
                        if !e.is_deleted() {
                            out.push(e);
                        }
                    }
                }
                Ok(out)
            })
            .await?;
        let mut folders: Vec<Folder> = entries.iter().map(decode).collect::<Result<_>>()?;
        folders.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(folders)
    }

    /// One folder's record.
    pub async fn folder(&self, id: &FolderId) -> Result<Option<Folder>> {
        self.check(id, Action::Read).await?;
        let f = id.clone();
        let e = self
            .read(move |r| r.get(&FeedKey::info(&f), &names::FOLDER_RECORD.parse()?))
            .await?;
        e.filter(|e| !e.is_deleted())
            .as_ref()
            .map(decode)
            .transpose()
    }

    /// Deletes a folder (owners only): its record becomes a tombstone on every replica.
    pub async fn delete_folder(&self, id: &FolderId) -> Result<()> {
        self.check(id, Action::DeleteFolder).await?;
        self.tombstone(FeedKey::info(id), eid(names::FOLDER_RECORD)?)
            .await?;
        Ok(())
    }

    // ---- feeds ---------------------------------------------------------------------------

    /// Creates an application feed in a folder (Author role or more).
    pub async fn create_feed(
        &self,
        folder: &FolderId,
        name: FeedName,
        title: &str,
    ) -> Result<FeedName> {
        Self::app_feed(folder, &name)?;
        self.check(folder, Action::CreateEntry).await?;
        let info = FeedInfo {
            name: name.clone(),
            title: title.to_owned(),
            created_at: self.now(),
        };
        let (key, id) = (FeedKey::feeds(folder), eid(name.as_str())?);
        let (k, i) = (key.clone(), id.clone());
        if self
            .read(move |r| r.get(&k, &i))
            .await?
            .is_some_and(|e| !e.is_deleted())
        {
            return Err(CoreError::AlreadyExists {
                kind: "feed",
                id: name.to_string(),
            }
            .into());
        }
        self.upsert(key, id, title.to_owned(), &info).await?;
        Ok(name)
    }

    /// The application feeds of a folder.
    pub async fn feeds(&self, folder: &FolderId) -> Result<Vec<FeedInfo>> {
        self.check(folder, Action::Read).await?;
        self.records(FeedKey::feeds(folder)).await
    }

    // ---- members -------------------------------------------------------------------------

    /// Invites `user` into a folder with `role` (Full members invite up to Full; owners any).
    pub async fn invite(&self, folder: &FolderId, user: &UserId, role: Role) -> Result<Member> {
        self.check(folder, Action::Invite { role }).await?;
        let key = FeedKey::members(folder);
        let (k, i) = (key.clone(), eid(user.as_str())?);
        if self
            .read(move |r| r.get(&k, &i))
            .await?
            .is_some_and(|e| !e.is_deleted())
        {
            return Err(CoreError::AlreadyExists {
                kind: "member",
                id: user.to_string(),
            }
            .into());
        }
        let m = Member {
            user: user.clone(),
            role,
            state: InvitationState::Invited,
            invited_by: self.user().clone(),
            invited_at: self.now(),
        };
        self.upsert(key, eid(user.as_str())?, user.to_string(), &m)
            .await?;
        self.news(
            folder,
            NewsKind::MemberInvited,
            None,
            format!("{} invited {user} as {role}", self.user()),
        )
        .await?;
        Ok(m)
    }

    /// Folders this user has been invited to and not yet answered.
    pub async fn invitations(&self) -> Result<Vec<(FolderId, Member)>> {
        let user = self.user().clone();
        self.read(move |r| {
            let mut out = Vec::new();
            for h in r.store().feeds()? {
                if let (Scope::Folder(f), names::MEMBERS) = (&h.feed.scope, h.feed.name.as_str()) {
                    if let Some(m) = mesh_core::sync::guard::membership(r.store(), f, &user)? {
                        if m.state == InvitationState::Invited {
                            out.push((f.clone(), m));
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn answer(&self, folder: &FolderId, state: InvitationState) -> Result<Member> {
        let mut m = self
            .membership(folder)
            .await?
            .filter(|m| m.state == InvitationState::Invited)
            .ok_or_else(|| CoreError::NotFound {
                kind: "invitation to folder",
                id: folder.to_string(),
            })?;
        m.state = state;
        self.upsert(
            FeedKey::members(folder),
            eid(self.user().as_str())?,
            self.user().to_string(),
            &m,
        )
        .await?;
        Ok(m)
    }

    /// Accepts an invitation: the role comes into force.
    pub async fn accept(&self, folder: &FolderId) -> Result<Member> {
        let m = self.answer(folder, InvitationState::Active).await?;
        self.news(
            folder,
            NewsKind::MemberJoined,
            None,
            format!("{} joined as {}", self.user(), m.role),
        )
        .await?;
        Ok(m)
    }

    /// Declines an invitation.
    pub async fn decline(&self, folder: &FolderId) -> Result<Member> {
        self.answer(folder, InvitationState::Declined).await
    }

    /// A folder's members (active and invited).
    pub async fn members(&self, folder: &FolderId) -> Result<Vec<Member>> {
        if self.membership(folder).await?.is_none() {
            return Err(CoreError::NotFound {
                kind: "folder",
                id: folder.to_string(),
            }
            .into());
        }
        self.records(FeedKey::members(folder)).await
    }

    async fn other_owners(&self, folder: &FolderId, user: &UserId) -> Result<bool> {
        Ok(self.members(folder).await?.iter().any(|m| {
            &m.user != user && m.role == Role::Owner && m.state == InvitationState::Active
        }))
    }

    async fn member_record(&self, folder: &FolderId, user: &UserId) -> Result<Member> {
        self.members(folder)
            .await?
            .into_iter()
            .find(|m| &m.user == user)
            .ok_or_else(|| {
                CoreError::NotFound {
                    kind: "member",
                    id: user.to_string(),
                }
                .into()
            })
    }

    /// Changes a member's role (owners only). The last owner cannot be demoted.
    pub async fn set_role(&self, folder: &FolderId, user: &UserId, role: Role) -> Result<Member> {
        let me = self.role(folder).await?;
        mesh_core::model::authorize(self.user(), me, Action::Invite { role })?;
        if me != Some(Role::Owner) {
            return Err(CoreError::PermissionDenied(format!(
                "only owners change roles in {folder}"
            ))
            .into());
        }
        let mut m = self.member_record(folder, user).await?;
        if m.role == Role::Owner && role != Role::Owner && !self.other_owners(folder, user).await? {
            return Err(
                CoreError::PermissionDenied("a folder keeps at least one owner".into()).into(),
            );
        }
        m.role = role;
        self.upsert(
            FeedKey::members(folder),
            eid(user.as_str())?,
            user.to_string(),
            &m,
        )
        .await?;
        Ok(m)
    }

    /// Removes a member (owners), or leaves (anyone, for themselves). The last owner cannot
    /// leave.
    pub async fn remove_member(&self, folder: &FolderId, user: &UserId) -> Result<()> {
        if user == self.user() {
            self.check(folder, Action::Leave).await?;
        } else {
            self.check(folder, Action::ManageMember { target: user })
                .await?;
        }
        let m = self.member_record(folder, user).await?;
        if m.role == Role::Owner && !self.other_owners(folder, user).await? {
            return Err(
                CoreError::PermissionDenied("a folder keeps at least one owner".into()).into(),
            );
        }
        self.tombstone(FeedKey::members(folder), eid(user.as_str())?)
            .await?;
        self.news(folder, NewsKind::MemberLeft, None, format!("{user} left"))
            .await
    }

    // ---- mappings and news ---------------------------------------------------------------

    /// Records that this device replicates the folder (at `path`, for a folder of files)
    /// without syncing any directory: [`MeshClient::map_folder`] records and syncs.
    pub async fn record_mapping(&self, folder: &FolderId, path: Option<String>) -> Result<Mapping> {
        self.check(folder, Action::Map).await?;
        let m = Mapping {
            device: self.device().clone(),
            user: self.user().clone(),
            path,
            created_at: self.now(),
        };
        self.upsert(
            FeedKey::mappings(folder),
            eid(self.device().as_str())?,
            self.device().to_string(),
            &m,
        )
        .await?;
        Ok(m)
    }

    /// Removes this device's mapping record.
    pub(crate) async fn remove_mapping_record(&self, folder: &FolderId) -> Result<()> {
        self.check(folder, Action::Map).await?;
        self.tombstone(FeedKey::mappings(folder), eid(self.device().as_str())?)
            .await?;
        Ok(())
    }

    /// The devices that replicate a folder.
    pub async fn mappings(&self, folder: &FolderId) -> Result<Vec<Mapping>> {
        self.check(folder, Action::Read).await?;
        self.records(FeedKey::mappings(folder)).await
    }

    /// A folder's activity, newest first.
    pub async fn folder_news(&self, folder: &FolderId) -> Result<Vec<NewsItem>> {
        self.check(folder, Action::Read).await?;
        let mut items: Vec<NewsItem> = self.records(FeedKey::folder_news(folder)).await?;
        items.sort_by_key(|n| std::cmp::Reverse(n.at));
        Ok(items)
    }

    // ---- devices -------------------------------------------------------------------------

    pub(crate) async fn register_device(&self, name: String, kind: String) -> Result<Device> {
        let feed = FeedKey::devices(self.user());
        let (k, i) = (feed.clone(), eid(self.device().as_str())?);
        let existing = self.read(move |r| r.get(&k, &i)).await?;
        let mut device = match existing.filter(|e| !e.is_deleted()) {
            Some(e) => decode::<Device>(&e)?,
            None => Device {
                id: self.device().clone(),
                owner: self.user().clone(),
                name,
                kind,
                last_seen: None,
                online: true,
                addresses: Vec::new(),
            },
        };
        device.last_seen = Some(self.now());
        self.upsert(
            feed,
            eid(self.device().as_str())?,
            device.name.clone(),
            &device,
        )
        .await?;
        Ok(device)
    }

    /// This user's registered devices.
    pub async fn devices(&self) -> Result<Vec<Device>> {
        self.records(FeedKey::devices(self.user())).await
    }

    /// This device's own record.
    pub(crate) async fn own_device(&self) -> Result<Device> {
        Ok(self
            .devices()
            .await?
            .into_iter()
            .find(|d| &d.id == self.device())
            .ok_or_else(|| CoreError::NotFound {
                kind: "device",
                id: self.device().to_string(),
            })?)
    }

    /// Renames this device.
    pub async fn rename_device(&self, name: &str) -> Result<Device> {
        let mut d = self.own_device().await?;
        d.name = name.to_owned();
        self.upsert(
            FeedKey::devices(self.user()),
            eid(self.device().as_str())?,
            d.name.clone(),
            &d,
        )
        .await?;
        Ok(d)
    }
}
