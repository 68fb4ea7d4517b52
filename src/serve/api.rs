//! The bulk-launch API: thin handlers that parse a request, call the planner and the
//! engine, and answer with the launch as JSON or its events as Server-Sent Events.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::App;
use super::error::ApiError;
use super::launches::{Launch, Start};
use super::store::{LaunchState, Record, Request};
use crate::engine::gate::Gate;
use crate::engine::{Job, RunOptions};
use crate::manifest::Manifest;
use crate::plan::ActionKind;

/// The body of `POST /api/v1/workspaces/bulk-launch`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchBody {
    pub manifest: Option<String>,
    pub manifest_path: Option<String>,
    #[serde(default)]
    pub allow_partial: bool,
    /// Consent to delete the workspaces the manifest no longer wants (`prune: true`):
    /// without it, a launch that would delete any is refused, naming them.
    #[serde(default)]
    pub allow_delete: bool,
    /// How long workspaces without room in a quota wait for it, e.g. `30m`.
    #[serde(default)]
    pub wait_for_quota: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

/// The body bytes of a JSON request: within the size limit and sent as JSON.
pub fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "the request body must be JSON, sent with `Content-Type: application/json`",
        )
        .fix("Send the body as JSON with `Content-Type: application/json`."));
    }
    body.map_err(|e| {
        ApiError::new(
            e.status(),
            "BadBody",
            format!("the request body cannot be read: {}", e.body_text()),
        )
        .fix("Send a body of at most 1 MiB.")
    })
}

fn accepted(launch: &Launch, status: StatusCode) -> Response {
    let location = format!("/api/v1/workspaces/bulk-launch/{}", launch.id());
    (status, [(header::LOCATION, location)], Json(launch.view())).into_response()
}

fn now() -> (String, u128) {
    let t = std::time::SystemTime::now();
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    (humantime::format_rfc3339_seconds(t).to_string(), ms)
}

fn new_id(ms: u128) -> String {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("random bytes");
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("bl-{ms}-{suffix}")
}

/// The manifest text a request names, and the name to locate its problems with: at
/// most 1 MiB, from a regular file under `--manifests` (never a pipe that would block).
fn manifest_text(app: &App, body: &LaunchBody) -> Result<(String, String), ApiError> {
    match (&body.manifest, &body.manifest_path) {
        (Some(text), None) => Ok((text.clone(), "manifest".into())),
        (None, Some(rel)) => {
            let Some(dir) = &app.manifests else {
                return Err(ApiError::bad_request(
                    "`manifest_path` needs the server started with --manifests DIR",
                ));
            };
            let outside = || {
                ApiError::bad_request(format!("`{rel}` is not a manifest under {}", dir.display()))
            };
            let rel_path = Path::new(rel);
            if rel_path.is_absolute() {
                return Err(outside());
            }
            let full = dir.join(rel_path).canonicalize().map_err(|_| outside())?;
            let regular = std::fs::metadata(&full).is_ok_and(|m| m.is_file());
            if !full.starts_with(dir) || !regular {
                return Err(outside());
            }
            let text = crate::manifest::read_text(&full, rel).map_err(|_| outside())?;
            Ok((text, rel.clone()))
        }
        _ => Err(ApiError::bad_request(
            "the body needs exactly one of `manifest` (the YAML text) and `manifest_path`",
        )),
    }
}

/// Parses the manifest `text` named `name` (its `manifest_path`, or `manifest` for an
/// inline one): the files it names must lie in its own folder under `--manifests`
/// (an inline one's: in `--manifests` itself; without it, none).
fn parse_manifest(app: &App, text: &str, name: &str, inline: bool) -> Result<Manifest, ApiError> {
    let files = match (&app.manifests, inline) {
        (None, _) => crate::manifest::Files::Nothing,
        (Some(dir), true) => crate::manifest::Files::Under(dir.clone()),
        (Some(dir), false) => crate::manifest::Files::Under(
            dir.join(name)
                .parent()
                .map_or_else(|| dir.clone(), Path::to_path_buf),
        ),
    };
    crate::manifest::parse_with(Path::new(name), text, &files).map_err(|e| {
        ApiError::bad_request(e.to_string())
            .with("code", json!("InvalidManifest"))
            .with("problems", serde_json::to_value(e.problems()).expect("serializes"))
            .fix("Fix every problem listed (each with its line and column) and send the manifest again; nothing was sent to AWS.")
    })
}

