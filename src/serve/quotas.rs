//! Workspaces and quotas over HTTP: the same functions and the same JSON as `prism
//! workspace list` and `prism quota … --format json`. What AWS does not keep about a
//! quota request (its reason, the value when it was asked) the server keeps in its
//! state directory and adds to the request's row.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::App;
use super::api::json_body;
use super::error::ApiError;
use crate::cloud::{Cloud, CloudError};
use crate::manifest::RetryPolicy;
use crate::quota::request::{NotAsked, RequestRow};
use crate::quota::usage::{Alert, QuotaRow};
use crate::quota::{self, QuotaClass};

/// The request statuses `quota request list --status` accepts.
pub const REQUEST_STATUSES: [&str; 7] = [
    "PENDING",
    "CASE_OPENED",
    "APPROVED",
    "DENIED",
    "CASE_CLOSED",
    "NOT_APPROVED",
    "INVALID_REQUEST",
];

/// What the server keeps about a request it sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Note {
    pub reason: String,
    /// The quota's value when the increase was asked.
    pub value_at_request: f64,
}

/// The notes of the requests sent through this server, by request id
/// (`quota-requests.json` in the state directory).
#[derive(Debug)]
pub struct Notes {
    path: PathBuf,
    notes: Mutex<BTreeMap<String, Note>>,
    /// With replicas: the notes every replica shares (`quota-notes` in the table).
    shared: Option<crate::store::SharedDoc<BTreeMap<String, Note>>>,
}

impl Notes {
    pub fn load(state_dir: &Path, table: Option<std::sync::Arc<dyn crate::store::Store>>) -> Notes {
        let path = state_dir.join("quota-requests.json");
        let notes = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Notes {
            path,
            notes: Mutex::new(notes),
            shared: table.map(|t| crate::store::SharedDoc::new(t, "quota-notes")),
        }
    }

    fn keep(&self, id: &str, note: Note) -> std::io::Result<()> {
        if let Some(doc) = &self.shared {
            return doc
                .change(|notes| {
                    notes.insert(id.to_string(), note.clone());
                    true
                })
                .map(|_| ())
                .map_err(std::io::Error::other);
        }
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        notes.insert(id.to_string(), note);
        let bytes = serde_json::to_vec_pretty(&*notes).expect("serializes");
        super::store::write_atomic(&self.path, &bytes)
    }

    fn get(&self, id: &str) -> Option<Note> {
        if let Some(doc) = &self.shared {
            // A request sent through another replica a moment ago is read again.
            let here = doc.read(std::time::Duration::from_secs(5));
            return here.get(id).cloned().or_else(|| {
                doc.read(std::time::Duration::from_millis(100))
                    .get(id)
                    .cloned()
            });
        }
        self.notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// A request's row as the CLI prints it, with the kept reason and value at request
    /// time (null for a request not sent through this server).
    pub fn row(&self, r: &RequestRow) -> Value {
        let mut v = serde_json::to_value(r).expect("serializes");
        let note = self.get(&r.request_id);
        v["reason"] = json!(note.as_ref().map(|n| &n.reason));
        v["value_at_request"] = json!(note.as_ref().map(|n| n.value_at_request));
        v
    }
}

fn aws(e: CloudError, cloud: &dyn Cloud) -> ApiError {
    let ctx = crate::errors::Context {
        region: Some(cloud.region().to_string()),
        ..Default::default()
    };
    // AWS's conflicts (a request already open for the quota) are the caller's to
    // resolve, not a bad gateway.
    let status = match e.code.as_deref() {
        Some("ResourceAlreadyExistsException" | "ResourceAlreadyExists") => StatusCode::CONFLICT,
        _ => StatusCode::BAD_GATEWAY,
    };
    ApiError::explained(status, crate::errors::explain(&e, &ctx))
}

/// The largest quota value Service Quotas takes (`DesiredValue`).
const DESIRED_MAX: f64 = 10_000_000_000.0;

/// How long the alert banner may show a survey before asking AWS again.
const BANNER_SURVEY_AGE: std::time::Duration = std::time::Duration::from_secs(15);

/// How long a survey answers the quota endpoints: many requests at once cost AWS one
/// survey, and a quota or usage read a few seconds ago is what AWS would say now.
const SURVEY_AGE: std::time::Duration = std::time::Duration::from_secs(5);

/// The last survey, when younger than `age`.
fn recent(app: &App, age: std::time::Duration) -> Option<Vec<QuotaRow>> {
    app.last_survey
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .filter(|(at, _)| at.elapsed() < age)
        .map(|(_, rows)| rows.clone())
}

/// The quota rows of `prism quota show --format json`: read from AWS, or the survey
/// of the last few seconds. One survey at a time: requests that come meanwhile share
/// its answer.
pub async fn survey(app: &App) -> Result<Vec<QuotaRow>, ApiError> {
    survey_within(app, SURVEY_AGE).await
}

/// How old a survey a request accepts: none with `Cache-Control: no-cache` (or
/// `max-age=0`), else a few seconds.
fn accepted_age(headers: &HeaderMap) -> std::time::Duration {
    let fresh = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| matches!(d.trim(), "no-cache" | "max-age=0"));
    if fresh {
        std::time::Duration::ZERO
    } else {
        SURVEY_AGE
    }
}

