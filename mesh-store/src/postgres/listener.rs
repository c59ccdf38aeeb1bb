//! Notifications between the processes that serve one database: `LISTEN`/`NOTIFY` as a
//! wake-up hint; what changed is read back from the tables.

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::database::PgDatabase;
use super::migrations::pg;
use crate::error::{Result, StoreError};

/// The channel a commit announces each changed feed on (payload: `<head> <feed key>`, the
/// feed's new head as a decimal number); in a schema other than the default, the channel is
/// named after it too ([`PgDatabase::channel`]).
pub const CHANGES_CHANNEL: &str = "mesh_changes";

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgNotice {
    /// The channel (`mesh_changes`, or one a caller listens to).
    pub channel: String,
    /// What the sender put in it.
    pub payload: String,
}

/// A connection of its own that listens on channels. When it ends (the server went away),
/// [`recv`](Self::recv) returns `None`: notifications may have been missed, so the caller
/// reconnects and reads the current state again.
pub struct PgListener {
    rx: mpsc::Receiver<PgNotice>,
    task: tokio::task::JoinHandle<()>,
    /// Keeps the connection open (it closes when its last client is dropped).
    _client: tokio_postgres::Client,
}

impl std::fmt::Debug for PgListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgListener").finish_non_exhaustive()
    }
}

/// How many notifications may wait for the receiver; beyond it the listener ends (the
/// receiver then treats everything as changed), so a slow receiver never grows memory.
const BACKLOG: usize = 4096;

impl PgListener {
    /// Connects and listens on `channels` (plain lower-case names, checked; pass them through
    /// [`PgDatabase::channel`] to hear this schema's). The connection
    /// runs on the database's I/O thread; [`recv`](Self::recv) may be awaited on any runtime.
    pub fn listen(db: &PgDatabase, channels: &[&str]) -> Result<PgListener> {
        for c in channels {
            let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
            if c.is_empty() || c.len() > 63 || !c.bytes().all(plain) {
                return Err(StoreError::Config(format!("invalid channel name {c:?}")));
            }
        }
        let config = db.pg_config().clone();
        let sql: String = channels.iter().map(|c| format!("LISTEN {c};")).collect();
        db.run(async move {
            let (client, mut connection) = config
                .connect(NoTls)
                .await
                .map_err(pg("connecting the listener"))?;
            let (tx, rx) = mpsc::channel(BACKLOG);
            let task = tokio::spawn(async move {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(Ok(msg)) = messages.next().await {
                    if let AsyncMessage::Notification(n) = msg {
                        let notice = PgNotice {
                            channel: n.channel().to_owned(),
                            payload: n.payload().to_owned(),
                        };
                        if tx.try_send(notice).is_err() {
                            break;
                        }
                    }
                }
            });
            client.batch_execute(&sql).await.map_err(pg("listening"))?;
            Ok(PgListener {
                rx,
                task,
                _client: client,
            })
        })
    }

    /// The next notification; `None` once the connection ended (or the receiver fell more
    /// than a backlog behind).
    pub async fn recv(&mut self) -> Option<PgNotice> {
        self.rx.recv().await
    }
}

impl Drop for PgListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}
