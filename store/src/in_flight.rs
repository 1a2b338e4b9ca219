//! Requests a member is answering right now, counted on every listener, so
//! that shutdown waits only for those: an idle connection (the agent's own
//! client, a keepalive connection of a peer) is cut at once, a request in
//! flight gets [`crate::SHUTDOWN_GRACE`] to finish. A request counts from its
//! arrival until its response body has been sent (or dropped), so an answer
//! is never cut halfway. The etcd API's long-lived streams (watches, lease
//! keepalives) are not requests waiting for an answer and are not counted:
//! like etcd, a stopping member ends them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::sync::Notify;

/// The count, shared by a member's servers.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    fn enter(self: &Arc<Self>) -> Guard {
        self.count.fetch_add(1, Ordering::SeqCst);
        Guard(self.clone())
    }

    /// Returns once no request is in flight.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One request in flight; dropping it ends the request.
struct Guard(Arc<InFlight>);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The tower layer that counts every request of a server.
#[derive(Clone, Debug)]
pub(crate) struct CountInFlight(pub(crate) Arc<InFlight>);

impl<S> tower::Layer<S> for CountInFlight {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            in_flight: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Counted<S> {
    inner: S,
    in_flight: Arc<InFlight>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Calls that last as long as the client wants (gRPC methods and gateway paths).
const LONG_LIVED: [&str; 4] = [
    "/etcdserverpb.Watch/Watch",
    "/etcdserverpb.Lease/LeaseKeepAlive",
    // The JSON gateway's watch stream (see `gateway`).
    "/v3/watch",
    "/v3beta/watch",
];

impl<S, ReqBody, B> tower::Service<http::Request<ReqBody>> for Counted<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<CountedBody<B>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let guard = (!LONG_LIVED.contains(&req.uri().path())).then(|| self.in_flight.enter());
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| CountedBody { body, guard }))
        })
    }
}

/// A response body that ends its request once it has been sent.
pub(crate) struct CountedBody<B> {
    body: B,
    guard: Option<Guard>,
}

impl<B: http_body::Body + Unpin> http_body::Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