async fn survey_within(app: &App, age: std::time::Duration) -> Result<Vec<QuotaRow>, ApiError> {
    if let Some(rows) = recent(app, age) {
        return Ok(rows);
    }
    let _turn = app.survey_turn.lock().await;
    if let Some(rows) = recent(app, age) {
        return Ok(rows);
    }
    let cloud = app.connector.cloud().await?;
    let rows = quota::usage::survey(cloud.as_ref(), &RetryPolicy::default())
        .await
        .map_err(|e| aws(e, cloud.as_ref()))?;
    for r in &rows {
        app.metrics
            .quota(cloud.region(), &r.code, &r.name, r.limit, r.usage);
    }
    *app.last_survey.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((std::time::Instant::now(), rows.clone()));
    Ok(rows)
}

/// The quota rows for the alert banner: the last survey when it is recent (each page
/// would otherwise read every quota again), else a new one.
pub async fn survey_for_banner(app: &App) -> Result<Vec<QuotaRow>, ApiError> {
    match recent(app, BANNER_SURVEY_AGE) {
        Some(rows) => Ok(rows),
        None => survey(app).await,
    }
}

/// The region of the server's own account, when AWS can be reached.
pub async fn region(app: &App) -> Option<String> {
    let cloud = app.connector.cloud().await.ok()?;
    Some(cloud.region().to_string())
}

/// Where the quotas are read: `account 123456789012 (profile p), us-west-2`, when
/// AWS says which account.
pub async fn place(app: &App) -> Option<String> {
    let cloud = app.connector.cloud().await.ok()?;
    let account = cloud.account().await?;
    Some(super::api::place_text(&account, cloud.region()))
}

/// How long the banner's list of open requests is shared.
const OPEN_REQUESTS_AGE: std::time::Duration = std::time::Duration::from_secs(15);

/// The increase requests AWS has not answered yet (pending, or with a case open), as the
/// banner shows them: read at most every 15 s, and afresh after a request is sent from
/// here. Empty when AWS cannot be asked (the banner is no place for that error).
pub async fn open_requests(app: &App) -> Vec<Value> {
    if let Some((at, rows)) = &*app.open_requests.lock().unwrap_or_else(|e| e.into_inner())
        && at.elapsed() < OPEN_REQUESTS_AGE
    {
        return rows.clone();
    }
    let rows: Vec<Value> = requests(app, None)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| matches!(r["status"].as_str(), Some("PENDING" | "CASE_OPENED")))
        .collect();
    *app.open_requests.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((std::time::Instant::now(), rows.clone()));
    rows
}

/// The requests of `prism quota request list --format json`, with the kept notes.
pub async fn requests(app: &App, status: Option<&str>) -> Result<Vec<Value>, ApiError> {
    if let Some(s) = status
        && !REQUEST_STATUSES.contains(&s)
    {
        return Err(ApiError::bad_request(format!(
            "`{s}` is not a request status; use one of {}",
            REQUEST_STATUSES.join(", ")
        )));
    }
    let cloud = app.connector.cloud().await?;
    let rows = quota::request::list(cloud.as_ref(), status)
        .await
        .map_err(|e| aws(e, cloud.as_ref()))?;
    Ok(rows.iter().map(|r| app.notes.row(r)).collect())
}

/// A query string, or a catalogued 400 saying what is wrong with it.
pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<Query<T>, ApiError> {
    q.map_err(|e| {
        ApiError::bad_request(format!("the query string is not valid: {}", e.body_text()))
    })
}

