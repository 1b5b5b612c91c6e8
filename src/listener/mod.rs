//! The accept side of every listener (gRPC, `/healthz`, metrics, OIDC): one accept loop with
//! a connection cap and a back-off when `accept` fails, the TLS handshake deadline, the
//! HTTP/1 header deadline, and the gRPC connection wrapper that closes connections which send
//! no request in time or sit idle; and the TLS settings of each listener ([`tls`]). What an
//! unauthenticated peer can make a listener hold is decided here.
//!
//! What a peer can hold, per listener:
//! - connections: at most `max_connections` open at once; a connection over the cap is
//!   closed as soon as it is accepted (it never waits in a queue holding a socket);
//! - time: the TLS handshake and the first request's headers within `header_timeout`; an
//!   HTTP/1 connection gets `header_timeout` for every request's headers (idle keep-alive
//!   included); a gRPC connection with no request in flight is closed after `idle_timeout`;
//! - bytes (gRPC): see [`budget`], charged before a message is decoded.
//!
//! `accept` failures (EMFILE, ENFILE, ENOBUFS) are logged and retried after a pause that
//! doubles from 10 ms to 1 s, so a full file table costs one log line a second, not a core.

pub mod budget;
pub mod tls;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

/// First pause after a failed `accept`.
const BACKOFF_START: Duration = Duration::from_millis(10);
/// Longest pause between failed `accept`s.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Largest HTTP/1 request head (line + headers) read into memory.
const MAX_HTTP1_HEAD: usize = 16 * 1024;

/// The limits of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// Time for the TLS handshake, and for the headers of a request (for gRPC: of the first
    /// request on a connection).
    pub header_timeout: Duration,
    /// gRPC: a connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
}

/// The pause before retrying a failed `accept`: 10 ms, doubling to 1 s, back to 10 ms after
/// a success.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: BACKOFF_START,
        }
    }
}

impl Backoff {
    /// An accept failed: how long to wait before the next one.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        wait
    }

    /// An accept succeeded.
    pub fn succeeded(&mut self) {
        self.next = BACKOFF_START;
    }
}

/// A source of connections: a TCP listener, or a scripted one in tests.
pub trait Accept: Send + 'static {
    /// The connection type.
    type Io: Send + 'static;
    /// Waits for the next connection.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
}

impl Accept for TcpListener {
    type Io = TcpStream;
    fn accept(&self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send {
        TcpListener::accept(self)
    }
}

/// One of the `max_connections` slots of a listener, held for as long as the connection is
/// open.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

/// Runs the accept loop of listener `name` until `shutdown`: every accepted connection with
/// a free slot is handed to `handle` on its own task; one over the cap is closed at once.
pub fn spawn_accept_loop<A, F, Fut>(
    name: &'static str,
    incoming: A,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
    handle: F,
) -> tokio::task::JoinHandle<()>
where
    A: Accept,
    F: Fn(A::Io, SocketAddr, Slot) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(max_connections));
        let mut backoff = Backoff::default();
        loop {
            let accepted = tokio::select! {
                r = incoming.accept() => r,
                _ = shutdown.changed() => return,
            };
            match accepted {
                Ok((io, peer)) => {
                    backoff.succeeded();
                    match slots.clone().try_acquire_owned() {
                        Ok(permit) => {
                            tokio::spawn(handle(io, peer, Slot(permit)));
                        }
                        Err(_) => {
                            // Dropping the socket closes it: a peer over the cap learns at
                            // once instead of holding a socket in a queue.
                            tracing::debug!(listener = name, %peer, max_connections, "connection cap reached; closing the new connection");
                            drop(io);
                        }
                    }
                }
                Err(e) => {
                    let wait = backoff.failed();
                    tracing::warn!(listener = name, error = %e, retry_in_ms = wait.as_millis() as u64, "accept failed; backing off");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    })
}

/// The TLS handshake on `tcp`, within `timeout`; `None` (logged) when it fails or is late.
pub async fn tls_handshake(
    name: &'static str,
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(listener = name, %peer, "TLS handshake timed out");
            None
        }
    }
}

/// Serves HTTP/1.1 on `io` with the header deadline in force: hyper only enforces
/// `header_read_timeout` when a timer is set, which is why every HTTP listener goes
/// through here. The deadline runs from the moment hyper waits for a request head, so it
/// also ends idle keep-alive connections.
pub async fn serve_http1<I, S, B>(
    io: I,
    service: S,
    header_timeout: Duration,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
            Error = std::convert::Infallible,
        > + Send,
    S::Future: Send,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HTTP1_HEAD.max(8192));
    builder
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await
}

/// What a gRPC connection shares with the requests on it: how many are in flight, since
/// when it has been idle, and its share of the request byte budget.
#[derive(Debug)]
pub struct ConnectionState {
    in_flight: Mutex<InFlightState>,
    /// The connection's share of the request byte budget.
    pub budget: Arc<budget::Pool>,
}

#[derive(Debug)]
struct InFlightState {
    requests: usize,
    /// When the connection last became idle (accept time before the first request).
    idle_since: Instant,
    /// Whether a request has started on this connection.
    any: bool,
}

