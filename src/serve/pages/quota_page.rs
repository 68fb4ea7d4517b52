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

use super::{Banner, Nav, banner, bar, error_box, layout, page};

#[derive(Debug, Default, Deserialize)]
pub struct QuotaQuery {
    /// The quota whose increase form is open.
    request: Option<String>,
    /// Only requests in this status.
    status: Option<String>,
    /// The request just submitted.
    submitted: Option<String>,
    /// `oldest` lists the requests oldest first; newest first otherwise.
    sort: Option<String>,
}

/// A request status in words.
pub fn status_word(status: &str) -> &str {
    match status {
        "PENDING" => "Pending",
        "CASE_OPENED" => "Case opened",
        "APPROVED" => "Approved",
        "DENIED" => "Denied",
        "CASE_CLOSED" => "Case closed",
        "NOT_APPROVED" => "Not approved",
        "INVALID_REQUEST" => "Invalid request",
        other => other,
    }
}

/// Where AWS's console shows the requests of `region`.
fn console(region: &str) -> String {
    format!("https://{region}.console.aws.amazon.com/servicequotas/home/requests?region={region}")
}

/// How long AWS took to answer this account's answered requests: the median, and how
/// many it is of. None without any.
fn answer_time(requests: &[Value]) -> Option<(std::time::Duration, usize)> {
    let mut took: Vec<i64> = requests
        .iter()
        .filter(|r| {
            matches!(
                r["status"].as_str(),
                Some("APPROVED" | "DENIED" | "NOT_APPROVED" | "CASE_CLOSED")
            )
        })
        .filter_map(|r| {
            let at = |k: &str| r[k].as_str()?.parse::<jiff::Timestamp>().ok();
            Some(at("last_updated")?.as_second() - at("submitted")?.as_second())
        })
        .filter(|s| *s >= 0)
        .collect();
    if took.is_empty() {
        return None;
    }
    took.sort_unstable();
    Some((
        std::time::Duration::from_secs(took[took.len() / 2] as u64),
        took.len(),
    ))
}

/// "within about 3h 20m (the median of 4 answered requests of this account)", or AWS's
/// own word without a history.
fn expected_answer(requests: &[Value]) -> String {
    match answer_time(requests) {
        Some((t, n)) => {
            let t = std::time::Duration::from_secs(t.as_secs().max(60) / 60 * 60);
            format!(
                "AWS answered this account's requests in {} (the median of {n} answered request{})",
                humantime::format_duration(t),
                if n == 1 { "" } else { "s" }
            )
        }
        None => "AWS answers most requests within one or two business days; small ones are often approved within minutes".into(),
    }
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
                        td.usage data-label="Usage" {
                            @if let (Some(u), Some(l)) = (r.usage, r.limit) {
                                (bar(if l > 0.0 { u / l } else if u > 0.0 { 1.0 } else { 0.0 }, class, &format!("{} % used", r.percent.map_or(0.0, |p| p.round())), None))
                            } @else { span.muted { "unknown" } }
                        }
                        td.num data-label="Used" {
                            (r.usage.map_or("?".into(), number)) " / " (r.limit.map_or("?".into(), number)) " " (r.unit)
                            @if let Some(p) = r.percent { br; span.muted { (format!("{p:.0}")) " %" } }
                        }
                        td data-label="Status" { span.badge.(class) data-field="status" { (text) } @if let Some(n) = &r.note { br; span.muted { (n) } } }
                        td data-label="" {
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
        // Nothing critical to go by: a quarter more, as a critical usage would ask.
        .unwrap_or_else(|| (current * 1.25).ceil().max(current + 1.0));
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

fn requests_section(
    requests: &Result<Vec<Value>, ApiError>,
    q: &QuotaQuery,
    region: Option<&str>,
) -> Markup {
    let oldest = q.sort.as_deref() == Some("oldest");
    let status = q.status.as_deref().unwrap_or_default();
    let link = |sort: &str| {
        let mut l = format!("/quotas?sort={sort}");
        if !status.is_empty() {
            l.push_str(&format!("&status={status}"));
        }
        l + "#requests"
    };
    let sorted: Result<Vec<Value>, &ApiError> = requests.as_ref().map(|rows| {
        let mut rows = rows.clone();
        rows.sort_by(|a, b| a["submitted"].as_str().cmp(&b["submitted"].as_str()));
        if !oldest {
            rows.reverse();
        }
        rows
    });
    html! {
        section #requests aria-labelledby="requests-title" {
            div.title-row {
                h2 #requests-title { "Increase requests" }
                @if let Some(r) = region {
                    a.external href=(console(r)) rel="noopener noreferrer" target="_blank" { "View in AWS Console (" (r) ")" }
                }
            }
            form.filters method="get" action="/quotas#requests" {
                label for="status" { "Status" }
                select #status name="status" {
                    option value="" selected[q.status.is_none()] { "All" }
                    @for s in REQUEST_STATUSES {
                        option value=(s) selected[q.status.as_deref() == Some(s)] { (status_word(s)) }
                    }
                }
                input type="hidden" name="sort" value=(if oldest { "oldest" } else { "newest" });
                button.button type="submit" #refresh { "Apply filter and refresh" }
            }
            @match &sorted {
                Err(e) => { (error_box(e)) }
                Ok(rows) if rows.is_empty() => { p.muted { "No quota increase requests." } }
                Ok(rows) => {
                    table #request-list {
                        caption.visually-hidden { "Quota increase requests, " (if oldest { "oldest" } else { "newest" }) " first" }
                        thead { tr {
                            th scope="col" { "Request" }
                            th scope="col" { "Quota" }
                            th scope="col" { "Value" }
                            th scope="col" { "Status" }
                            th scope="col" aria-sort=(if oldest { "ascending" } else { "descending" }) {
                                a #sort href=(link(if oldest { "newest" } else { "oldest" })) {
                                    "Submitted " span aria-hidden="true" { (if oldest { "↑" } else { "↓" }) }
                                    span.visually-hidden { (if oldest { ", oldest first; show newest first" } else { ", newest first; show oldest first" }) }
                                }
                            }
                            th scope="col" { "Case" }
                        } }
                        tbody {
                            @for r in rows {
                                @let id = r["request_id"].as_str().unwrap_or_default();
                                @let status = r["status"].as_str().unwrap_or_default();
                                tr data-id=(id) .just-submitted[q.submitted.as_deref() == Some(id)] {
                                    td data-label="Request" { a href={ "/quotas/requests/" (id) } { code { (id) } } }
                                    td data-label="Quota" { (r["quota"].as_str().or(r["name"].as_str()).unwrap_or_default()) }
                                    td.num data-label="Value" {
                                        @if let Some(v) = r["value_at_request"].as_f64() { (number(v)) " → " }
                                        (r["desired_value"].as_f64().map_or("?".into(), number))
                                    }
                                    td data-label="Status" { span.badge.(status.to_lowercase()) data-field="status" { (status_word(status)) } }
                                    td data-label="Submitted" { (date(&r["submitted"])) }
                                    td data-label="Case" { (r["support_case"].as_str().unwrap_or("—")) }
                                }
                            }
                        }
                    }
                    p.muted { (expected_answer(rows)) "." }
                }
            }
        }
    }
}

