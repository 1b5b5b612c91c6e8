//! The gRPC request byte budget: what requests not yet answered may make the server hold,
//! charged before any of it is decoded.
//!
//! Every request is charged, from the moment its headers arrive until its response starts:
//! - [`REQUEST_OVERHEAD`] plus the size of its headers, when it arrives: tonic's 8 KiB
//!   decode buffer and the stream's own state (12,000 stalled streams cost 156 MiB before
//!   this budget existed: about 13 KiB each);
//! - the declared length of the message being received (plus its 5-byte prefix), as soon as
//!   the prefix has passed: tonic reserves that much at once. A length over the message
//!   limit is refused with RESOURCE_EXHAUSTED (grpc-go's answer and text) before tonic sees
//!   it. On a stream with several messages, the charge moves from one message to the next.
//!
//! A charge is taken from the connection's share first, then from the global budget; when
//! either is spent the request is answered RESOURCE_EXHAUSTED at once. Nothing waits, so a
//! refused stream holds nothing. The share keeps one connection (250 stalled streams, say)
//! from spending what every other caller needs; the global budget bounds them all.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper::body::{Body as HttpBody, Bytes, Frame, SizeHint};
use prometheus_client::metrics::gauge::Gauge;
use tonic::body::Body;
use tonic::Status;

use super::{GrpcConnectInfo, InFlight};

/// Charged for every request besides its headers and message: tonic's decode buffer (8 KiB)
/// and the stream's state in h2, hyper and tonic.
pub const REQUEST_OVERHEAD: usize = 16 * 1024;
/// Size of the gRPC message prefix (compressed flag, 4-byte length).
const PREFIX: usize = 5;
/// How many largest requests one connection may have buffered at once.
pub const CONNECTION_SHARE_REQUESTS: usize = 4;

/// A number of bytes that may be in use, shared by everyone who charges it.
#[derive(Debug)]
pub struct Pool {
    used: AtomicUsize,
    limit: usize,
    gauge: Option<Gauge>,
}

