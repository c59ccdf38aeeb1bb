//! The background sync engine: one task per remote.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use mesh_core::blob::ChunkHash;
use mesh_core::feedsync::MergeOutcome;
use mesh_core::id::{DeviceId, RemoteId, UserId};
use mesh_core::model::{names, Scope};
use mesh_core::store::Store;
use mesh_core::sync::{Request, SessionConfig, SessionEvent, Step, SyncReport, SyncSession};
use mesh_core::trust::PublicKey;
use mesh_core::CoreError;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{ClientError, Result};
use crate::shared::{Changed, SharedReplica};
use crate::sync::events::{ChangeKind, ChangeSource, Event};
use crate::sync::transfer::{self, Progress, UploadError};
use crate::transport::{Notification, Transport, TransportError};

/// Timing of a sync engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOptions {
    /// Entries per pull or push message.
    pub page_size: u32,
    /// First retry delay after a failure.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How often to sync when nothing announces a change (a fallback for remotes whose
    /// notifications were lost).
    pub poll_interval: Duration,
    /// Sync by itself on local writes, remote notifications and the poll interval. When off,
    /// the engine syncs only on `MeshClient::sync_now` (and retries failures).
    pub auto: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            page_size: 500,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            poll_interval: Duration::from_secs(60),
            auto: true,
        }
    }
}

enum Cmd {
    SyncNow(oneshot::Sender<Result<SyncReport>>),
}

/// A running engine, owned by the client.
pub(crate) struct EngineHandle {
    pub remote: RemoteId,
    pub transport: Arc<dyn Transport>,
    cmd: mpsc::UnboundedSender<Cmd>,
    task: JoinHandle<()>,
}

impl EngineHandle {
    /// Asks for a session now; the receiver completes when one has finished.
    pub fn request_sync(&self) -> Result<oneshot::Receiver<Result<SyncReport>>> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::SyncNow(tx))
            .map_err(|_| ClientError::Closed)?;
        Ok(rx)
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn spawn(
    shared: SharedReplica,
    events: broadcast::Sender<Event>,
    remote: RemoteId,
    transport: Arc<dyn Transport>,
    options: SyncOptions,
    identity: Identity,
) -> EngineHandle {
    let (cmd, cmd_rx) = mpsc::unbounded_channel();
    let engine = Engine {
        shared,
        events,
        remote: remote.clone(),
        transport: transport.clone(),
        options,
        online: None,
        membership_changed: false,
        known: transfer::KnownObjects::default(),
        identity,
        enrolled: false,
    };
    let task = tokio::spawn(engine.run(cmd_rx));
    EngineHandle {
        remote,
        transport,
        cmd,
        task,
    }
}

struct Engine {
    shared: SharedReplica,
    events: broadcast::Sender<Event>,
    remote: RemoteId,
    transport: Arc<dyn Transport>,
    options: SyncOptions,
    online: Option<bool>,
    /// Whether the running session changed a folder's members on either side.
    membership_changed: bool,
    /// Blob objects the remote is known to hold.
    known: transfer::KnownObjects,
    /// Who this device is, for enrollment.
    identity: Identity,
    /// Whether this device holds a current certificate from the remote's authority (or the
    /// remote has no authority).
    enrolled: bool,
}

/// This device as its engines enroll it with their remotes.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub user: UserId,
    pub device: DeviceId,
    pub key: PublicKey,
}

