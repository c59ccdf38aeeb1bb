//! Connecting to a peer: the [`Transport`] a client is given to sync with a listening device.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use mesh_core::blob::{pack, ChunkHash};
use mesh_core::id::FolderId;
use mesh_core::sync::{Request, Response};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::peer::frame::{self, MAX_FRAME};
use crate::peer::wire::{PeerRequest, PeerResponse, MAX_HASHES, PUT_BATCH};
use crate::peer::{handshake, tls, PeerConfig, PeerError, PeerIdentity};
use crate::transport::{core_error, Identity, Notification, Relayer, Transport, TransportError};

/// A transport to a device listening for peers (see
/// [`MeshClient::listen_peers`](crate::MeshClient::listen_peers)). It connects when first
/// used, authenticates both sides (see [`crate::peer`]), and keeps the connection for the
/// next requests, one at a time; a broken connection is reopened on the next request.
///
/// A peer has no authority: [`Transport::enroll`] is unsupported, and the engine pushes the
/// versions this device signed, which the listener verifies against its keyring.
pub struct PeerTransport {
    addr: SocketAddr,
    config: Arc<PeerConfig>,
    connector: TlsConnector,
    conn: tokio::sync::Mutex<Option<Connection>>,
    /// Who the first connection proved the peer to be: every later connection must be the
    /// same user and device, so that what a session receives is judged as one peer's word.
    pinned: std::sync::Mutex<Option<PeerIdentity>>,
}

struct Connection {
    stream: TlsStream<TcpStream>,
    peer: PeerIdentity,
}

impl std::fmt::Debug for PeerTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTransport")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl PeerTransport {
    /// A transport to the peer listening at `addr`, authenticating with `config`.
    pub fn new(addr: SocketAddr, config: PeerConfig) -> Result<Self, PeerError> {
        Ok(PeerTransport {
            addr,
            config: Arc::new(config),
            connector: tls::connector()?,
            conn: tokio::sync::Mutex::new(None),
            pinned: std::sync::Mutex::new(None),
        })
    }

    /// Connects (if not connected) and returns who the peer proved to be: the handshake's
    /// typed refusal if either side does not accept the other.
    pub async fn connect(&self) -> Result<PeerIdentity, PeerError> {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            *conn = Some(self.open().await?);
        }
        let peer = conn.as_ref().map(|c| c.peer.clone());
        peer.ok_or_else(|| PeerError::Io("not connected".into()))
    }

    /// Opens and authenticates a new connection, within the handshake timeout.
    async fn open(&self) -> Result<Connection, PeerError> {
        let opening = async {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let (mut stream, exporter) = tls::connect(&self.connector, tcp).await?;
            let peer = handshake::connecting(&mut stream, &self.config, &exporter).await?;
            Ok::<_, PeerError>(Connection { stream, peer })
        };
        let conn = tokio::time::timeout(self.config.handshake_timeout, opening)
            .await
            .map_err(|_| PeerError::Timeout)??;
        self.pin(&conn.peer)?;
        Ok(conn)
    }

    /// Pins the first identity the peer proved; refuses a connection that proves another.
    fn pin(&self, peer: &PeerIdentity) -> Result<(), PeerError> {
        let mut pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        match &*pinned {
            Some(p) if p.user != peer.user || p.device != peer.device => {
                Err(PeerError::Untrusted(format!(
                    "the peer at {} was device {} of user {}, it now proves to be device {} of \
                     user {}",
                    self.addr, p.device, p.user, peer.device, peer.user
                )))
            }
            Some(_) => Ok(()),
            None => {
                *pinned = Some(peer.clone());
                Ok(())
            }
        }
    }

    /// Sends one request and reads its answer; a connection that fails is dropped. A request
    /// on a reused connection that turns out closed is sent once more on a new one.
    async fn call(
        &self,
        request: &PeerRequest,
        body: &[u8],
    ) -> Result<(PeerResponse, Vec<u8>), TransportError> {
        let mut conn = self.conn.lock().await;
        for attempt in 0..2 {
            let reused = conn.is_some();
            if !reused {
                *conn = Some(self.open().await?);
            }
            let Some(c) = conn.as_mut() else {
                continue;
            };
            // A peer revoked since the handshake (the client learned it from its hub or
            // another peer) is not asked anything more.
            if self
                .config
                .trust
                .is_revoked(&c.peer.device, handshake::system_now())
            {
                let device = c.peer.device.to_string();
                *conn = None;
                return Err(PeerError::Revoked(device).into());
            }
            match self.exchange(&mut c.stream, request, body).await {
                Ok(answer) => return answer_error(answer),
                Err(e) => {
                    *conn = None;
                    if !(reused && attempt == 0 && matches!(e, PeerError::Io(_))) {
                        return Err(e.into());
                    }
                }
            }
        }
        Err(TransportError::Offline(
            "the peer closed the connection".into(),
        ))
    }

    async fn exchange(
        &self,
        stream: &mut TlsStream<TcpStream>,
        request: &PeerRequest,
        body: &[u8],
    ) -> Result<(PeerResponse, Vec<u8>), PeerError> {
        let t = self.config.request_timeout;
        tokio::time::timeout(t, frame::write(stream, request, body))
            .await
            .map_err(|_| PeerError::Timeout)??;
        match frame::read(stream, MAX_FRAME, Some(t), t).await? {
            Some(answer) => Ok(answer),
            None => Err(PeerError::Io("the peer closed the connection".into())),
        }
    }
}

