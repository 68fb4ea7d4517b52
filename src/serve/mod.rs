//! `prism serve`: the bulk-launch HTTP API on the same engine as the command line.
//!
//! Handlers parse a request and call the planner and the engine; the layers in
//! [`guard`] let no one in by accident (loopback, bearer token, Host and Origin checks,
//! no CORS, strict headers). Launches and their events are kept in the state
//! directory, so a restart finds them (a launch the stop cut short is `interrupted`
//! and can be resumed).

mod api;
pub mod api_token;
pub mod error;
pub mod guard;
mod launches;
pub mod listen;
pub mod metrics;
mod pages;
mod quotas;
pub mod sessions;
mod store;
mod workspaces;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::manifest::Manifest;
use error::ApiError;
use launches::{Launch, Registry};
use store::Store;

/// Request bodies larger than this are refused (413).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Requests served at once (event streams and `/healthz` aside); more are answered 503
/// with `Retry-After` at once rather than queued.
pub const IN_FLIGHT: usize = 64;

/// A request (event streams aside) that takes longer is answered 504.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Finds the engine for a manifest's account and region (one per region, shared by
/// every launch there), with the manifest's launch pacing.
#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    async fn engine(&self, manifest: &Manifest) -> Result<Arc<Engine>, ApiError>;

    /// The cloud of the server's own account and region (`--region`, the profile's),
    /// for the workspace list and the quotas.
    async fn cloud(&self) -> Result<Arc<dyn crate::cloud::Cloud>, ApiError>;

    /// With replicas (`--store`): the lease of the manifest's account and region, whose
    /// holder runs its launches. None on one machine.
    async fn keeper(
        &self,
        _manifest: &Manifest,
    ) -> Result<Option<Arc<crate::store::LeaseKeeper>>, ApiError> {
        Ok(None)
    }

    /// Every lease this replica has met, to keep (or wait for).
    fn keepers(&self) -> Vec<Arc<crate::store::LeaseKeeper>> {
        vec![]
    }
}

/// How often a replica reads what the others wrote: new launches, their progress and
/// events, cancel requests.
pub const SYNC_EVERY: Duration = Duration::from_millis(500);
/// … and how often while no launch it knows of runs.
pub const SYNC_IDLE: Duration = Duration::from_secs(2);

/// What the handlers share.
pub struct App {
    store: Store,
    registry: Registry,
    /// Idempotency-Key → (SHA-256 of the body, launch id).
    keys: Mutex<BTreeMap<String, (String, String)>>,
    /// One slot per account and region: the launch holding it runs, the others wait as
    /// queued.
    slots: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Held while a launch is created or resumed.
    create: tokio::sync::Mutex<()>,
    connector: Arc<dyn Connector>,
    /// The reasons and values at request time of the quota requests sent from here.
    notes: quotas::Notes,
    /// The last quota survey: every quota answer and the alert banner of every page
    /// within a few seconds of it share it.
    last_survey: Mutex<Option<(std::time::Instant, Vec<crate::quota::usage::QuotaRow>)>>,
    /// The open increase requests the banner last read, and when.
    open_requests: Mutex<Option<(std::time::Instant, Vec<serde_json::Value>)>>,
    /// One survey of AWS at a time: requests that find none recent wait for it.
    survey_turn: tokio::sync::Mutex<()>,
    /// `--manifests`, canonical.
    manifests: Option<PathBuf>,
    /// The Launch page's plans, so that page views do not each ask AWS again.
    plans: api::PlanCache,
    /// Cancelled when the server begins to stop, before its launches are stopped.
    stopping: CancellationToken,
    /// Cancelled when the server stops, once its launches are: event streams end.
    shutdown: CancellationToken,
    /// The process's metrics: `/metrics` shows them; event streams count in them.
    metrics: Arc<crate::metrics::Metrics>,
}

impl App {
    /// The server's state from `state_dir`: launches found running are marked
    /// interrupted (the server stopped under them).
    pub fn load(
        state_dir: &std::path::Path,
        manifests: Option<PathBuf>,
        connector: Arc<dyn Connector>,
        metrics: Arc<crate::metrics::Metrics>,
        table: Option<Arc<dyn crate::store::Store>>,
    ) -> Arc<App> {
        let registry = Registry::default();
        let store = match table {
            // The launches are read from the table by `replicate`.
            Some(table) => Store::shared(state_dir, table),
            None => {
                let store = Store::new(state_dir);
                for (record, events) in store.load_all() {
                    let launch = Launch::new(record, events);
                    launch.interrupted_by_restart(&store);
                    registry.insert(launch);
                }
                store
            }
        };
        Arc::new(App {
            keys: Mutex::new(store.load_keys()),
            notes: quotas::Notes::load(state_dir, store.table().cloned()),
            last_survey: Mutex::new(None),
            open_requests: Mutex::new(None),
            survey_turn: tokio::sync::Mutex::new(()),
            plans: api::PlanCache::default(),
            store,
            registry,
            slots: Mutex::new(BTreeMap::new()),
            create: tokio::sync::Mutex::new(()),
            connector,
            manifests,
            stopping: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            metrics,
        })
    }

