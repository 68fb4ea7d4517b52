//! The accept loop: every connection is served by hyper with a deadline for its request
//! head (a client that sends nothing, or sends its headers a byte at a time, is let go),
//! and the number of open connections is capped. When the cap is reached, the oldest
//! connection that has not yet sent a whole request makes room for the new one, so idle
//! and slow clients cannot lock out real ones; only when every connection is busy is a
//! new one turned away.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The bounds of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// How long a connection may take to send a request head (and may stay idle between
    /// requests).
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// One open connection.
struct Slot {
    /// A whole request head has arrived on it.
    started: Arc<AtomicBool>,
    /// Cancelled to close it.
    evict: CancellationToken,
}

/// The open connections.
#[derive(Default)]
pub struct Connections {
    slots: Arc<Mutex<BTreeMap<u64, Slot>>>,
    tracker: TaskTracker,
    drain: CancellationToken,
}

impl Connections {
    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether one more connection may open: below the cap, or after closing the oldest
    /// one still waiting for its first request.
    fn make_room(&self, max: usize) -> bool {
        let mut slots = self.slots();
        if slots.len() < max {
            return true;
        }
        let idle = slots
            .iter()
            .find(|(_, s)| !s.started.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match idle {
            Some(id) => {
                if let Some(s) = slots.remove(&id) {
                    s.evict.cancel();
                }
                true
            }
            None => false,
        }
    }

    /// Asks every connection to finish the request it is serving and close, and waits
    /// for them (at most `grace`).
    pub async fn drain(self, grace: Duration) {
        self.drain.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(grace, self.tracker.wait()).await;
    }
}

/// Accepts connections on `listener` and serves `router` on them until `stop` resolves;
/// returns the connections still open.
pub async fn accept_until(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    stop: impl std::future::Future<Output = ()>,
) -> Connections {
    let conns = Connections::default();
    tokio::pin!(stop);
    let mut next = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or the like: let the others finish.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !conns.make_room(limits.max_connections) {
            tracing::warn!(
                "turned away a connection from {peer}: all {} are busy",
                limits.max_connections
            );
            continue;
        }
        let _ = stream.set_nodelay(true);
        next += 1;
        let id = next;
        let started = Arc::new(AtomicBool::new(false));
        let evict = CancellationToken::new();
        conns.slots().insert(
            id,
            Slot {
                started: started.clone(),
                evict: evict.clone(),
            },
        );
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                started.store(true, Ordering::Relaxed);
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                tower::ServiceExt::oneshot(router.clone(), req.map(axum::body::Body::new))
            });
        let drain = conns.drain.clone();
        let slots = conns.slots.clone();
        conns.tracker.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = evict.cancelled() => {}
                () = drain.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            slots.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        });
    }
    conns
}
