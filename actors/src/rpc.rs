//! Internode RPC: length-prefixed rmp-serde frames over TCP.
//!
//! A connection starts with a mutual challenge-response on the cluster
//! secret (HMAC-SHA256 over both nonces), so neither side learns anything
//! from a peer without the secret, and a replayed handshake fails on the
//! fresh nonce. After it, frames carry `(id, body)`: requests are answered
//! out of order, so one connection per peer serves every concurrent caller.
//!
//! The message types are the caller's (the node's versioned enums); this
//! module moves them. Frames are named msgpack (`to_vec_named`) so that
//! fields can be added without breaking a rolling upgrade, and the
//! handshake carries [`PROTOCOL_VERSION`].
//!
//! Limits: frames up to [`MAX_FRAME`] bytes; at most [`MAX_IN_FLIGHT`]
//! requests in flight per connection (callers wait: back-pressure); a
//! request that gets no answer within the client's timeout fails with
//! [`RpcError::Timeout`] and the connection is kept.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Bumped when a message changes incompatibly.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 64 << 20;
/// Requests in flight per connection before callers wait.
pub const MAX_IN_FLIGHT: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

type HmacSha256 = Hmac<Sha256>;

/// Why a call failed; the text is what a consistency error names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    #[error("connection refused")]
    Refused,
    #[error("connect: {0}")]
    Connect(String),
    #[error("timeout")]
    Timeout,
    #[error("authentication failed")]
    Auth,
    #[error("connection closed")]
    Closed,
    #[error("protocol: {0}")]
    Protocol(String),
    /// The peer ran the request and it failed there.
    #[error("{0}")]
    Remote(String),
}

#[derive(Debug, Serialize, Deserialize)]
enum Handshake {
    Hello {
        version: u16,
        node: String,
        nonce: [u8; 32],
    },
    Challenge {
        version: u16,
        node: String,
        nonce: [u8; 32],
        proof: Vec<u8>,
    },
    Auth {
        proof: Vec<u8>,
    },
    Welcome,
}

#[derive(Debug, Serialize, Deserialize)]
struct RequestFrame<Q> {
    id: u64,
    body: Q,
}

#[derive(Debug, Serialize, Deserialize)]
struct ResponseFrame<P> {
    id: u64,
    body: Result<P, String>,
}

fn proof(secret: &[u8], role: &[u8], first: &[u8; 32], second: &[u8; 32]) -> Vec<u8> {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    mac.update(role);
    mac.update(first);
    mac.update(second);
    mac.finalize().into_bytes().to_vec()
}

fn verify(secret: &[u8], role: &[u8], first: &[u8; 32], second: &[u8; 32], tag: &[u8]) -> bool {
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(role);
    mac.update(first);
    mac.update(second);
    mac.verify_slice(tag).is_ok()
}

fn encode<T: Serialize>(value: &T) -> Result<bytes::Bytes, RpcError> {
    rmp_serde::to_vec_named(value)
        .map(bytes::Bytes::from)
        .map_err(|e| RpcError::Protocol(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcError> {
    rmp_serde::from_slice(bytes).map_err(|e| RpcError::Protocol(e.to_string()))
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

async fn next_frame(
    framed: &mut Framed<TcpStream, LengthDelimitedCodec>,
) -> Result<bytes::BytesMut, RpcError> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, framed.next()).await {
        Err(_) => Err(RpcError::Timeout),
        Ok(None) => Err(RpcError::Closed),
        Ok(Some(Err(e))) => Err(RpcError::Protocol(e.to_string())),
        Ok(Some(Ok(frame))) => Ok(frame),
    }
}

// ------------------------------------------------------------------ server

/// What a node does with the requests of its peers.
#[async_trait::async_trait]
pub trait Handler<Q, P>: Send + Sync + 'static {
    /// Answer one request from `peer` (its node id, authenticated).
    async fn handle(&self, peer: &str, request: Q) -> Result<P, String>;
}

/// Rejected connections (bad secret, bad protocol), for tests and metrics.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub rejected: AtomicU64,
    pub accepted: AtomicU64,
}