fn running_conflict(active: &Launch) -> ApiError {
    ApiError::conflict(
        "LaunchRunning",
        format!(
            "launch {} of fleet `{}` is still running",
            active.id(),
            active.fleet()
        ),
    )
    .with("launch", json!(active.id()))
    .fix("Wait for it to end, or cancel it with DELETE on its URL, then send the request again.")
}

/// Observes the fleet and plans it; Err when AWS cannot be asked.
async fn plan_of(
    app: &App,
    manifest: &Manifest,
) -> Result<
    (
        Arc<crate::engine::Engine>,
        crate::plan::Plan,
        crate::observe::Observed,
    ),
    ApiError,
> {
    let engine = app.connector.engine(manifest).await?;
    let recent = engine.memory.recent_launches();
    let observed = crate::observe::observe_with(engine.cloud().as_ref(), manifest, &recent)
        .await
        .map_err(|e| {
            let ctx = crate::errors::Context {
                region: Some(engine.cloud().region().to_string()),
                ..Default::default()
            };
            ApiError::explained(StatusCode::BAD_GATEWAY, crate::errors::explain(&e, &ctx))
        })?;
    let plan = crate::plan::plan_at(manifest, &observed, Some(jiff::Timestamp::now()));
    app.metrics.planned(&observed, &plan);
    Ok((engine, plan, observed))
}

/// The engine's run of `manifest`'s plan; Err (nothing started) when it does not fit
/// the quota and the request neither allows a partial launch nor waits for quota.
async fn prepare(
    app: &App,
    manifest: &Manifest,
    request: &Request,
) -> Result<(Arc<crate::engine::Engine>, crate::engine::Job, RunOptions), ApiError> {
    let wait = request.quota_wait().map_err(ApiError::bad_request)?;
    let (engine, plan, observed) = plan_of(app, manifest).await?;
    if let Some(o) = &plan.owned_elsewhere {
        return Err(ApiError::conflict("OwnedElsewhere", o.message(&plan.fleet))
            .with("owner", json!(o.owner))
            .fix("Launch the fleet from the manifest that manages it, or hand the fleet over with `prism fleet adopt MANIFEST`."));
    }
    let deletions: Vec<&str> = plan
        .actions
        .iter()
        .filter(|a| matches!(a.action, ActionKind::Delete | ActionKind::Replace))
        .map(|a| a.workspace.as_str())
        .collect();
    if !deletions.is_empty() && !request.allow_delete {
        return Err(ApiError::conflict(
            "DeletionNeedsConsent",
            format!(
                "this launch would delete {} workspace{} and {} disks: {}",
                deletions.len(),
                if deletions.len() == 1 { "" } else { "s" },
                if deletions.len() == 1 { "its" } else { "their" },
                deletions.join(", ")
            ),
        )
        .with("deletions", json!(deletions))
        .fix("Send `\"allow_delete\": true` to delete them, or put them back in the manifest; nothing was changed."));
    }
    crate::engine::adopt(engine.cloud().as_ref(), &plan, manifest).await;
    let gate = Gate::of(&plan, true);
    if !gate.shortfalls.is_empty() && !request.allow_partial && wait.is_none() {
        return Err(shortfall(&plan, &gate));
    }
    let mut job = Job::from_plan(manifest, &plan, &observed);
    let wait = wait.map(|until| crate::engine::QuotaWait {
        until,
        every: crate::config::quota_recheck(),
    });
    job.over_quota(&plan, gate, wait);
    let opts = RunOptions {
        retry: manifest.retry.clone(),
        ..RunOptions::default()
    };
    Ok((engine, job, opts))
}

