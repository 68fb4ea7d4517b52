//! `GET /api/v1/workspaces`: the rows of `prism workspace list --format json`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::App;
use super::error::ApiError;
use super::quotas::query;
use crate::inventory::{LIST_STATES, WorkspaceRow, rows};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceQuery {
    pub fleet: Option<String>,
    pub project: Option<String>,
    pub state: Option<String>,
}

/// The rows of `prism workspace list --format json`.
pub async fn workspace_rows(app: &App, q: &WorkspaceQuery) -> Result<Vec<WorkspaceRow>, ApiError> {
    if let Some(s) = &q.state
        && !LIST_STATES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "`{s}` is not a workspace state; use one of {}",
            LIST_STATES.join(", ")
        )));
    }
    let cloud = app.connector.cloud().await?;
    rows(
        cloud.as_ref(),
        q.fleet.as_deref(),
        q.project.as_deref(),
        q.state.as_deref(),
        std::time::SystemTime::now(),
    )
    .await
    .map_err(|e| {
        let ctx = crate::errors::Context {
            region: Some(cloud.region().to_string()),
            ..Default::default()
        };
        ApiError::explained(StatusCode::BAD_GATEWAY, crate::errors::explain(&e, &ctx))
    })
}

pub async fn workspaces(
    State(app): State<Arc<App>>,
    q: Result<Query<WorkspaceQuery>, QueryRejection>,
) -> Result<Json<Vec<WorkspaceRow>>, ApiError> {
    let Query(q) = query(q)?;
    Ok(Json(workspace_rows(&app, &q).await?))
}
