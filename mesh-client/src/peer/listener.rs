//! Listening for peers: accepting connections, authenticating them, and serving the replica
//! through the guard as each peer's user.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mesh_core::blob::pack;
use mesh_core::ErrorCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::peer::frame::{self, MAX_FRAME};
use crate::peer::wire::{PeerRequest, PeerResponse, MAX_HASHES};
use crate::peer::{handshake, tls, PeerConfig, PeerError, PeerIdentity};
use crate::sync::events::Event;
use crate::transport::serve::ReplicaServer;
use crate::transport::TransportError;
use crate::MeshClient;

/// A device listening for peers. Serving stops when it is dropped (or
/// [closed](PeerListener::close)): the accept loop and every open connection end.
#[derive(Debug)]
pub struct PeerListener {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MeshClient {
    /// Listens for peers on `addr` (an address the application chooses; port 0 picks a free
    /// one, see [`PeerListener::local_addr`]) and serves this client's replica to every peer
    /// that authenticates with a certificate of the authority `config.trust` pins. Each peer
    /// is answered through the access guard as its own user, as a hub would answer it.
    pub async fn listen_peers(
        &self,
        addr: SocketAddr,
        config: PeerConfig,
    ) -> Result<PeerListener, PeerError> {
        // Every revocation the client learns (from its hubs, from other peers) holds here.
        self.inner.shared.trust().adopt(&config.trust);
        let keyring = Some(config.trust.keyring().clone());
        let server = ReplicaServer::new(self.inner.shared.clone(), keyring);
        PeerListener::bind(addr, server, config, self.inner.events.clone()).await
    }
}

impl PeerListener {
    async fn bind(
        addr: SocketAddr,
        server: ReplicaServer,
        config: PeerConfig,
        events: broadcast::Sender<Event>,
    ) -> Result<PeerListener, PeerError> {
        let acceptor = tls::acceptor()?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(
            listener,
            acceptor,
            Arc::new(config),
            server,
            events,
        ));
        Ok(PeerListener { addr, task })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and closes every peer connection.
    pub fn close(&self) {
        self.task.abort();
    }
}

impl Drop for PeerListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    config: Arc<PeerConfig>,
    server: ReplicaServer,
    events: broadcast::Sender<Event>,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    // Dropping the set (when the listener's task is aborted) aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (tcp, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait a little instead of spinning.
                tracing::warn!(error = %e, "peer listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("peer listener: connection limit reached, closing a new connection");
            continue;
        };
        let (acceptor, config, server) = (acceptor.clone(), config.clone(), server.clone());
        let events = events.clone();
        connections.spawn(async move {
            let r = serve_connection(tcp, from, &acceptor, &config, &server, &events).await;
            if let Err(e) = r {
                tracing::info!(error = %e, code = e.code(), "peer connection ended");
            }
            drop(slot);
        });
    }
}

async fn serve_connection(
    tcp: TcpStream,
    from: SocketAddr,
    acceptor: &TlsAcceptor,
    config: &PeerConfig,
    server: &ReplicaServer,
    events: &broadcast::Sender<Event>,
) -> Result<(), PeerError> {
    // Frames are small and answered at once: no waiting to coalesce them.
    tcp.set_nodelay(true)?;
    let opened = async {
        let (mut stream, exporter) = tls::accept(acceptor, tcp).await?;
        let peer = handshake::listening(&mut stream, config, &exporter).await?;
        Ok::<_, PeerError>((stream, peer))
    };
    let (stream, peer) = tokio::time::timeout(config.handshake_timeout, opened)
        .await
        .map_err(|_| PeerError::Timeout)??;
    tracing::debug!(user = %peer.user, device = %peer.device, "peer authenticated");
    let _ = events.send(Event::PeerConnected {
        user: peer.user.clone(),
        device: peer.device.clone(),
        addr: from,
    });
    // Reported when the connection ends, however it ends (the task aborted included).
    let _left = Left {
        events,
        event: Some(Event::PeerLeft {
            user: peer.user.clone(),
            device: peer.device.clone(),
            addr: from,
        }),
    };
    serve_requests(stream, config, server, &peer).await
}

/// Sends its event when dropped.
struct Left<'a> {
    events: &'a broadcast::Sender<Event>,
    event: Option<Event>,
}

impl Drop for Left<'_> {
    fn drop(&mut self) {
        if let Some(e) = self.event.take() {
            let _ = self.events.send(e);
        }
    }
}