/// Plans `manifest` and starts its run for `launch`, or queues it behind the launch
/// running in the same account and region; Err (nothing started or queued) when it
/// does not fit the quota and the request neither allows a partial launch nor waits.
/// With replicas, a replica that does not hold the account and region's lease leaves
/// the run to the one that does.
async fn start(
    app: &Arc<App>,
    manifest: &Manifest,
    request: Request,
    launch: &Arc<Launch>,
) -> Result<(), ApiError> {
    let (engine, job, opts) = prepare(app, manifest, &request).await?;
    launch.set_place(place_of(&engine).await);
    let keeper = app.connector.keeper(manifest).await?;
    if keeper.as_ref().is_some_and(|k| k.lease().is_none()) {
        return Ok(());
    }
    let slot = slot_of(app, &engine).await;
    // The run's log records carry the launch's id.
    let span = launch.span();
    let how = match slot.clone().try_lock_owned() {
        Ok(turn) => Start::Now(turn, span.in_scope(|| engine.run(job, opts))),
        Err(_) => queued(app, manifest, request, slot, span),
    };
    launch.start(how, app.store.clone(), keeper, None);
    Ok(())
}

/// Where `engine` launches: `account 123456789012 (profile p), us-west-2`, or the
/// region alone when AWS does not say which account.
async fn place_of(engine: &crate::engine::Engine) -> String {
    let cloud = engine.cloud();
    match cloud.account().await {
        Some(a) => place_text(&a, cloud.region()),
        None => cloud.region().to_string(),
    }
}

/// `account 123456789012 (profile p), us-west-2`.
pub fn place_text(account: &crate::cloud::Account, region: &str) -> String {
    format!("account {account}, {region}")
}

/// The launch slot of `engine`'s account and region: one launch runs there at a time.
async fn slot_of(app: &App, engine: &crate::engine::Engine) -> Arc<tokio::sync::Mutex<()>> {
    let cloud = engine.cloud();
    let account = cloud.account().await.map(|a| a.id).unwrap_or_default();
    app.slot(&format!("{account}/{}", cloud.region()))
}

/// A run that waits for its region's slot, then is planned (again: the launches ahead
/// change the fleet's neighbours and the quota's use) and starts, or says why not.
fn queued(
    app: &Arc<App>,
    manifest: &Manifest,
    request: Request,
    slot: Arc<tokio::sync::Mutex<()>>,
    span: tracing::Span,
) -> Start {
    let (app, manifest) = (app.clone(), manifest.clone());
    Start::Queued(
        slot,
        Box::pin(
            async move {
                let (engine, job, opts) = prepare(&app, &manifest, &request).await?;
                Ok(engine.run(job, opts))
            }
            .instrument(span),
        ),
    )
}