impl Pool {
    /// A pool of `limit` bytes, reported on `gauge` when given.
    pub fn new(limit: usize, gauge: Option<Gauge>) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
            gauge,
        }
    }

    /// Bytes in use now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn try_take(&self, n: usize) -> bool {
        let ok = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= self.limit)
            })
            .is_ok();
        if ok {
            if let Some(g) = &self.gauge {
                g.inc_by(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        ok
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        if let Some(g) = &self.gauge {
            g.dec_by(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// What one request holds of the connection share and of the global budget; given back
/// when dropped.
#[derive(Debug)]
struct Charge {
    global: Arc<Pool>,
    connection: Option<Arc<Pool>>,
    held: usize,
}

impl Charge {
    fn grow(&mut self, n: usize) -> Result<(), Status> {
        if let Some(c) = &self.connection {
            if !c.try_take(n) {
                return Err(Status::resource_exhausted(
                    "too many request bytes in flight on this connection; retry",
                ));
            }
        }
        if !self.global.try_take(n) {
            if let Some(c) = &self.connection {
                c.give(n);
            }
            return Err(Status::resource_exhausted(
                "too many request bytes in flight; retry",
            ));
        }
        self.held += n;
        Ok(())
    }

    fn shrink(&mut self, n: usize) {
        let n = n.min(self.held);
        if let Some(c) = &self.connection {
            c.give(n);
        }
        self.global.give(n);
        self.held -= n;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let n = self.held;
        self.shrink(n);
    }
}

type SharedCharge = Arc<Mutex<Charge>>;

fn lock(c: &SharedCharge) -> std::sync::MutexGuard<'_, Charge> {
    // A charge is plain counters: consistent even after a panic elsewhere.
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tower layer that charges every gRPC request; see the module docs.
#[derive(Clone, Debug)]
pub struct BudgetLayer {
    global: Arc<Pool>,
    max_message: usize,
}

impl BudgetLayer {
    /// Charges the `global` pool; messages over `max_message` bytes are refused.
    pub fn new(global: Arc<Pool>, max_message: usize) -> Self {
        Self {
            global,
            max_message,
        }
    }
}

impl<S> tower::Layer<S> for BudgetLayer {
    type Service = Budgeted<S>;
    fn layer(&self, inner: S) -> Budgeted<S> {
        Budgeted {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service behind [`BudgetLayer`].
#[derive(Clone, Debug)]
pub struct Budgeted<S> {
    inner: S,
    layer: BudgetLayer,
}

fn headers_size(req: &hyper::Request<Body>) -> usize {
    // HPACK's accounting: name + value + 32 per field.
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 32)
        .sum::<usize>()
        + req.uri().path().len()
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower::Service<hyper::Request<Body>> for Budgeted<S>
where
    S: tower::Service<hyper::Request<Body>, Response = hyper::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = hyper::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<hyper::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: hyper::Request<Body>) -> Self::Future {
        let info = req.extensions().get::<GrpcConnectInfo>().cloned();
        let in_flight = info.as_ref().map(|i| InFlight::start(i.state.clone()));
        if let Some(i) = &info {
            // What `tonic::Request::remote_addr` reads.
            req.extensions_mut().insert(i.tcp.clone());
        }
        let mut charge = Charge {
            global: self.layer.global.clone(),
            connection: info.map(|i| i.state.budget.clone()),
            held: 0,
        };
        if let Err(status) = charge.grow(REQUEST_OVERHEAD + headers_size(&req)) {
            tracing::debug!(
                reason = status.message(),
                "request refused by the byte budget"
            );
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        let charge = Arc::new(Mutex::new(charge));
        let max_message = self.layer.max_message;
        let body_charge = charge.clone();
        let req = req.map(|body| Body::new(MeteredBody::new(body, body_charge, max_message)));
        // Call the service that was made ready, leave a fresh clone for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = inner.call(req);
        Box::pin(async move {
            let response = fut.await;
            // The message has been decoded and answered: give its bytes back now. The
            // request is in flight until its response body ends.
            drop(charge);
            response.map(|r| r.map(|body| Body::new(TrackedBody { body, in_flight })))
        })
    }
}

/// A response body that keeps its request counted in flight until it ends.
struct TrackedBody {
    body: Body,
    #[allow(dead_code)]
    in_flight: Option<InFlight>,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = Status;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that charges each message's declared length as its prefix passes, and
/// refuses a message over the limit before it is buffered.
struct MeteredBody {
    body: Body,
    charge: SharedCharge,
    max_message: usize,
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
    /// What the current message is charged.
    message_charge: usize,
    failed: bool,
}

impl MeteredBody {
    fn new(body: Body, charge: SharedCharge, max_message: usize) -> Self {
        Self {
            body,
            charge,
            max_message,
            prefix: [0; PREFIX],
            prefix_len: 0,
            remaining: 0,
            message_charge: 0,
            failed: false,
        }
    }

    /// Follows the gRPC framing through `data`, charging each message as its prefix
    /// completes.
    fn scan(&mut self, data: &[u8]) -> Result<(), Status> {
        let mut i = 0;
        while i < data.len() {
            if self.remaining > 0 {
                let take = self.remaining.min(data.len() - i);
                self.remaining -= take;
                i += take;
                continue;
            }
            self.prefix[self.prefix_len] = data[i];
            self.prefix_len += 1;
            i += 1;
            if self.prefix_len < PREFIX {
                continue;
            }
            self.prefix_len = 0;
            let [_, a, b, c, d] = self.prefix;
            let len = u32::from_be_bytes([a, b, c, d]) as usize;
            if len > self.max_message {
                return Err(Status::resource_exhausted(format!(
                    "grpc: received message larger than max ({len} vs. {})",
                    self.max_message
                )));
            }
            let mut charge = lock(&self.charge);
            charge.shrink(self.message_charge);
            self.message_charge = 0;
            charge.grow(PREFIX + len)?;
            self.message_charge = PREFIX + len;
            self.remaining = len;
        }
        Ok(())
    }
}

impl HttpBody for MeteredBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            let data = data.clone();
            if let Err(status) = self.scan(&data) {
                self.failed = true;
                return Poll::Ready(Some(Err(status)));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_with(charge_limit: usize, max_message: usize) -> (MeteredBody, Arc<Pool>) {
        let global = Arc::new(Pool::new(charge_limit, None));
        let charge = Arc::new(Mutex::new(Charge {
            global: global.clone(),
            connection: None,
            held: 0,
        }));
        (MeteredBody::new(Body::empty(), charge, max_message), global)
    }

    fn framed(len: u32, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn the_declared_length_is_charged_when_the_prefix_passes() {
        let (mut b, global) = body_with(1 << 20, 1000);
        // The prefix split over two frames.
        let f = framed(600, &[1; 10]);
        b.scan(&f[..3]).expect("partial prefix");
        assert_eq!(global.used(), 0);
        b.scan(&f[3..]).expect("prefix done");
        assert_eq!(global.used(), 605);
        // The rest of the message, then a second message: the charge moves.
        b.scan(&[0; 590]).expect("rest");
        b.scan(&framed(100, &[])).expect("second message");
        assert_eq!(global.used(), 105);
        drop(b);
        assert_eq!(global.used(), 0, "everything is given back");
    }

    #[test]
    fn a_message_over_the_limit_is_resource_exhausted() {
        let (mut b, global) = body_with(1 << 20, 1000);
        let err = b.scan(&framed(1001, &[])).expect_err("over the limit");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            err.message(),
            "grpc: received message larger than max (1001 vs. 1000)"
        );
        assert_eq!(global.used(), 0);
    }

    #[test]
    fn a_message_over_the_budget_is_refused_and_the_connection_share_comes_first() {
        let global = Arc::new(Pool::new(10_000, None));
        let conn = Arc::new(Pool::new(1_000, None));
        let mut c = Charge {
            global: global.clone(),
            connection: Some(conn.clone()),
            held: 0,
        };
        c.grow(900).expect("fits");
        let err = c.grow(200).expect_err("over the connection share");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert_eq!((global.used(), conn.used()), (900, 900));
        drop(c);
        assert_eq!((global.used(), conn.used()), (0, 0));
    }
}