impl ConnectionState {
    fn new(per_connection_budget: usize) -> Self {
        Self {
            in_flight: Mutex::new(InFlightState {
                requests: 0,
                idle_since: Instant::now(),
                any: false,
            }),
            budget: Arc::new(budget::Pool::new(per_connection_budget, None)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InFlightState> {
        // The state stays consistent even if a holder panicked: plain counters.
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the connection should be closed if nothing starts before: `None` while a request
    /// is in flight.
    fn close_at(&self, limits: &Limits) -> Option<Instant> {
        let s = self.lock();
        if s.requests > 0 {
            return None;
        }
        Some(
            s.idle_since
                + if s.any {
                    limits.idle_timeout
                } else {
                    limits.header_timeout
                },
        )
    }
}

/// Marks one request in flight on a connection for as long as it lives.
#[derive(Debug)]
pub struct InFlight(Arc<ConnectionState>);

impl InFlight {
    /// Counts a request that has started.
    pub fn start(state: Arc<ConnectionState>) -> Self {
        {
            let mut s = state.lock();
            s.requests += 1;
            s.any = true;
        }
        Self(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.requests = s.requests.saturating_sub(1);
        s.idle_since = Instant::now();
    }
}

/// What tonic puts in every request's extensions for a gRPC connection.
#[derive(Clone, Debug)]
pub struct GrpcConnectInfo {
    /// Addresses, as tonic gives them for plain TCP (what `Request::remote_addr` reads).
    pub tcp: tonic::transport::server::TcpConnectInfo,
    /// The connection's shared state.
    pub state: Arc<ConnectionState>,
}

/// A gRPC connection as tonic sees it: the TLS stream, its listener slot, and the deadline
/// that closes it when no request is in flight: `header_timeout` after accept until the
/// first request starts (a peer that completes TLS and then sends nothing, or only part of
/// its first HEADERS, holds nothing for long), then `idle_timeout` after the last request.
/// Closing is an end of stream on the read side: hyper then ends the connection.
pub struct GrpcConnection<T> {
    io: T,
    tcp: tonic::transport::server::TcpConnectInfo,
    state: Arc<ConnectionState>,
    limits: Limits,
    deadline: Pin<Box<Sleep>>,
    closed: bool,
    _slot: Slot,
}

impl<T> GrpcConnection<T> {
    /// Wraps an accepted (TLS) stream.
    pub fn new(
        io: T,
        tcp: tonic::transport::server::TcpConnectInfo,
        slot: Slot,
        limits: Limits,
        per_connection_budget: usize,
    ) -> Self {
        let state = Arc::new(ConnectionState::new(per_connection_budget));
        let first = Instant::now() + limits.header_timeout;
        Self {
            io,
            tcp,
            state,
            limits,
            deadline: Box::pin(tokio::time::sleep_until(first)),
            closed: false,
            _slot: slot,
        }
    }

    /// Whether the connection has outlived its deadline; re-arms the timer otherwise, so
    /// that the task is woken when it next may have.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return false;
            }
            match self.state.close_at(&self.limits) {
                Some(at) if at <= Instant::now() => return true,
                Some(at) => self.deadline.as_mut().reset(at),
                // Busy: look again one idle period from now.
                None => self
                    .deadline
                    .as_mut()
                    .reset(Instant::now() + self.limits.idle_timeout),
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GrpcConnection<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.closed || self.expired(cx) {
            if !self.closed {
                tracing::debug!(peer = ?self.tcp.remote_addr, "closing a gRPC connection with no request in time");
                self.closed = true;
            }
            // End of stream: hyper closes the connection.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GrpcConnection<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<T> tonic::transport::server::Connected for GrpcConnection<T> {
    type ConnectInfo = GrpcConnectInfo;
    fn connect_info(&self) -> GrpcConnectInfo {
        GrpcConnectInfo {
            tcp: self.tcp.clone(),
            state: self.state.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn backoff_doubles_to_one_second_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..9).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(10));
    }

    /// An acceptor whose every `accept` fails, as with EMFILE.
    struct AlwaysFails(Arc<AtomicUsize>);

    impl Accept for AlwaysFails {
        type Io = ();
        fn accept(&self) -> impl Future<Output = io::Result<((), SocketAddr)>> + Send {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Err(io::Error::from_raw_os_error(24)))
        }
    }

    #[tokio::test]
    async fn failing_accept_backs_off_instead_of_spinning() {
        let calls = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = watch::channel(false);
        let task = spawn_accept_loop("test", AlwaysFails(calls.clone()), 1, rx, |_, _, _| async {
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        let _ = tx.send(true);
        let _ = task.await;
        // 10+20+40+80+160+320 ms = 630 ms: seven attempts at most in 700 ms. A loop without
        // a pause makes millions.
        let n = calls.load(Ordering::SeqCst);
        assert!((2..=8).contains(&n), "{n} accept attempts in 700 ms");
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_dropped_at_once() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_tx, rx) = watch::channel(false);
        let (hold_tx, hold_rx) = watch::channel(());
        spawn_accept_loop("test", listener, 2, rx, move |tcp, _, slot| {
            let mut hold = hold_rx.clone();
            async move {
                let _keep = (tcp, slot);
                let _ = hold.changed().await;
            }
        });
        let a = TcpStream::connect(addr).await.expect("a");
        let b = TcpStream::connect(addr).await.expect("b");
        let mut c = TcpStream::connect(addr)
            .await
            .expect("c connects (the kernel accepts)");
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut byte))
            .await
            .expect("the third connection is closed at once");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        drop((a, b));
        let _ = hold_tx.send(());
    }
}