/// Carries on, on this replica, a launch another replica ran or queued: when this one
/// holds its account and region's lease. Its events go on from the last one written;
/// the engine's launch notes in the table let it send the launches noted there with
/// their own tokens, so none is made twice. False when it stays with another replica.
pub async fn take_over(app: &Arc<App>, launch: &Arc<Launch>) -> Result<bool, ApiError> {
    let record = launch.record();
    let name = record
        .request
        .manifest_path
        .clone()
        .unwrap_or_else(|| "manifest".into());
    let manifest = parse_manifest(
        app,
        &record.request.manifest,
        &name,
        record.request.manifest_path.is_none(),
    )?;
    let Some(keeper) = app.connector.keeper(&manifest).await? else {
        return Ok(false);
    };
    if keeper.lease().is_none() {
        return Ok(false);
    }
    // What the last runner wrote since the last look.
    let latest = app
        .store
        .get_record(&record.id)
        .await
        .map_err(ApiError::store)?;
    let events = app
        .store
        .events_from(&record.id, launch.event_count() + 1)
        .await
        .map_err(ApiError::store)?;
    launch.mirror(latest, events);
    if !launch.state().is_active() || !launch.claim() {
        return Ok(false);
    }
    // Cancelled on the replica that ran it, or asked of it from another.
    let cancel = launch.state() == LaunchState::Cancelling
        || app
            .store
            .cancel_requested(&record.id)
            .await
            .unwrap_or(false);
    tracing::warn!(
        lease = %keeper.name,
        "this replica takes launch {} of fleet `{}` over ({} events so far): it holds the lease of {} now",
        record.id,
        record.fleet,
        launch.event_count(),
        keeper.name
    );
    let _one = app.create.lock().await;
    let engine = app.connector.engine(&manifest).await?;
    let slot = slot_of(app, &engine).await;
    let how = queued(app, &manifest, record.request, slot, launch.span());
    // Said in the launch's own events, when a run had begun: a client following it
    // sees where it went on.
    let began = launch.state() == LaunchState::Running;
    let said = json!({
        "event": "taken_over",
        "replica": keeper.holder,
        "lease": keeper.name,
        "message": format!("carried on by replica {}, which holds the lease of {} now", keeper.holder, keeper.name),
    });
    launch.start(
        how,
        app.store.clone(),
        Some(keeper),
        began.then(|| said.to_string()),
    );
    if cancel {
        launch.cancel(false);
    }
    Ok(true)
}

fn shortfall(plan: &crate::plan::Plan, gate: &Gate) -> ApiError {
    let screens: String = gate
        .shortfalls
        .iter()
        .map(|q| crate::plan::render::shortfall_screen(plan, q))
        .collect();
    ApiError::conflict("QuotaShortfall", "not every workspace fits the account's quota")
        .happened(screens)
        .with("shortfall", serde_json::to_value(&gate.shortfalls).expect("serializes"))
        .fix("Send `\"allow_partial\": true` to launch the workspaces that fit (in name order) and skip the rest, `\"wait_for_quota\": \"30m\"` to launch the rest too as soon as the quota has room, or raise the quota first.")
}

pub async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = json_body(&headers, body)?;
    let body: LaunchBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the request body is not a valid launch request: {e}"
        ))
    })?;
    let key = headers
        .get("idempotency-key")
        .map(|k| k.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| ApiError::bad_request("the Idempotency-Key header is not text"))?;
    if let Some(k) = &key
        && !(1..=IDEMPOTENCY_KEY_MAX).contains(&k.trim().len())
    {
        return Err(ApiError::bad_request(format!(
            "the Idempotency-Key header must be 1 to {IDEMPOTENCY_KEY_MAX} characters, not {}",
            k.trim().len()
        ))
        .fix("Use a shorter key, such as a UUID."));
    }
    // The same request however it is spaced: compared as parsed JSON.
    let canonical = serde_json::from_slice::<Value>(&bytes)
        .map(|v| v.to_string().into_bytes())
        .unwrap_or_else(|_| bytes.to_vec());
    let hash = format!("{:x}", Sha256::digest(&canonical));
    // One creation at a time: the key table and the one-launch-per-fleet rule hold.
    let _one = app.create.lock().await;
    let mut stale = false;
    if let Some(key) = &key
        && let Some((seen, id)) = known_key(&app, key).await?
    {
        if seen != hash {
            return Err(key_reused());
        }
        if let Some(launch) = find_anywhere(&app, &id).await {
            return Ok(accepted(&launch, StatusCode::ACCEPTED));
        }
        // Claimed by a request whose launch was refused: this one may have it.
        stale = true;
    }
    let (text, name) = manifest_text(&app, &body)?;
    let manifest = parse_manifest(&app, &text, &name, body.manifest_path.is_none())?;
    if body.dry_run {
        // A launch checks it in `begin`.
        check_quota_wait(&body)?;
        let (_, plan, _) = plan_of(&app, &manifest).await?;
        return Ok(Json(serde_json::to_value(&plan).expect("serializes")).into_response());
    }
    let launch = begin(&app, &body, text, &manifest).await?;
    if let Some(key) = key
        && let Some((seen, id)) = keep_key(&app, key, hash.clone(), launch.id(), stale).await
    {
        // Another replica took the key at the same moment: its launch is the one, and
        // this one stops before it has done anything of its own.
        launch.cancel(false);
        if seen != hash {
            return Err(key_reused());
        }
        if let Some(first) = find_anywhere(&app, &id).await {
            return Ok(accepted(&first, StatusCode::ACCEPTED));
        }
    }
    Ok(accepted(&launch, StatusCode::ACCEPTED))
}