/// Turns an error answer into the transport error it stands for.
fn answer_error(
    (response, body): (PeerResponse, Vec<u8>),
) -> Result<(PeerResponse, Vec<u8>), TransportError> {
    match response {
        PeerResponse::Error { code, message } => Err(match core_error(&code, message.clone()) {
            Some(e) => TransportError::Remote(e),
            None => TransportError::Refused { code, message },
        }),
        other => Ok((other, body)),
    }
}

fn unexpected(what: &str, got: &PeerResponse) -> TransportError {
    TransportError::Protocol(format!("expected {what}, the peer answered {got:?}"))
}

#[async_trait]
impl Transport for PeerTransport {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        match self.call(&PeerRequest::Sync { request }, &[]).await? {
            (PeerResponse::Sync { response }, _) => Ok(response),
            (other, _) => Err(unexpected("a sync response", &other)),
        }
    }

    async fn watch(&self) -> Result<BoxStream<'static, Notification>, TransportError> {
        // A connection of its own: it carries nothing but notifications from now on.
        let mut c = self.open().await?;
        let t = self.config.request_timeout;
        match self.exchange(&mut c.stream, &PeerRequest::Watch, &[]).await {
            Ok((PeerResponse::Watching, _)) => {}
            Ok(answer) => {
                let (other, _) = answer_error(answer)?;
                return Err(unexpected("watching", &other));
            }
            Err(e) => return Err(e.into()),
        }
        let s = stream::unfold(c.stream, move |mut s| async move {
            loop {
                match frame::read::<_, PeerResponse>(&mut s, MAX_FRAME, None, t).await {
                    Ok(Some((PeerResponse::Notification { notification }, _))) => {
                        return Some((notification, s))
                    }
                    // Anything else on a watching connection is skipped (a newer peer's
                    // message kind).
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => return None,
                }
            }
        });
        Ok(s.boxed())
    }

    fn describe(&self) -> String {
        format!("peer at {}", self.addr)
    }

    fn is_direct(&self) -> bool {
        true
    }

    async fn relayer(&self) -> Result<Option<Relayer>, TransportError> {
        let peer = self.connect().await?;
        Ok(Some(Relayer {
            user: peer.user,
            trust: self.config.trust.clone(),
        }))
    }

    async fn whoami(&self) -> Result<Option<Identity>, TransportError> {
        match self.call(&PeerRequest::Whoami, &[]).await? {
            (PeerResponse::Identity { user, device }, _) => Ok(Some(Identity {
                user,
                device: Some(device),
            })),
            (other, _) => Err(unexpected("an identity", &other)),
        }
    }

    async fn missing_objects(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<ChunkHash>, TransportError> {
        let mut missing = Vec::new();
        for batch in hashes.chunks(MAX_HASHES) {
            let request = PeerRequest::MissingObjects {
                folder: folder.clone(),
            };
            match self.call(&request, &pack::encode_hashes(batch)).await? {
                (PeerResponse::Missing, body) => missing.extend(
                    pack::decode_hashes(&body)
                        .map_err(|e| TransportError::Protocol(e.to_string()))?,
                ),
                (other, _) => return Err(unexpected("missing hashes", &other)),
            }
        }
        Ok(missing)
    }

    async fn put_objects(
        &self,
        folder: &FolderId,
        objects: Vec<(ChunkHash, Vec<u8>)>,
    ) -> Result<(), TransportError> {
        let mut batch = Vec::new();
        let mut count = 0;
        for (i, (hash, data)) in objects.iter().enumerate() {
            pack::write_frame(&mut batch, hash, data);
            count += 1;
            let last = i + 1 == objects.len();
            if last || batch.len() >= PUT_BATCH || count == MAX_HASHES {
                let request = PeerRequest::PutObjects {
                    folder: folder.clone(),
                };
                match self.call(&request, &batch).await? {
                    (PeerResponse::Stored, _) => {}
                    (other, _) => return Err(unexpected("stored", &other)),
                }
                batch.clear();
                count = 0;
            }
        }
        Ok(())
    }

    async fn get_objects(
        &self,
        folder: &FolderId,
        hashes: &[ChunkHash],
    ) -> Result<Vec<(ChunkHash, Vec<u8>)>, TransportError> {
        // The answer may be a prefix: asking for at most MAX_HASHES keeps to the contract.
        let asked = &hashes[..hashes.len().min(MAX_HASHES)];
        let request = PeerRequest::GetObjects {
            folder: folder.clone(),
        };
        match self.call(&request, &pack::encode_hashes(asked)).await? {
            (PeerResponse::Objects, body) => {
                let objects =
                    pack::decode(&body).map_err(|e| TransportError::Protocol(e.to_string()))?;
                // Only what was asked, in order: anything else is a misbehaving peer.
                let mut next = asked.iter();
                for (hash, _) in &objects {
                    if !next.any(|h| h == hash) {
                        return Err(TransportError::Protocol(format!(
                            "the peer sent object {hash}, not asked for or out of order"
                        )));
                    }
                }
                Ok(objects)
            }
            (other, _) => Err(unexpected("objects", &other)),
        }
    }
}