fn class(name: &str) -> Result<&'static QuotaClass, ApiError> {
    quota::by_name(name).ok_or_else(|| {
        let names: Vec<&str> = quota::all().map(|q| q.friendly).collect();
        ApiError::new(
            StatusCode::NOT_FOUND,
            "UnknownQuota",
            format!(
                "unknown quota `{name}`; use one of {} or a quota code such as L-1216C47A",
                names.join(", ")
            ),
        )
        .fix("List the quotas with GET /api/v1/quotas.")
    })
}

pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Vec<QuotaRow>>, ApiError> {
    Ok(Json(survey_within(&app, accepted_age(&headers)).await?))
}

pub async fn show(
    State(app): State<Arc<App>>,
    UrlPath(code): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Json<QuotaRow>, ApiError> {
    let class = class(&code)?;
    let rows = survey_within(&app, accepted_age(&headers)).await?;
    let row = rows
        .into_iter()
        .find(|r| r.code == class.code)
        .expect("the survey has every known quota");
    Ok(Json(row))
}

pub async fn alerts(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Vec<Alert>>, ApiError> {
    let rows = survey_within(&app, accepted_age(&headers)).await?;
    Ok(Json(quota::usage::alerts(&rows)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    pub status: Option<String>,
}

pub async fn list_requests(
    State(app): State<Arc<App>>,
    q: Result<Query<StatusQuery>, QueryRejection>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let Query(q) = query(q)?;
    Ok(Json(requests(&app, q.status.as_deref()).await?))
}

pub async fn show_request(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let cloud = app.connector.cloud().await?;
    let r = cloud.get_quota_request(&id).await.map_err(|e| {
        let mut err = aws(e.clone(), cloud.as_ref());
        if e.code.as_deref() == Some("NoSuchQuotaRequest") {
            err.status = StatusCode::NOT_FOUND;
        }
        err
    })?;
    Ok(Json(app.notes.row(&RequestRow::from(&r))))
}

/// The body of `POST /api/v1/quotas/requests`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncreaseBody {
    pub quota: String,
    pub desired_value: f64,
    pub reason: String,
}

/// Asks AWS for `body.desired_value`, after the same check as `prism quota request`;
/// keeps the reason and the value at request time. The row with the notes.
pub async fn ask(app: &App, body: &IncreaseBody) -> Result<Value, ApiError> {
    let class = class(&body.quota)?;
    let v = body.desired_value;
    if !v.is_finite() || v <= 0.0 || v > DESIRED_MAX || v.fract() != 0.0 {
        return Err(ApiError::bad_request(format!(
            "`desired_value` {v} is not a quota value AWS takes: a whole number from 1 to {DESIRED_MAX}"
        )));
    }
    if body.reason.trim().is_empty() {
        return Err(ApiError::bad_request(
            "`reason` is empty: say why the quota should be raised",
        ));
    }
    let cloud = app.connector.cloud().await?;
    let current = quota::request::current_below(
        cloud.as_ref(),
        class,
        body.desired_value,
        &RetryPolicy::default(),
    )
    .await
    .map_err(|e| match e {
        NotAsked::Unreadable(_) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "QuotaUnreadable", e.to_string())
                .fix("Try again later; AWS did not answer for the quota's value.")
        }
        NotAsked::NotAbove { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "DesiredNotAbove",
            e.to_string(),
        )
        .fix("Ask for a value above the current one."),
    })?;
    let r = cloud
        .request_quota_increase(class.service, class.code, body.desired_value)
        .await
        .map_err(|e| aws(e, cloud.as_ref()))?;
    // The next answer reads the quota again.
    *app.last_survey.lock().unwrap_or_else(|e| e.into_inner()) = None;
    *app.open_requests.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let row = RequestRow::from(&r);
    let note = Note {
        reason: body.reason.trim().to_string(),
        value_at_request: current,
    };
    if let Err(e) = app.notes.keep(&row.request_id, note) {
        tracing::warn!(
            "cannot keep the reason of quota request {}: {e}",
            row.request_id
        );
    }
    Ok(app.notes.row(&row))
}

pub async fn request(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = json_body(&headers, body)?;
    let body: IncreaseBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the request body is not a valid quota increase request: {e}"
        ))
    })?;
    let row = ask(&app, &body).await?;
    let location = format!(
        "/api/v1/quotas/requests/{}",
        row["request_id"].as_str().unwrap_or_default()
    );
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(row),
    )
        .into_response())
}