/// The launch `id`, from this replica's registry or, with replicas, from the table
/// (a launch another replica made a moment ago).
async fn find_anywhere(app: &App, id: &str) -> Option<Arc<Launch>> {
    if let Some(l) = app.registry.get(id) {
        return Some(l);
    }
    app.store.table()?;
    let record = app.store.get_record(id).await.ok()??;
    let launch = Launch::new(record, vec![]);
    app.registry.insert(launch.clone());
    Some(launch)
}

fn key_reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "IdempotencyKeyReused",
        "this Idempotency-Key was used with another request body",
    )
    .fix("Use a new key for a new request.")
}

/// The request hash and launch id an Idempotency-Key was used for, if it was.
async fn known_key(app: &App, key: &str) -> Result<Option<(String, String)>, ApiError> {
    if app.store.table().is_some() {
        return app.store.known_key(key).await.map_err(ApiError::store);
    }
    Ok(app
        .keys
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .cloned())
}

/// Keeps the Idempotency-Key `key` for the request hashed `hash` and launch `id`; with
/// replicas, the claim another replica made first, if one did.
async fn keep_key(
    app: &App,
    key: String,
    hash: String,
    id: String,
    stale: bool,
) -> Option<(String, String)> {
    if app.store.table().is_some() {
        return match app.store.claim_key(&key, &hash, &id, stale).await {
            Ok(first) => first,
            Err(e) => {
                tracing::warn!("cannot keep the Idempotency-Key {key}: {e}");
                None
            }
        };
    }
    let mut keys = app.keys.lock().unwrap_or_else(|e| e.into_inner());
    keys.insert(key, (hash, id));
    if let Err(e) = app.store.save_keys(&keys) {
        tracing::warn!("cannot keep the Idempotency-Key table: {e}");
    }
    None
}

/// The longest Idempotency-Key taken (every store keeps it whole).
const IDEMPOTENCY_KEY_MAX: usize = 255;

/// Err (400) when the body's `wait_for_quota` is not a duration.
fn check_quota_wait(body: &LaunchBody) -> Result<(), ApiError> {
    super::store::quota_wait(body.wait_for_quota.as_deref())
        .map(|_| ())
        .map_err(ApiError::bad_request)
}

/// Starts (or queues) a launch of `manifest` (whose text is `text`) and keeps it.
async fn begin(
    app: &Arc<App>,
    body: &LaunchBody,
    text: String,
    manifest: &Manifest,
) -> Result<Arc<Launch>, ApiError> {
    let request = Request {
        manifest: text,
        manifest_path: body.manifest_path.clone(),
        allow_partial: body.allow_partial,
        allow_delete: body.allow_delete,
        wait_for_quota: body.wait_for_quota.clone(),
    };
    check_quota_wait(body)?;
    if let Some(active) = app.registry.active_for(&manifest.name) {
        return Err(running_conflict(&active));
    }
    let (created_at, created_ms) = now();
    let lease = app
        .connector
        .keeper(manifest)
        .await?
        .map(|k| k.name.clone());
    let record = Record {
        id: new_id(created_ms),
        fleet: manifest.name.clone(),
        state: LaunchState::Queued,
        created_at,
        created_ms,
        request: request.clone(),
        progress: Value::Null,
        workspaces: json!([]),
        report: None,
        error: None,
        lease,
        // Set by `start`, from the engine it plans with.
        place: None,
    };
    let launch = Launch::new(record, vec![]);
    start(app, manifest, request, &launch).await?;
    if app.store.table().is_some() {
        // Kept before it is answered: any replica can show it from now on.
        app.store
            .create(&launch.record())
            .await
            .map_err(ApiError::store)?;
    }
    app.registry.insert(launch.clone());
    Ok(launch)
}