/// Serve `handler` on `listener` until the task is dropped.
pub async fn serve<Q, P, H>(
    listener: TcpListener,
    node: String,
    secret: Arc<[u8]>,
    handler: Arc<H>,
    stats: Arc<ServerStats>,
) where
    Q: DeserializeOwned + Send + 'static,
    P: Serialize + Send + 'static,
    H: Handler<Q, P>,
{
    loop {
        let (stream, address) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "rpc accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (node, secret, handler, stats) =
            (node.clone(), secret.clone(), handler.clone(), stats.clone());
        tokio::spawn(async move {
            let mut framed = Framed::new(stream, codec());
            let peer = match accept_handshake(&mut framed, &node, &secret).await {
                Ok(peer) => peer,
                Err(error) => {
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%address, %error, "rpc connection rejected");
                    return;
                }
            };
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%address, %peer, "rpc connection from peer");
            serve_connection::<Q, P, H>(framed, peer, handler).await;
        });
    }
}

async fn accept_handshake(
    framed: &mut Framed<TcpStream, LengthDelimitedCodec>,
    node: &str,
    secret: &[u8],
) -> Result<String, RpcError> {
    let Handshake::Hello {
        version,
        node: peer,
        nonce: client_nonce,
    } = decode(&next_frame(framed).await?)?
    else {
        return Err(RpcError::Protocol("expected hello".into()));
    };
    if version != PROTOCOL_VERSION {
        return Err(RpcError::Protocol(format!(
            "protocol version {version}, this node speaks {PROTOCOL_VERSION}"
        )));
    }
    let server_nonce: [u8; 32] = rand::random();
    let challenge = Handshake::Challenge {
        version: PROTOCOL_VERSION,
        node: node.to_string(),
        nonce: server_nonce,
        proof: proof(secret, b"server", &client_nonce, &server_nonce),
    };
    framed
        .send(encode(&challenge)?)
        .await
        .map_err(|e| RpcError::Protocol(e.to_string()))?;
    let Handshake::Auth { proof: tag } = decode(&next_frame(framed).await?)? else {
        return Err(RpcError::Protocol("expected auth".into()));
    };
    if !verify(secret, b"client", &server_nonce, &client_nonce, &tag) {
        return Err(RpcError::Auth);
    }
    framed
        .send(encode(&Handshake::Welcome)?)
        .await
        .map_err(|e| RpcError::Protocol(e.to_string()))?;
    Ok(peer)
}

async fn serve_connection<Q, P, H>(
    framed: Framed<TcpStream, LengthDelimitedCodec>,
    peer: String,
    handler: Arc<H>,
) where
    Q: DeserializeOwned + Send + 'static,
    P: Serialize + Send + 'static,
    H: Handler<Q, P>,
{
    let (mut sink, mut stream) = framed.split();
    let (replies, mut outgoing) = mpsc::channel::<bytes::Bytes>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if sink.send(frame).await.is_err() {
                break;
            }
        }
    });
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let peer: Arc<str> = peer.into();
    while let Some(Ok(frame)) = stream.next().await {
        let request: RequestFrame<Q> = match decode(&frame) {
            Ok(request) => request,
            Err(error) => {
                // Without an id there is nobody to answer: drop the connection.
                tracing::warn!(peer = %peer, %error, "undecodable rpc request");
                break;
            }
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (handler, replies, peer) = (handler.clone(), replies.clone(), peer.clone());
        tokio::spawn(async move {
            let body = handler.handle(&peer, request.body).await;
            let response = ResponseFrame {
                id: request.id,
                body,
            };
            if let Ok(frame) = encode(&response) {
                let _ = replies.send(frame).await;
            }
            drop(permit);
        });
    }
    drop(replies);
    let _ = writer.await;
}

// ------------------------------------------------------------------ client

type Pending<P> = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<P, String>>>>>;

struct Connection<P> {
    outgoing: mpsc::Sender<bytes::Bytes>,
    pending: Pending<P>,
    permits: Arc<Semaphore>,
    /// Set by the reader when the peer hangs up.
    closed: Arc<AtomicBool>,
}

impl<P> Connection<P> {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.outgoing.is_closed()
    }
}

/// Calls to peers, one reused connection per address.
pub struct Client<Q, P> {
    node: String,
    secret: Arc<[u8]>,
    timeout: Duration,
    connect_timeout: Duration,
    next_id: AtomicU64,
    connections: tokio::sync::Mutex<HashMap<SocketAddr, Arc<Connection<P>>>>,
    /// Connect from this address (the node's own), so that peers and
    /// firewalls see which node a connection comes from.
    local_ip: Option<std::net::IpAddr>,
    _request: PhantomData<fn(Q)>,
}

impl<Q, P> fmt::Debug for Client<Q, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("node", &self.node).finish()
    }
}