async fn serve_requests<S: AsyncRead + AsyncWrite + Unpin + Send>(
    mut stream: S,
    config: &PeerConfig,
    server: &ReplicaServer,
    peer: &PeerIdentity,
) -> Result<(), PeerError> {
    loop {
        let next = frame::read::<_, PeerRequest>(
            &mut stream,
            MAX_FRAME,
            Some(config.idle_timeout),
            config.request_timeout,
        )
        .await;
        let (request, body) = match next {
            Ok(Some(r)) => r,
            Ok(None) | Err(PeerError::Timeout) => return Ok(()),
            Err(e) => return Err(e),
        };
        // A device revoked while connected is cut off at its next request, not only at its
        // next handshake.
        if config
            .trust
            .is_revoked(&peer.device, handshake::system_now())
        {
            return Err(PeerError::Revoked(peer.device.to_string()));
        }
        if matches!(request, PeerRequest::Watch) {
            return watch(stream, config, server, peer).await;
        }
        let (response, body) = answer(server, peer, request, body).await;
        write(&mut stream, config, &response, &body).await?;
    }
}

async fn write<W: AsyncWrite + Unpin>(
    w: &mut W,
    config: &PeerConfig,
    response: &PeerResponse,
    body: &[u8],
) -> Result<(), PeerError> {
    tokio::time::timeout(config.request_timeout, frame::write(w, response, body))
        .await
        .map_err(|_| PeerError::Timeout)?
}

/// Answers one request as the authenticated peer's user.
async fn answer(
    server: &ReplicaServer,
    peer: &PeerIdentity,
    request: PeerRequest,
    body: Vec<u8>,
) -> (PeerResponse, Vec<u8>) {
    let user = &peer.user;
    let outcome = match request {
        PeerRequest::Sync { request } => server
            .sync(user, request)
            .await
            .map(|response| (PeerResponse::Sync { response }, Vec::new())),
        PeerRequest::MissingObjects { folder } => match hashes(&body) {
            Ok(h) => server
                .missing_objects(user, &folder, &h)
                .await
                .map(|m| (PeerResponse::Missing, pack::encode_hashes(&m))),
            Err(e) => Err(e),
        },
        PeerRequest::PutObjects { folder } => match pack::decode(&body) {
            Ok(objects) => server
                .put_objects(user, &folder, objects)
                .await
                .map(|()| (PeerResponse::Stored, Vec::new())),
            Err(e) => Err(TransportError::Remote(e)),
        },
        PeerRequest::GetObjects { folder } => match hashes(&body) {
            Ok(h) => server.get_objects(user, &folder, &h).await.map(|objects| {
                let mut out = Vec::new();
                for (hash, data) in &objects {
                    pack::write_frame(&mut out, hash, data);
                }
                (PeerResponse::Objects, out)
            }),
            Err(e) => Err(e),
        },
        PeerRequest::Whoami => Ok((
            PeerResponse::Identity {
                user: peer.user.clone(),
                device: peer.device.clone(),
            },
            Vec::new(),
        )),
        // Handled by the caller; answered as a protocol error if it ever got here.
        PeerRequest::Watch => Err(TransportError::Protocol("watch".into())),
    };
    match outcome {
        Ok(answer) => answer,
        Err(e) => {
            let (code, message) = error_code(&e);
            (PeerResponse::Error { code, message }, Vec::new())
        }
    }
}

fn hashes(body: &[u8]) -> Result<Vec<mesh_core::blob::ChunkHash>, TransportError> {
    if body.len() > MAX_HASHES * 32 {
        return Err(TransportError::Refused {
            code: ErrorCode::LimitExceeded.as_str().into(),
            message: format!("at most {MAX_HASHES} hashes per request"),
        });
    }
    pack::decode_hashes(body).map_err(TransportError::Remote)
}

/// The stable code and message a refused request is answered with.
fn error_code(e: &TransportError) -> (String, String) {
    match e {
        TransportError::Remote(c) => (c.code().as_str().to_string(), c.to_string()),
        TransportError::Refused { code, message } => (code.clone(), message.clone()),
        TransportError::Protocol(m) => ("protocol".into(), m.clone()),
        other => ("internal".into(), other.to_string()),
    }
}

/// Streams the notifications `peer` may read until either side closes.
async fn watch<S>(
    stream: S,
    config: &PeerConfig,
    server: &ReplicaServer,
    peer: &PeerIdentity,
) -> Result<(), PeerError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut notifications = server.watch(&peer.user);
    let (mut rd, mut wr) = tokio::io::split(stream);
    write(&mut wr, config, &PeerResponse::Watching, &[]).await?;
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            n = notifications.next() => match n {
                Some(notification) => {
                    // A device revoked while watching hears nothing more.
                    if config.trust.is_revoked(&peer.device, handshake::system_now()) {
                        return Err(PeerError::Revoked(peer.device.to_string()));
                    }
                    let message = PeerResponse::Notification { notification };
                    write(&mut wr, config, &message, &[]).await?;
                }
                None => return Ok(()),
            },
            // The peer sends nothing more on a watching connection: any byte, or the end of
            // the stream, ends it.
            _ = rd.read(&mut probe) => return Ok(()),
        }
    }
}