/// A launch of the manifest `manifest_path` under `--manifests`, as the Launch page
/// asks for one (the same checks as the API's).
pub async fn launch_file(
    app: &Arc<App>,
    manifest_path: &str,
    allow_partial: bool,
    allow_delete: bool,
    wait_for_quota: Option<String>,
) -> Result<Arc<Launch>, ApiError> {
    let body = LaunchBody {
        manifest_path: Some(manifest_path.to_string()),
        allow_partial,
        allow_delete,
        wait_for_quota,
        ..LaunchBody::default()
    };
    let _one = app.create.lock().await;
    let (text, name) = manifest_text(app, &body)?;
    let manifest = parse_manifest(app, &text, &name, body.manifest_path.is_none())?;
    begin(app, &body, text, &manifest).await
}

/// How long the Launch page shows a plan before asking AWS again, while no launch
/// runs or ends and the manifest stays as it is.
const PLAN_AGE: std::time::Duration = std::time::Duration::from_secs(15);

/// The Launch page's plans, by manifest path.
#[derive(Default)]
pub struct PlanCache(std::sync::Mutex<std::collections::BTreeMap<String, CachedPlan>>);

/// A plan the Launch page showed.
struct CachedPlan {
    at: std::time::Instant,
    /// SHA-256 of the manifest's text.
    digest: String,
    /// The launches' ids and states then ([`Registry::stamp`](super::launches::Registry::stamp)).
    stamp: Vec<(String, LaunchState)>,
    plan: crate::plan::Plan,
    gate: Gate,
}

/// The plan of the manifest `manifest_path` under `--manifests`, and whether it fits
/// the quota. A plan made less than [`PLAN_AGE`] ago of the same text is shown again
/// unless a launch was created, moved on or ended since, or one is running.
pub async fn plan_file(
    app: &App,
    manifest_path: &str,
) -> Result<(crate::plan::Plan, Gate), ApiError> {
    let body = LaunchBody {
        manifest_path: Some(manifest_path.to_string()),
        ..LaunchBody::default()
    };
    let (text, name) = manifest_text(app, &body)?;
    let digest = format!("{:x}", Sha256::digest(text.as_bytes()));
    let stamp = app.registry.stamp();
    let keep = !app.registry.any_active();
    if keep {
        let cache = app.plans.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(manifest_path)
            && c.at.elapsed() < PLAN_AGE
            && c.digest == digest
            && c.stamp == stamp
        {
            return Ok((c.plan.clone(), c.gate.clone()));
        }
    }
    let manifest = parse_manifest(app, &text, &name, body.manifest_path.is_none())?;
    let (_, plan, _) = plan_of(app, &manifest).await?;
    let gate = Gate::of(&plan, true);
    if keep {
        app.plans
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                manifest_path.to_string(),
                CachedPlan {
                    at: std::time::Instant::now(),
                    digest,
                    stamp,
                    plan: plan.clone(),
                    gate: gate.clone(),
                },
            );
    }
    Ok((plan, gate))
}

pub async fn resume(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let launch = app
        .registry
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("there is no launch {id}")))?;
    let _one = app.create.lock().await;
    if launch.state() != LaunchState::Interrupted {
        return Err(ApiError::conflict(
            "NotResumable",
            format!("launch {id} is {:?}, not interrupted", launch.state()).to_lowercase(),
        )
        .fix("Only a launch interrupted by a server stop can be resumed; start a new launch instead."));
    }
    if let Some(active) = app.registry.active_for(&launch.fleet()) {
        return Err(running_conflict(&active));
    }
    let request = launch.record().request;
    let name = request
        .manifest_path
        .clone()
        .unwrap_or_else(|| "manifest".into());
    let manifest = parse_manifest(
        &app,
        &request.manifest,
        &name,
        request.manifest_path.is_none(),
    )?;
    start(&app, &manifest, request, &launch).await?;
    Ok(accepted(&launch, StatusCode::ACCEPTED))
}

