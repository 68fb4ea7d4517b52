//! The Quotas page: usage bars, the increase form and the requests.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use crate::quota::Status;
use crate::quota::request::number;
use crate::quota::usage::QuotaRow;
use crate::serve::App;
use crate::serve::error::ApiError;
use crate::serve::quotas::{self, IncreaseBody, REQUEST_STATUSES};

use super::{Banner, CONSOLE, Nav, banner, bar, error_box, layout, page};

#[derive(Debug, Default, Deserialize)]
pub struct QuotaQuery {
    /// The quota whose increase form is open.
    request: Option<String>,
    /// Only requests in this status.
    status: Option<String>,
    /// The request just submitted.
    submitted: Option<String>,
}

fn status_text(s: Status) -> (&'static str, &'static str) {
    match s {
        Status::Critical => ("critical", "Critical"),
        Status::Warning => ("warning", "Warning"),
        Status::Ok => ("ok", "Healthy"),
        _ => ("unknown", "Unknown"),
    }
}

fn quota_table(rows: &[QuotaRow]) -> Markup {
    html! {
        table.quotas {
            caption.visually-hidden { "Quotas with their usage" }
            thead { tr { th scope="col" { "Quota" } th scope="col" { "Usage" } th scope="col" { "Used" } th scope="col" { "Status" } th scope="col" { span.visually-hidden { "Action" } } } }
            tbody {
                @for r in rows {
                    @let (class, text) = status_text(r.status);
                    tr data-code=(r.code) {
                        th scope="row" { (r.name) br; span.muted { code { (r.code) } " · " (r.quota) } }
                        td.usage {
                            @if let (Some(u), Some(l)) = (r.usage, r.limit) {
                                (bar(if l > 0.0 { u / l } else if u > 0.0 { 1.0 } else { 0.0 }, class, &format!("{} % used", r.percent.map_or(0.0, |p| p.round())), None))
                            } @else { span.muted { "unknown" } }
                        }
                        td.num {
                            (r.usage.map_or("?".into(), number)) " / " (r.limit.map_or("?".into(), number)) " " (r.unit)
                            @if let Some(p) = r.percent { br; span.muted { (format!("{p:.0}")) " %" } }
                        }
                        td { span.badge.(class) data-field="status" { (text) } @if let Some(n) = &r.note { br; span.muted { (n) } } }
                        td {
                            @if r.adjustable == Some(true) && r.limit.is_some() {
                                a.button.small href={ "/quotas?request=" (r.code) "#request-form" } aria-label={ "Request increase of " (r.name) } { "Request increase" }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn request_form(
    row: &QuotaRow,
    error: Option<&ApiError>,
    reason: &str,
    desired: Option<f64>,
) -> Markup {
    let current = row.limit.unwrap_or(0.0);
    let suggested = desired
        .or(row.recommended_value)
        .or_else(|| {
            row.usage
                .and_then(|u| crate::quota::arith::recommended_value(u, row.limit))
        })
        .filter(|d| *d > current)
        .unwrap_or(current + 1.0);
    let step = if row.unit == "vCPUs" { "1" } else { "any" };
    let min = if row.unit == "vCPUs" {
        number(current + 1.0)
    } else {
        number(current)
    };
    html! {
        section.card #request-form aria-labelledby="request-title" {
            h2 #request-title { "Request an increase: " (row.name) }
            @if let Some(e) = error { (error_box(e)) }
            form #increase method="post" action="/quotas/requests" data-current=(current) {
                input type="hidden" name="quota" value=(row.code);
                div.field {
                    label for="current" { "Current value" }
                    output #current name="current" { (number(current)) " " (row.unit) }
                }
                div.field {
                    label for="desired" { "Desired value (" (row.unit) ")" }
                    input #desired type="number" name="desired_value" required min=(min) step=(step) value=(number(suggested)) aria-describedby="desired-help desired-error";
                    span #desired-help .muted { "Must be above " (number(current)) ". Suggested: " (number(suggested)) "." }
                    span #desired-error .field-error role="alert" {}
                }
                div.field {
                    label for="reason" { "Reason" }
                    textarea #reason name="reason" required rows="3" aria-describedby="reason-help reason-error" { (reason) }
                    span #reason-help .muted { "Kept by prism with the request (AWS keeps no reason)." }
                    span #reason-error .field-error role="alert" {}
                }
                div.actions {
                    button.button.primary type="submit" { "Submit request" }
                    a.button href="/quotas" { "Cancel" }
                }
            }
        }
    }
}

fn requests_section(requests: &Result<Vec<Value>, ApiError>, q: &QuotaQuery) -> Markup {
    html! {
        section #requests aria-labelledby="requests-title" {
            div.title-row {
                h2 #requests-title { "Increase requests" }
                a.external href=(CONSOLE) rel="noopener noreferrer" target="_blank" { "View in AWS Console" }
            }
            form.filters method="get" action="/quotas#requests" {
                label for="status" { "Status" }
                select #status name="status" {
                    option value="" selected[q.status.is_none()] { "All" }
                    @for s in REQUEST_STATUSES {
                        option value=(s) selected[q.status.as_deref() == Some(s)] { (s) }
                    }
                }
                button.button type="submit" #refresh { "Refresh" }
            }
            @match requests {
                Err(e) => { (error_box(e)) }
                Ok(rows) if rows.is_empty() => { p.muted { "No quota increase requests." } }
                Ok(rows) => {
                    table #request-list {
                        caption.visually-hidden { "Quota increase requests, newest first" }
                        thead { tr { th scope="col" { "Request" } th scope="col" { "Quota" } th scope="col" { "Value" } th scope="col" { "Reason" } th scope="col" { "Status" } th scope="col" { "Submitted" } th scope="col" { "Updated" } th scope="col" { "Case" } } }
                        tbody {
                            @for r in rows {
                                @let id = r["request_id"].as_str().unwrap_or_default();
                                @let status = r["status"].as_str().unwrap_or_default();
                                tr data-id=(id) .just-submitted[q.submitted.as_deref() == Some(id)] {
                                    td { code { (id) } }
                                    td { (r["quota"].as_str().or(r["name"].as_str()).unwrap_or_default()) }
                                    td.num {
                                        @if let Some(v) = r["value_at_request"].as_f64() { (number(v)) " → " }
                                        (r["desired_value"].as_f64().map_or("?".into(), number))
                                    }
                                    td { (r["reason"].as_str().unwrap_or("—")) }
                                    td { span.badge.(status.to_lowercase()) data-field="status" { (status) } }
                                    td { (date(&r["submitted"])) }
                                    td { (date(&r["last_updated"])) }
                                    td { (r["support_case"].as_str().unwrap_or("—")) }
                                }
                            }
                        }
                    }
                    p.muted { "AWS usually answers within one or two business days." }
                }
            }
        }
    }
}

/// An RFC 3339 date as the tables show it: `2026-03-01 09:30 UTC`.
fn date(v: &Value) -> Markup {
    match v.as_str() {
        Some(d) => {
            let shown = d.get(..16).unwrap_or(d).replace('T', " ");
            html! { time datetime=(d) { (shown) " UTC" } }
        }
        None => html! { "—" },
    }
}

async fn quotas_view(
    app: &App,
    headers: &HeaderMap,
    q: &QuotaQuery,
    form: Option<(&ApiError, &str, Option<f64>, &str)>,
) -> Response {
    let rows = quotas::survey(app).await;
    let requests = quotas::requests(app, q.status.as_deref().filter(|s| !s.is_empty())).await;
    let alerts = rows
        .as_ref()
        .map(|r| crate::quota::usage::alerts(r))
        .unwrap_or_default();
    let banner_data = Banner::from_alerts(alerts, headers);
    let open = form.map(|f| f.3.to_string()).or_else(|| q.request.clone());
    let main = html! {
        div.title-row {
            h1 { "Quotas" }
            a.button href="/quotas" { "Refresh" }
        }
        @match &rows {
            Err(e) => { (error_box(e)) }
            Ok(rows) => {
                (quota_table(rows))
                p.legend.muted { span.badge.ok { "Healthy" } " under 50 % · " span.badge.warning { "Warning" } " 50–80 % · " span.badge.critical { "Critical" } " over 80 %" }
                @if let Some(code) = &open {
                    @if let Some(row) = crate::quota::by_name(code).and_then(|c| rows.iter().find(|r| r.code == c.code)) {
                        @if let Some((e, reason, desired, _)) = form {
                            (request_form(row, Some(e), reason, desired))
                        } @else {
                            (request_form(row, None, "", None))
                        }
                    }
                }
            }
        }
        @if let Some(id) = &q.submitted {
            p.notice.ok role="status" { "Request " code { (id) } " was sent to AWS." }
        }
        (requests_section(&requests, q))
    };
    let status = form.map_or(StatusCode::OK, |f| f.0.status);
    page(
        status,
        layout("Quotas", Nav::Quotas, banner(&banner_data, "/quotas"), main),
    )
}

pub async fn quotas_page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<QuotaQuery>,
) -> Response {
    quotas_view(&app, &headers, &q, None).await
}

#[derive(Debug, Deserialize)]
pub struct IncreaseForm {
    quota: String,
    desired_value: String,
    reason: String,
}

pub async fn request_increase(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(f): Form<IncreaseForm>,
) -> Response {
    let desired = f
        .desired_value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite());
    let result = match desired {
        None => Err(
            ApiError::bad_request(format!("`{}` is not a number", f.desired_value))
                .fix("Enter the desired value as a number."),
        ),
        Some(d) => {
            quotas::ask(
                &app,
                &IncreaseBody {
                    quota: f.quota.clone(),
                    desired_value: d,
                    reason: f.reason.clone(),
                },
            )
            .await
        }
    };
    match result {
        Ok(row) => Redirect::to(&format!(
            "/quotas?submitted={}#requests",
            row["request_id"].as_str().unwrap_or_default()
        ))
        .into_response(),
        Err(e) => {
            quotas_view(
                &app,
                &headers,
                &QuotaQuery::default(),
                Some((&e, &f.reason, desired, &f.quota)),
            )
            .await
        }
    }
}