    /// The launch slot of `ACCOUNT/REGION`.
    fn slot(&self, region: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(region.to_string())
            .or_default()
            .clone()
    }

    /// Stops every running launch as the first Ctrl-C of apply does (in-flight calls
    /// finish, nothing new starts), and waits until each is kept as interrupted. With
    /// replicas, they are kept as running and the leases given up: another replica
    /// carries them on at once.
    pub async fn stop(&self) {
        self.stopping.cancel();
        let launches = self.registry.all();
        for l in &launches {
            l.cancel(true);
        }
        for l in &launches {
            l.finished().await;
        }
        for keeper in self.connector.keepers() {
            keeper.release().await;
        }
        self.shutdown.cancel();
    }

    /// With replicas: keeps this replica's leases (or waits for them), shows what the
    /// other replicas wrote, passes cancel requests to the runs here, and carries on
    /// the launches whose lease this replica holds and no replica runs. Until the
    /// server stops.
    pub async fn replicate(self: Arc<Self>) {
        // When each lease is next taken or renewed, and where it stood last.
        let mut due: BTreeMap<String, (std::time::Instant, Option<crate::store::Standing>)> =
            BTreeMap::new();
        loop {
            for keeper in self.connector.keepers() {
                let now = std::time::Instant::now();
                let (at, last) = due.entry(keeper.name.clone()).or_insert((now, None));
                if *at <= now {
                    let work = "it runs the launches there";
                    let next =
                        crate::store::keep_once(&keeper, last, Some(&self.metrics), work).await;
                    *at = now + next;
                }
            }
            if let Err(e) = self.sync_once().await {
                tracing::warn!("cannot read the shared store: {e}; trying again");
            }
            // Often while a launch runs (its progress is followed here), seldom idle.
            let every = if self.registry.any_active() {
                SYNC_EVERY
            } else {
                SYNC_IDLE
            };
            tokio::select! {
                _ = self.stopping.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// One look at the shared table.
    async fn sync_once(self: &Arc<Self>) -> Result<(), crate::store::StoreError> {
        for id in self.store.index().await?.into_keys() {
            match self.registry.get(&id) {
                None => {
                    let Some(record) = self.store.get_record(&id).await? else {
                        continue;
                    };
                    let events = self.store.events_from(&id, 1).await?;
                    self.registry.insert(Launch::new(record, events));
                }
                Some(l) if l.mirrored() => {
                    if !l.state().is_active() {
                        continue;
                    }
                    // The record first: the events written before it come with it.
                    let record = self.store.get_record(&id).await?;
                    let events = self.store.events_from(&id, l.event_count() + 1).await?;
                    l.mirror(record, events);
                }
                Some(l) => {
                    if l.state().is_active() && self.store.cancel_requested(&id).await? {
                        l.cancel(false);
                    }
                }
            }
        }
        for l in self.registry.all() {
            if !l.mirrored() || !l.state().is_active() {
                continue;
            }
            if let Err(e) = api::take_over(self, &l).await {
                l.unclaim();
                tracing::warn!(
                    "cannot carry launch {} on here: {}",
                    l.id(),
                    e.body["error"]["title"]
                );
            }
        }
        Ok(())
    }
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Nothing at this address: a page for a browser (outside `/api/`), else JSON.
async fn not_found(
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let browser = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser && !uri.path().starts_with("/api/") {
        return pages::not_found_page(uri.path());
    }
    ApiError::not_found("there is nothing at this address")
        .fix("See docs/serve.md for the endpoints.")
        .into_response()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "this address does not take that method",
    )
    .fix("See docs/serve.md for the methods each endpoint takes.")
}

/// The answer to a request the bounds turned away: 503 when too many are in flight,
/// 504 when one took too long.
fn over_bounds(
    err: &tower::BoxError,
    in_flight: usize,
    timeout: Duration,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if err.is::<tower::timeout::error::Elapsed>() {
        return ApiError::new(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!("the answer took longer than {}", humantime::format_duration(timeout)),
        )
        .fix("Try again; if AWS is slow to answer, `prism quota show` tells the same from the command line.")
        .into_response();
    }
    let mut r = ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "Busy",
        format!("the server is answering {in_flight} requests already"),
    )
    .fix("Try again in a second (Retry-After says when).")
    .into_response();
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    r
}

/// `router` with at most `in_flight` requests served at once across all its routes
/// (more are answered 503 with `Retry-After` at once, not queued) and each answered
/// within `timeout` (else 504).
fn with_bounds<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    in_flight: usize,
    timeout: Duration,
) -> Router<S> {
    router.layer(
        tower::ServiceBuilder::new()
            .layer(axum::error_handling::HandleErrorLayer::new(
                move |err: tower::BoxError| async move { over_bounds(&err, in_flight, timeout) },
            ))
            .load_shed()
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(in_flight))
            .timeout(timeout),
    )
}