/// The steps of a request, and how far it got: (step, reached).
fn steps(status: &str) -> Vec<(&'static str, bool)> {
    let answered = !matches!(status, "PENDING" | "CASE_OPENED");
    let last = match status {
        "APPROVED" => "Approved",
        "DENIED" | "NOT_APPROVED" => "Not approved",
        "CASE_CLOSED" => "Case closed",
        "INVALID_REQUEST" => "Invalid request",
        _ => "Answered",
    };
    vec![
        ("Submitted", true),
        ("Case opened with AWS Support", status != "PENDING"),
        (last, answered),
    ]
}

/// `GET /quotas/requests/{id}`: one request, its steps and when an answer can be
/// expected.
pub async fn request_detail(
    State(app): State<Arc<App>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let all = quotas::requests(&app, None).await;
    let region = quotas::region(&app).await;
    let banner_data = Banner::of(&app, &headers).await;
    let back = format!("/quotas/requests/{id}");
    let found = all.as_ref().ok().and_then(|rows| {
        rows.iter()
            .find(|r| r["request_id"] == id.as_str())
            .cloned()
    });
    let Some(r) = found else {
        let main = html! {
            h1 { "No such request" }
            @if let Err(e) = &all { (error_box(e)) } @else { p { "AWS has no increase request " code { (id) } " in this account and region." } }
            p { a href="/quotas#requests" { "See the requests" } }
        };
        return page(
            StatusCode::NOT_FOUND,
            layout(
                "Quota request",
                Nav::Quotas,
                banner(&banner_data, &back),
                main,
            ),
        );
    };
    let status = r["status"].as_str().unwrap_or_default();
    let open = matches!(status, "PENDING" | "CASE_OPENED");
    let history = all.as_deref().unwrap_or_default();
    let main = html! {
        div.title-row {
            h1 { "Request " code { (id) } }
            a.button href=(back) { "Refresh" }
        }
        section.card.request-detail aria-labelledby="detail-title" {
            h2 #detail-title { (r["name"].as_str().unwrap_or_default()) }
            dl {
                dt { "Quota" } dd { code { (r["code"].as_str().unwrap_or_default()) } " · " (r["service"].as_str().unwrap_or_default()) }
                dt { "Value" } dd {
                    @if let Some(v) = r["value_at_request"].as_f64() { (number(v)) " → " }
                    strong { (r["desired_value"].as_f64().map_or("?".into(), number)) }
                }
                dt { "Reason" } dd { (r["reason"].as_str().unwrap_or("— (not sent from this server)")) }
                dt { "Status" } dd { span.badge.(status.to_lowercase()) #detail-status { (status_word(status)) } }
                dt { "Submitted" } dd { (date(&r["submitted"])) }
                dt { "Last change" } dd { (date(&r["last_updated"])) }
                dt { "Support case" } dd { (r["support_case"].as_str().unwrap_or("—")) }
            }
            h3 { "Steps" }
            ol.steps {
                @for (step, reached) in steps(status) {
                    li.done[reached] { (step) @if reached { span.visually-hidden { " (done)" } } }
                }
            }
            @if open {
                p #estimate { (expected_answer(history)) "." }
            }
            @if let Some(region) = &region {
                p { a.external href=(console(region)) rel="noopener noreferrer" target="_blank" { "Open the requests in the AWS Console (" (region) ")" } }
            }
        }
        p { a href="/quotas#requests" { "All requests" } }
    };
    page(
        StatusCode::OK,
        layout(
            "Quota request",
            Nav::Quotas,
            banner(&banner_data, &back),
            main,
        ),
    )
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
    let banner_data = Banner::from_alerts(app, alerts, headers).await;
    let region = quotas::region(app).await;
    let place = quotas::place(app).await;
    let open = form.map(|f| f.3.to_string()).or_else(|| q.request.clone());
    let main = html! {
        div.title-row {
            h1 { "Quotas" }
            a.button href="/quotas" { "Refresh" }
        }
        @if let Some(place) = &place { p.muted #place { "In " (place) } }
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
        (requests_section(&requests, q, region.as_deref()))
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