impl<Q, P> Client<Q, P>
where
    Q: Serialize + Send + 'static,
    P: DeserializeOwned + Send + 'static,
{
    pub fn new(node: String, secret: Arc<[u8]>, timeout: Duration) -> Client<Q, P> {
        Client {
            node,
            secret,
            timeout,
            connect_timeout: timeout.min(Duration::from_secs(2)),
            next_id: AtomicU64::new(1),
            connections: tokio::sync::Mutex::new(HashMap::new()),
            local_ip: None,
            _request: PhantomData,
        }
    }

    /// Open connections from `ip` (unspecified addresses are ignored).
    pub fn with_local_ip(mut self, ip: std::net::IpAddr) -> Client<Q, P> {
        self.local_ip = (!ip.is_unspecified()).then_some(ip);
        self
    }

    /// Send `request` to the node at `address` and wait for its answer.
    pub async fn call(&self, address: SocketAddr, request: Q) -> Result<P, RpcError> {
        self.call_with_timeout(address, request, self.timeout).await
    }

    pub async fn call_with_timeout(
        &self,
        address: SocketAddr,
        request: Q,
        timeout: Duration,
    ) -> Result<P, RpcError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let connection = tokio::time::timeout_at(deadline, self.connection(address))
            .await
            .map_err(|_| RpcError::Timeout)??;
        let permit = tokio::time::timeout_at(deadline, connection.permits.clone().acquire_owned())
            .await
            .map_err(|_| RpcError::Timeout)?
            .map_err(|_| RpcError::Closed)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        connection.pending.lock().insert(id, sender);
        if connection.is_closed() {
            connection.pending.lock().remove(&id);
            return Err(RpcError::Closed);
        }
        let frame = encode(&RequestFrame { id, body: request })?;
        if connection.outgoing.send(frame).await.is_err() {
            connection.pending.lock().remove(&id);
            return Err(RpcError::Closed);
        }
        let answer = tokio::time::timeout_at(deadline, receiver).await;
        drop(permit);
        match answer {
            Err(_) => {
                connection.pending.lock().remove(&id);
                Err(RpcError::Timeout)
            }
            Ok(Err(_)) => Err(RpcError::Closed),
            Ok(Ok(Ok(body))) => Ok(body),
            Ok(Ok(Err(remote))) => Err(RpcError::Remote(remote)),
        }
    }

    /// Forget the connection to `address` (the peer restarted, say).
    pub async fn disconnect(&self, address: SocketAddr) {
        self.connections.lock().await.remove(&address);
    }

    async fn connection(&self, address: SocketAddr) -> Result<Arc<Connection<P>>, RpcError> {
        let mut connections = self.connections.lock().await;
        if let Some(connection) = connections.get(&address) {
            if !connection.is_closed() {
                return Ok(connection.clone());
            }
        }
        let connection = Arc::new(self.connect(address).await?);
        connections.insert(address, connection.clone());
        Ok(connection)
    }

    async fn connect(&self, address: SocketAddr) -> Result<Connection<P>, RpcError> {
        let connecting = async {
            let socket = match address {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            if let Some(ip) = self.local_ip {
                socket.bind(SocketAddr::new(ip, 0))?;
            }
            socket.connect(address).await
        };
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Err(_) => return Err(RpcError::Timeout),
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(RpcError::Refused)
            }
            Ok(Err(error)) => return Err(RpcError::Connect(error.to_string())),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let mut framed = Framed::new(stream, codec());
        let client_nonce: [u8; 32] = rand::random();
        let hello = Handshake::Hello {
            version: PROTOCOL_VERSION,
            node: self.node.clone(),
            nonce: client_nonce,
        };
        framed
            .send(encode(&hello)?)
            .await
            .map_err(|e| RpcError::Connect(e.to_string()))?;
        let Handshake::Challenge {
            version,
            nonce: server_nonce,
            proof: tag,
            ..
        } = decode(&next_frame(&mut framed).await.map_err(|e| match e {
            // A server that hangs up on the hello does not know us.
            RpcError::Closed => RpcError::Auth,
            other => other,
        })?)?
        else {
            return Err(RpcError::Protocol("expected challenge".into()));
        };
        if version != PROTOCOL_VERSION {
            return Err(RpcError::Protocol(format!(
                "peer speaks protocol {version}"
            )));
        }
        if !verify(&self.secret, b"server", &client_nonce, &server_nonce, &tag) {
            return Err(RpcError::Auth);
        }
        let auth = Handshake::Auth {
            proof: proof(&self.secret, b"client", &server_nonce, &client_nonce),
        };
        framed
            .send(encode(&auth)?)
            .await
            .map_err(|e| RpcError::Connect(e.to_string()))?;
        match next_frame(&mut framed).await {
            Ok(frame) => match decode(&frame)? {
                Handshake::Welcome => {}
                _ => return Err(RpcError::Protocol("expected welcome".into())),
            },
            Err(RpcError::Closed) => return Err(RpcError::Auth),
            Err(error) => return Err(error),
        }
        let (mut sink, mut stream) = framed.split();
        let (outgoing, mut to_send) = mpsc::channel::<bytes::Bytes>(MAX_IN_FLIGHT);
        let pending: Pending<P> = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(async move {
            while let Some(frame) = to_send.recv().await {
                if sink.send(frame).await.is_err() {
                    break;
                }
            }
        });
        let reader_pending = pending.clone();
        let closed = Arc::new(AtomicBool::new(false));
        let reader_closed = closed.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                match decode::<ResponseFrame<P>>(&frame) {
                    Ok(response) => {
                        if let Some(waiter) = reader_pending.lock().remove(&response.id) {
                            let _ = waiter.send(response.body);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%address, %error, "undecodable rpc response");
                        break;
                    }
                }
            }
            // Mark the connection dead and wake every waiter with "closed".
            reader_closed.store(true, Ordering::Release);
            reader_pending.lock().clear();
        });
        Ok(Connection {
            outgoing,
            pending,
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            closed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    enum Request {
        Echo(String),
        Sleep(u64),
        Fail,
    }

    struct Echo;

    #[async_trait::async_trait]
    impl Handler<Request, String> for Echo {
        async fn handle(&self, peer: &str, request: Request) -> Result<String, String> {
            match request {
                Request::Echo(text) => Ok(format!("{peer}: {text}")),
                Request::Sleep(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok("slept".into())
                }
                Request::Fail => Err("it failed".into()),
            }
        }
    }

    async fn server(secret: &str) -> (SocketAddr, Arc<ServerStats>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let stats = Arc::new(ServerStats::default());
        let task = tokio::spawn(serve::<Request, String, Echo>(
            listener,
            "server".into(),
            secret.as_bytes().into(),
            Arc::new(Echo),
            stats.clone(),
        ));
        (address, stats, task)
    }

    fn client(secret: &str, timeout: Duration) -> Client<Request, String> {
        Client::new("client".into(), secret.as_bytes().into(), timeout)
    }

    #[tokio::test]
    async fn calls_are_answered_concurrently_over_one_connection() {
        let (address, stats, _task) = server("s3cret").await;
        let client = Arc::new(client("s3cret", Duration::from_secs(5)));
        let slow = {
            let client = client.clone();
            tokio::spawn(async move { client.call(address, Request::Sleep(300)).await })
        };
        // The fast call is not stuck behind the slow one.
        let started = std::time::Instant::now();
        let answer = client.call(address, Request::Echo("hi".into())).await;
        assert_eq!(answer, Ok("client: hi".to_string()));
        assert!(started.elapsed() < Duration::from_millis(250));
        assert_eq!(slow.await.expect("join"), Ok("slept".to_string()));
        assert_eq!(
            client.call(address, Request::Fail).await,
            Err(RpcError::Remote("it failed".into()))
        );
        assert_eq!(
            stats.accepted.load(Ordering::Relaxed),
            1,
            "one reused connection"
        );
    }

    #[tokio::test]
    async fn a_wrong_secret_is_rejected_both_ways() {
        let (address, stats, _task) = server("right").await;
        let wrong = client("wrong", Duration::from_secs(5));
        assert_eq!(
            wrong.call(address, Request::Echo("x".into())).await,
            Err(RpcError::Auth)
        );
        // The client's proof fails at the server too (the server's proof
        // fails first at the client, which then hangs up).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while stats.rejected.load(Ordering::Relaxed) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "server never counted the rejection"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.accepted.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn timeouts_and_refused_connections_are_named() {
        let (address, _stats, task) = server("s").await;
        let client = client("s", Duration::from_millis(100));
        assert_eq!(
            client.call(address, Request::Sleep(1_000)).await,
            Err(RpcError::Timeout)
        );
        // The connection survives a timed-out call.
        assert_eq!(
            client.call(address, Request::Echo("again".into())).await,
            Ok("client: again".to_string())
        );
        task.abort();
        let _ = task.await;
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let nobody = closed.local_addr().expect("address");
        drop(closed);
        assert_eq!(
            client.call(nobody, Request::Echo("x".into())).await,
            Err(RpcError::Refused)
        );
        assert_eq!(RpcError::Refused.to_string(), "connection refused");
    }
}