pub async fn list(State(app): State<Arc<App>>) -> Json<Value> {
    let launches: Vec<Value> = app.registry.all().iter().map(|l| l.view()).collect();
    Json(json!({ "launches": launches }))
}

pub fn find(app: &App, id: &str) -> Result<Arc<Launch>, ApiError> {
    app.registry
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("there is no launch {id}")))
}

pub async fn show(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(find(&app, &id)?.view()))
}

pub async fn cancel(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let launch = find(&app, &id)?;
    Ok(Json(cancel_anywhere(&app, &launch).await?))
}

/// Cancels `launch` here, or, when another replica runs it, asks that one to; its
/// view as it will stand.
pub async fn cancel_anywhere(app: &App, launch: &Launch) -> Result<Value, ApiError> {
    if app.store.table().is_none() || !launch.mirrored() {
        launch.cancel(false);
        return Ok(launch.view());
    }
    let mut view = launch.view();
    if launch.state().is_active() {
        app.store
            .request_cancel(&launch.id())
            .await
            .map_err(ApiError::store)?;
        view["state"] = json!(LaunchState::Cancelling);
    }
    Ok(view)
}

/// Where an event stream stands.
struct Cursor {
    launch: Arc<Launch>,
    next: usize,
    buffered: VecDeque<(usize, String, String)>,
    changes: tokio::sync::watch::Receiver<usize>,
    shutdown: tokio_util::sync::CancellationToken,
    /// Cancelled when the server begins to stop (before its launches are stopped).
    stopping: tokio_util::sync::CancellationToken,
    /// The last event was sent.
    over: bool,
    /// Counts the stream as open while it lives.
    _open: crate::metrics::StreamGuard,
}

async fn next_event(mut c: Cursor) -> Option<(Result<SseEvent, Infallible>, Cursor)> {
    if c.over {
        return None;
    }
    loop {
        if let Some((id, name, data)) = c.buffered.pop_front() {
            c.next = id;
            let event = SseEvent::default()
                .id(id.to_string())
                .event(name)
                .data(data);
            return Some((Ok(event), c));
        }
        c.changes.borrow_and_update();
        let (events, over) = c.launch.events_after(c.next);
        if !events.is_empty() {
            c.buffered.extend(events);
            continue;
        }
        // The launch ended because the server stops: that is said last.
        let stopping = over && c.stopping.is_cancelled();
        c.over = over;
        if over {
            return stopping.then(|| (Ok(stopping_event(&c.launch)), c));
        }
        tokio::select! {
            changed = c.changes.changed() => if changed.is_err() { return None },
            _ = c.shutdown.cancelled() => {
                c.over = true;
                return Some((Ok(stopping_event(&c.launch)), c));
            }
        }
    }
}

/// The last event of a stream when the server stops: no id (a reconnect goes on after
/// the last numbered event), and a hint to try again in 5 s.
fn stopping_event(launch: &Launch) -> SseEvent {
    let data = serde_json::json!({
        "event": "stopping",
        "state": launch.view()["state"],
        "message": "prism serve is stopping; the launch can be followed again, and resumed, once it is back",
    });
    SseEvent::default()
        .event("stopping")
        .retry(std::time::Duration::from_secs(5))
        .data(data.to_string())
}

pub async fn events(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let launch = find(&app, &id)?;
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be an event id (a number)"))?,
    };
    let changes = launch.subscribe();
    let (pending, over) = launch.events_after(after);
    if pending.is_empty() && over {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let cursor = Cursor {
        launch,
        next: after,
        buffered: VecDeque::new(),
        changes,
        shutdown: app.shutdown.clone(),
        stopping: app.stopping.clone(),
        over: false,
        _open: app.metrics.event_stream(),
    };
    let stream = futures::stream::unfold(cursor, next_event);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