enum Failure {
    Transport(TransportError),
    Client(ClientError),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

impl From<CoreError> for Failure {
    fn from(e: CoreError) -> Self {
        Failure::Client(ClientError::Core(e))
    }
}

async fn next_notification(
    w: &mut Option<BoxStream<'static, Notification>>,
) -> Option<Notification> {
    match w {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

impl Engine {
    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn set_online(&mut self, on: bool) {
        if self.online != Some(on) {
            self.online = Some(on);
            let remote = self.remote.clone();
            self.emit(if on {
                Event::Online { remote }
            } else {
                Event::Offline { remote }
            });
        }
    }

    fn backoff(&self, failures: u32, hint: Option<Duration>) -> Duration {
        let exp = self
            .options
            .backoff_min
            .saturating_mul(1u32 << failures.min(16))
            .min(self.options.backoff_max);
        // Full jitter over the upper half, so that many clients do not retry in step.
        let half = exp / 2;
        let jitter = Duration::from_micros(fastrand::u64(0..=half.as_micros() as u64));
        (half + jitter).max(hint.unwrap_or_default())
    }

    async fn run(mut self, mut cmd_rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut local = self.shared.subscribe();
        let mut watch: Option<BoxStream<'static, Notification>> = None;
        let auto = self.options.auto;
        let mut dirty = auto;
        let mut failures = 0u32;
        let mut retry_at: Option<Instant> = None;
        let mut waiters: Vec<oneshot::Sender<Result<SyncReport>>> = Vec::new();
        loop {
            let due = retry_at.is_none_or(|t| Instant::now() >= t);
            if (dirty || !waiters.is_empty()) && due {
                dirty = false;
                if watch.is_none() {
                    watch = self.transport.watch().await.ok();
                }
                match self.sessions().await {
                    Ok(report) => {
                        failures = 0;
                        retry_at = None;
                        self.set_online(true);
                        for w in waiters.drain(..) {
                            let _ = w.send(Ok(report.clone()));
                        }
                    }
                    Err(f) => {
                        failures = failures.saturating_add(1);
                        let (error, retrying, hint) = match f {
                            Failure::Transport(e) => {
                                if matches!(e, TransportError::Offline(_) | TransportError::Timeout)
                                {
                                    self.set_online(false);
                                    watch = None;
                                }
                                (
                                    ClientError::Transport {
                                        remote: self.remote.to_string(),
                                        error: e.clone(),
                                    },
                                    e.is_retryable(),
                                    e.retry_after(),
                                )
                            }
                            Failure::Client(e) => (e, true, None),
                        };
                        tracing::warn!(remote = %self.remote, %error, "sync failed");
                        self.emit(Event::SyncError {
                            remote: self.remote.clone(),
                            error: error.to_string(),
                            retrying,
                        });
                        let delay = if retrying {
                            self.backoff(failures, hint)
                        } else {
                            self.options.backoff_max
                        };
                        retry_at = Some(Instant::now() + delay);
                        dirty = auto;
                        for w in waiters.drain(..) {
                            let _ = w.send(Err(ClientError::Transport {
                                remote: self.remote.to_string(),
                                error: TransportError::Server(error.to_string()),
                            }));
                        }
                    }
                }
                continue;
            }
            let wake = retry_at.unwrap_or_else(|| Instant::now() + self.options.poll_interval);
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    Some(Cmd::SyncNow(tx)) => {
                        waiters.push(tx);
                        retry_at = None;
                    }
                    None => return,
                },
                c = local.recv() => match c {
                    Ok(c) if c.via.as_ref() == Some(&self.remote) => {}
                    Ok(_) | Err(RecvError::Lagged(_)) => dirty |= auto,
                    Err(RecvError::Closed) => return,
                },
                n = next_notification(&mut watch) => match n {
                    Some(_) => dirty |= auto,
                    None => watch = None,
                },
                _ = tokio::time::sleep_until(wake) => dirty |= auto,
            }
        }
    }

    /// Runs sessions until one ends without a membership change: a change to a folder's
    /// members (an accepted invitation, say) can make more feeds readable or writable on the
    /// remote, which the next session then syncs. At most three sessions.
    /// Makes sure the remote's authority has certified this device's key before anything
    /// signed is pushed, once per engine run: the answer must come from the authority pinned
    /// on first contact (saved in the store), and renews the certificate.
    async fn enroll(&mut self) -> std::result::Result<(), Failure> {
        if self.enrolled {
            return Ok(());
        }
        let remote = self.remote.clone();
        let saved = self
            .shared
            .run(move |r| r.store().enrollment(&remote))
            .await??;
        let id = &self.identity;
        let answer = match self.transport.enroll(&id.device, &id.key).await {
            Ok(answer) => answer,
            // A remote without an authority (a client served directly) checks no signatures.
            Err(TransportError::Unsupported(_)) => {
                self.enrolled = true;
                return Ok(());
            }
            Err(e) => return Err(Failure::Transport(e)),
        };
        answer
            .check(
                &id.user,
                &id.device,
                &id.key,
                saved.as_ref().map(|e| &e.authority),
            )
            .map_err(|e| Failure::Client(e.into()))?;
        let remote = self.remote.clone();
        self.shared
            .run(move |r| r.store_mut().set_enrollment(&remote, &answer))
            .await??;
        self.enrolled = true;
        Ok(())
    }

    async fn sessions(&mut self) -> std::result::Result<SyncReport, Failure> {
        self.enroll().await?;
        let mut total = SyncReport::default();
        for _ in 0..3 {
            self.membership_changed = false;
            let r = self.session().await?;
            total.feeds += r.feeds;
            total.requests += r.requests;
            total.received += r.received;
            total.sent += r.sent;
            total.added += r.added;
            total.updated += r.updated;
            total.conflicts += r.conflicts;
            total.unchanged += r.unchanged;
            if !self.membership_changed {
                break;
            }
        }
        Ok(total)
    }

    async fn session(&mut self) -> std::result::Result<SyncReport, Failure> {
        let mut config = SessionConfig::new(self.remote.clone());
        config.page_size = self.options.page_size;
        let mut session = SyncSession::new(config);
        loop {
            let (s, step) = self
                .shared
                .run(move |r| {
                    let step = session.poll(r);
                    (session, step)
                })
                .await?;
            session = s;
            match step? {
                Step::Done(report) => {
                    let remote = self.remote.clone();
                    let pending = self
                        .shared
                        .run(move |r| pending(r.store(), &remote))
                        .await??;
                    self.emit(Event::SyncProgress {
                        remote: self.remote.clone(),
                        sent: report.sent,
                        received: report.received,
                        pending,
                        done: true,
                    });
                    return Ok(report);
                }
                Step::Send(request) => {
                    self.upload_blobs(&request).await?;
                    let response = self
                        .transport
                        .send(request)
                        .await
                        .map_err(Failure::Transport)?;
                    let (s, received) = self
                        .shared
                        .run(move |r| {
                            let evs = session.receive(r, response);
                            let heads = evs.as_ref().ok().and_then(|evs| {
                                let feed = match evs.first()? {
                                    SessionEvent::Merged { feed, .. } => feed.clone(),
                                    SessionEvent::Acknowledged { .. } => return None,
                                };
                                Some((r.store().head(&feed).ok()?, feed))
                            });
                            (session, evs.map(|e| (e, heads)))
                        })
                        .await?;
                    session = s;
                    let (evs, head) = received?;
                    self.report_events(evs, head);
                    let r = session.report();
                    self.emit(Event::SyncProgress {
                        remote: self.remote.clone(),
                        sent: r.sent,
                        received: r.received,
                        pending: 0,
                        done: false,
                    });
                }
            }
        }
    }

    /// Before pushing entries with media into a folder feed, uploads the blob objects the
    /// remote lacks, so that a device that receives an entry can always fetch its content.
    async fn upload_blobs(&self, request: &Request) -> std::result::Result<(), Failure> {
        let Request::Push { feed, entries, .. } = request else {
            return Ok(());
        };
        let Scope::Folder(folder) = &feed.scope else {
            return Ok(());
        };
        let mut manifests: Vec<ChunkHash> = Vec::new();
        for e in entries {
            for v in std::iter::once(&e.content).chain(e.conflicts.iter().map(|c| &c.content)) {
                if let Some(h) = v.media.as_ref().and_then(|m| m.hash.parse().ok()) {
                    manifests.push(h);
                }
            }
        }
        if manifests.is_empty() {
            return Ok(());
        }
        let progress = Progress {
            events: &self.events,
            remote: &self.remote,
            folder,
        };
        match transfer::upload(
            &self.shared,
            &self.transport,
            folder,
            manifests,
            &progress,
            &self.known,
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(UploadError::Transport(e)) => Err(Failure::Transport(e)),
            Err(UploadError::Client(e)) => Err(Failure::Client(e)),
        }
    }

    fn report_events(
        &mut self,
        evs: Vec<SessionEvent>,
        head: Option<(mesh_core::store::Cursor, mesh_core::model::FeedKey)>,
    ) {
        let mut changed = false;
        for e in evs {
            match e {
                SessionEvent::Merged { feed, report } => {
                    if report.outcome.changed() && feed.name.as_str() == names::MEMBERS {
                        self.membership_changed = true;
                    }
                    let kind = match report.outcome {
                        MergeOutcome::Unchanged => continue,
                        MergeOutcome::Conflict => ChangeKind::Conflict,
                        _ if report.deleted => ChangeKind::Deleted,
                        MergeOutcome::Added => ChangeKind::Added,
                        MergeOutcome::Updated => ChangeKind::Updated,
                    };
                    changed = true;
                    self.emit(Event::EntryChanged {
                        feed,
                        id: report.id,
                        kind,
                        source: ChangeSource::Remote(self.remote.clone()),
                    });
                }
                SessionEvent::Acknowledged { feed, result } => {
                    if result.outcome.changed() && feed.name.as_str() == names::MEMBERS {
                        self.membership_changed = true;
                    }
                    if let Some(reason) = result.refused {
                        self.emit(Event::Refused {
                            remote: self.remote.clone(),
                            feed,
                            id: result.id,
                            reason,
                        });
                    }
                }
            }
        }
        if let (true, Some((head, feed))) = (changed, head) {
            self.shared.notify(Changed {
                feed,
                head,
                via: Some(self.remote.clone()),
            });
        }
    }
}

/// Local changes not yet acknowledged by `remote` (counted up to a bound).
fn pending<S: Store>(store: &S, remote: &RemoteId) -> Result<u64> {
    let mut total = 0u64;
    for h in store.feeds()? {
        let st = store.sync_state(remote, &h.feed)?;
        if h.head > st.pushed {
            let page =
                store.changes_since(&h.feed, st.pushed, 10_000, st.remote_replica.as_ref())?;
            total += page.changes.len() as u64;
        }
    }
    Ok(total)
}