/// The whole application: routes and the layers around them.
pub fn router(app: Arc<App>, guard: Arc<guard::Guard>) -> Router {
    const ONE: &str = "/api/v1/workspaces/bulk-launch/{id}";
    let login = Router::new()
        .route("/login", get(pages::login).post(pages::login_post))
        .route("/logout", post(pages::logout))
        .route("/sessions", get(pages::sessions_page))
        .route("/sessions/end-others", post(pages::end_others))
        .route("/sessions/{id}/end", post(pages::end_session))
        .route("/api/v1/sessions", get(pages::list_api))
        .route(
            "/api/v1/sessions/{id}",
            axum::routing::delete(pages::end_api),
        )
        .with_state(guard.clone());
    // Answers that are over in one go: bounded in number and in time.
    let bounded = Router::new()
        .route("/", get(pages::launch_page))
        .route("/launches", post(pages::apply))
        .route("/launches/{id}", get(pages::launch_progress))
        .route("/launches/{id}/cancel", post(pages::cancel))
        .route("/launches/{id}/resume", post(pages::resume))
        .route("/quotas", get(pages::quotas_page))
        .route("/quotas/requests", post(pages::request_increase))
        .route("/quotas/requests/{id}", get(pages::request_detail))
        .route("/alerts/dismiss", post(pages::dismiss))
        .route(
            "/api/v1/workspaces/bulk-launch",
            get(api::list).post(api::create),
        )
        .route(ONE, get(api::show).delete(api::cancel))
        .route(&format!("{ONE}/resume"), post(api::resume))
        .route("/api/v1/workspaces", get(workspaces::workspaces))
        .route("/api/v1/quotas", get(quotas::list))
        .route("/api/v1/quotas/alerts", get(quotas::alerts))
        .route(
            "/api/v1/quotas/requests",
            get(quotas::list_requests).post(quotas::request),
        )
        .route("/api/v1/quotas/request", post(quotas::request))
        .route("/api/v1/quotas/requests/{id}", get(quotas::show_request))
        .route("/api/v1/quotas/{code}", get(quotas::show))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app.clone())
        .merge(login);
    let bounded = with_bounds(bounded, IN_FLIGHT, REQUEST_TIMEOUT);
    // Answers that stay open, or must answer whatever the load: never turned away.
    let scrape = Router::new()
        .route("/metrics", get(metrics::metrics))
        .with_state(app.metrics.clone());
    let open = Router::new()
        .route("/healthz", get(healthz))
        .route("/assets/{file}", get(pages::asset))
        .route(&format!("{ONE}/events"), get(api::events))
        .with_state(app);
    bounded
        .merge(open)
        .merge(scrape)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(from_fn_with_state(guard.clone(), guard::require_token))
        .layer(from_fn_with_state(guard.clone(), guard::check_origin))
        .layer(from_fn_with_state(guard, guard::check_host))
        .layer(from_fn(guard::security_headers))
        .layer(tower_http::compression::CompressionLayer::new())
}

/// Serves `router` on `listener` until `stop` resolves. Then the launches stop as the
/// first Ctrl-C of apply stops them (their event streams carry the end), every event
/// stream gets a last `stopping` event, and open requests finish (10 s at most).
pub async fn run(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    guard: Arc<guard::Guard>,
    limits: listen::Limits,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let routes = router(app.clone(), guard);
    let conns = listen::accept_until(listener, routes, limits, stop).await;
    app.stop().await;
    conns.drain(std::time::Duration::from_secs(10)).await;
    Ok(())
}

/// Whether `addr` may be listened on without `--allow-remote`.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn past_the_bound_requests_are_turned_away_at_once_and_slow_ones_time_out() {
        let release = Arc::new(tokio::sync::Notify::new());
        let held = release.clone();
        let router: Router = with_bounds(
            Router::new()
                .route(
                    "/slow",
                    get(move || {
                        let held = held.clone();
                        async move { held.notified().await }
                    }),
                )
                .route("/fast", get(|| async { "ok" })),
            2,
            Duration::from_millis(300),
        );
        let call = |path: &'static str| {
            let router = router.clone();
            tokio::spawn(async move {
                let req = Request::builder().uri(path).body(Body::empty()).unwrap();
                router.oneshot(req).await.unwrap()
            })
        };
        let (a, b) = (call("/slow"), call("/slow"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Two in flight, on any route: the third is turned away with a JSON body.
        let third = call("/fast").await.unwrap();
        assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(third.headers()["retry-after"], "1");
        let body = axum::body::to_bytes(third.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "Busy", "{v}");
        // The slow ones run out of time.
        for r in [a.await.unwrap(), b.await.unwrap()] {
            assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        }
        assert_eq!(call("/fast").await.unwrap().status(), StatusCode::OK);
        release.notify_waiters();
    }
}
