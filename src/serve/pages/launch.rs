//! The Launch page (manifests with their plans, the launches) and a launch's progress page.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use crate::engine::progress::duration_text;
use crate::quota::request::number;
use crate::serve::App;
use crate::serve::api;

use super::{Banner, Nav, banner, bar, error_box, layout, page};

/// Whether the regular file at `path` is a manifest (it names a fleet) rather than a
/// templates file or other YAML: read capped, and never from a pipe.
fn is_manifest(path: &std::path::Path) -> bool {
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let Ok(text) = crate::manifest::read_text(path, &path.display().to_string()) else {
        // Unreadable or too large: listed, so that the page says why.
        return true;
    };
    match serde_yaml::from_str::<serde_yaml::Value>(&text) {
        Ok(serde_yaml::Value::Mapping(m)) => m.contains_key("name"),
        // Broken YAML may be a manifest being written: listed, with its problems.
        Ok(_) => false,
        Err(_) => true,
    }
}

/// The manifests under `--manifests` (`.yaml`/`.yml`, two levels deep), as paths
/// relative to it, sorted: templates files and other YAML without a fleet `name` are
/// left out.
fn manifest_files(app: &App) -> Vec<String> {
    let Some(root) = &app.manifests else {
        return vec![];
    };
    let mut out = vec![];
    let mut dirs = vec![(root.clone(), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() && depth < 1 {
                dirs.push((path, depth + 1));
            } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml")
                && is_manifest(&path)
                && let Ok(rel) = path.strip_prefix(root)
            {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

fn state_label(state: &str) -> &str {
    match state {
        "queued" => "Queued",
        "running" => "Running",
        "cancelling" => "Cancelling",
        "succeeded" => "Succeeded",
        "partly_done" => "Partly done",
        "failed" => "Failed",
        "cancelled" => "Cancelled",
        "interrupted" => "Interrupted",
        other => other,
    }
}

/// A launch's state as the pages say it: a partly done launch says how many it left
/// out, and why when every one of them was the quota.
fn state_text(v: &Value) -> String {
    let state = v["state"].as_str().unwrap_or_default();
    if state != "partly_done" {
        return state_label(state).to_string();
    }
    let p = &v["progress"];
    let left = p["skipped"].as_u64().unwrap_or(0) + p["waiting_for_quota"].as_u64().unwrap_or(0);
    let rows = v["workspaces"].as_array().cloned().unwrap_or_default();
    let for_quota = rows
        .iter()
        .filter(|w| matches!(w["state"].as_str(), Some("skipped" | "waiting_for_quota")))
        .all(|w| {
            w["skip_reason_code"]
                .as_str()
                .is_some_and(|c| crate::engine::Verdict::QUOTA_CODES.contains(&c))
        });
    format!(
        "Partly done — {left} skipped{}",
        if for_quota { " for quota" } else { "" }
    )
}

/// What a launch will carry out: its workspaces less those skipped before they began.
fn will_launch(progress: &Value) -> u64 {
    let total = progress["total"].as_u64().unwrap_or(0);
    total.saturating_sub(progress["skipped"].as_u64().unwrap_or(0))
}

fn launches_table(app: &App) -> Markup {
    let launches = app.registry.all();
    html! {
        @if launches.is_empty() {
            p.muted { "No launches yet." }
        } @else {
            table {
                caption.visually-hidden { "Launches, newest first" }
                thead { tr { th scope="col" { "Launch" } th scope="col" { "Fleet" } th scope="col" { "State" } th scope="col" { "Progress" } th scope="col" { "Started" } } }
                tbody {
                    @for l in &launches {
                        @let v = l.view();
                        @let state = v["state"].as_str().unwrap_or_default().to_string();
                        tr {
                            td data-label="Launch" { a href={ "/launches/" (l.id()) } { code { (l.id()) } } }
                            td data-label="Fleet" { (v["fleet"].as_str().unwrap_or_default()) }
                            td data-label="State" { span.badge.(state) { (state_text(&v)) } }
                            td data-label="Progress" { (v["progress"]["completed"].as_u64().unwrap_or(0)) " / " (will_launch(&v["progress"])) }
                            td data-label="Started" { time datetime=(v["created_at"].as_str().unwrap_or_default()) { (v["created_at"].as_str().unwrap_or_default()) } }
                        }
                    }
                }
            }
        }
    }
}

async fn manifest_card(app: &App, rel: &str) -> Markup {
    let planned = api::plan_file(app, rel).await;
    html! {
        article.card.manifest {
            h3 { code { (rel) } }
            @match &planned {
                Err(e) => { (error_box(e)) }
                Ok((plan, gate)) => {
                    @let s = &plan.summary;
                    p {
                        "Fleet " strong { (plan.fleet) } " in " (plan.region) ": "
                        @if s.total() == 0 { "in its declared state, nothing to do." } @else {
                            (s.create) " to create"
                            @if s.start > 0 { ", " (s.start) " to start" }
                            @if s.stop > 0 { ", " (s.stop) " to stop" }
                            @if s.replace > 0 { ", " (s.replace) " to replace" }
                            @if s.delete > 0 { ", " (s.delete) " to delete" }
                            "."
                        }
                    }
                    ul.quota-fit {
                        @for q in &plan.quota {
                            li {
                                @if gate.shortfalls.iter().any(|f| f.code == q.code) {
                                    span.badge.critical { "Short" } " "
                                } @else {
                                    span.badge.ok { "Fits" } " "
                                }
                                (q.name) ": needs " (q.needed) " vCPUs, "
                                (q.usage.map_or("?".into(), |u| u.to_string())) " of "
                                (q.limit.map_or("?".into(), number)) " in use"
                            }
                        }
                    }
                    @if s.total() > 0 {
                        @let short = !gate.shortfalls.is_empty();
                        @let fits = s.create.saturating_sub(gate.over_quota.len());
                        @let nothing_fits = short && fits == 0 && s.start == 0 && s.replace == 0;
                        form method="post" action="/launches"
                            data-confirm-title={ "Apply " (rel) "?" }
                            data-confirm-text=(confirm_text(plan, gate))
                            data-confirm-button="Apply" {
                            input type="hidden" name="manifest_path" value=(rel);
                            @if short {
                                p.notice.warning {
                                    @if nothing_fits {
                                        "None of the " (gate.over_quota.len()) " workspaces fits the quota now. "
                                        "Apply and wait for quota launches them as soon as the quota has room (for up to an hour); "
                                        a href="/quotas" { "ask for more quota" } " first."
                                    } @else {
                                        (gate.over_quota.len()) " workspaces do not fit the quota. "
                                        "Apply launches the " (fits) " that fit (in name order) and skips the rest; "
                                        "Apply and wait for quota launches the rest as soon as the quota has room (for up to an hour)."
                                    }
                                }
                                input type="hidden" name="allow_partial" value="true";
                            }
                            @if s.delete > 0 {
                                label.consent {
                                    input type="checkbox" name="allow_delete" value="true" required;
                                    span { "Also delete " (s.delete) " workspace" @if s.delete > 1 { "s" } " the manifest no longer has (their disks are deleted with them)." }
                                }
                            }
                            div.actions {
                                @if !nothing_fits {
                                    button.button.primary type="submit" { "Apply" }
                                }
                                @if short {
                                    button.button.primary[nothing_fits] type="submit" name="wait_for_quota" value=(WAIT_FOR_QUOTA) {
                                        "Apply and wait for quota"
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What the Apply dialog asks: how many workspaces, their vCPUs and what they cost per
/// hour, and what is deleted.
fn confirm_text(plan: &crate::plan::Plan, gate: &crate::engine::gate::Gate) -> String {
    use crate::plan::ActionKind;
    let launches: Vec<_> = plan
        .actions
        .iter()
        .filter(|a| {
            matches!(
                a.action,
                ActionKind::Create | ActionKind::Replace | ActionKind::Start
            )
        })
        .filter(|a| !gate.over_quota.contains_key(&a.workspace))
        .collect();
    let vcpus: u32 = launches.iter().filter_map(|a| a.vcpus).sum();
    let hourly: f64 = launches
        .iter()
        .filter_map(|a| crate::plan::cost::hourly_usd(&a.instance_type))
        .sum();
    let mut text = format!(
        "This starts {} workspace{} of fleet {} in {}: {vcpus} vCPUs, about ${hourly:.2} per hour while they run ({}).",
        launches.len(),
        if launches.len() == 1 { "" } else { "s" },
        plan.fleet,
        plan.region,
        crate::plan::cost::PRICE_SOURCE,
    );
    if !gate.over_quota.is_empty() {
        text.push_str(&format!(
            " {} more do not fit the quota now.",
            gate.over_quota.len()
        ));
    }
    if plan.summary.stop > 0 {
        text.push_str(&format!(" {} are stopped.", plan.summary.stop));
    }
    if plan.summary.delete > 0 {
        text.push_str(&format!(
            " {} are deleted, with their disks.",
            plan.summary.delete
        ));
    }
    text
}

pub async fn launch_page(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let banner_data = Banner::of(&app, &headers).await;
    let files = manifest_files(&app);
    let mut cards = vec![];
    for f in &files {
        cards.push(manifest_card(&app, f).await);
    }
    let main = html! {
        h1 { "Launch" }
        section aria-labelledby="manifests-title" {
            h2 #manifests-title { "Manifests" }
            @if app.manifests.is_none() {
                p.muted { "Start " code { "prism serve --manifests DIR" } " to launch the manifests of a folder from here." }
            } @else if files.is_empty() {
                p.muted { "No manifest (.yaml) in the manifests folder." }
            }
            div.cards { @for c in cards { (c) } }
        }
        section aria-labelledby="launches-title" {
            h2 #launches-title { "Launches" }
            (launches_table(&app))
        }
    };
    page(
        StatusCode::OK,
        layout("Launch", Nav::Launch, banner(&banner_data, "/"), main),
    )
}

/// How long a launch from the Launch page waits for quota when asked to.
const WAIT_FOR_QUOTA: &str = "1h";

#[derive(Debug, Deserialize)]
pub struct ApplyForm {
    manifest_path: String,
    #[serde(default)]
    allow_partial: Option<String>,
    #[serde(default)]
    allow_delete: Option<String>,
    #[serde(default)]
    wait_for_quota: Option<String>,
}

pub async fn apply(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(f): Form<ApplyForm>,
) -> Response {
    let allow = f.allow_partial.as_deref() == Some("true");
    let delete = f.allow_delete.as_deref() == Some("true");
    match api::launch_file(&app, &f.manifest_path, allow, delete, f.wait_for_quota).await {
        Ok(l) => Redirect::to(&format!("/launches/{}", l.id())).into_response(),
        Err(e) => {
            let banner_data = Banner::of(&app, &headers).await;
            let running = e.body["error"]["launch"].as_str().map(str::to_string);
            let main = html! {
                h1 { "Launch" }
                @if let Some(id) = &running {
                    div.notice.warning {
                        p { strong { "A launch of this fleet is still running." } }
                        p { a href={ "/launches/" (id) } { "Follow launch " code { (id) } } " — cancel it there, or wait for it to end, then apply again." }
                    }
                } @else {
                    (error_box(&e))
                }
                p { a href="/" { "Back to the manifests" } }
            };
            page(
                e.status,
                layout("Launch", Nav::Launch, banner(&banner_data, "/"), main),
            )
        }
    }
}

// ---- Launch progress -----------------------------------------------------------------

/// How a workspace's state reads on the page.
pub fn workspace_label(state: &str) -> &str {
    match state {
        "queued" => "queued",
        "waiting_for_limiter" => "queued",
        "launching" => "launching",
        "retrying" => "launching (retrying)",
        "launched" => "launched",
        "changed" => "changed",
        "running" => "running",
        "stopped" => "stopped",
        "failed" => "failed",
        "skipped" => "skipped",
        "waiting_for_quota" => "waiting for quota",
        "cancelled" => "not launched",
        "launched_elsewhere" => "launched by another run",
        other => other,
    }
}

fn progress_section(v: &Value) -> Markup {
    let p = &v["progress"];
    let total = will_launch(p);
    let skipped = p["skipped"].as_u64().unwrap_or(0);
    let completed = p["completed"].as_u64().unwrap_or(0);
    let fraction = if total == 0 {
        0.0
    } else {
        completed as f64 / total as f64
    };
    let rate = p["rate_per_minute"].as_f64();
    let eta = p["estimated_time_remaining_s"].as_f64();
    let waiting = p["waiting_for_quota"].as_u64().unwrap_or(0);
    html! {
        div.progress {
            p.count {
                span #done { (completed) } " / " span #total { (total) } " workspaces"
                span.muted #skipped { @if skipped > 0 { " · " (skipped) " skipped" } }
            }
            (bar(fraction, "launch", &format!("{completed} of {total} launched"), Some("launch-bar")))
            p.status #rate {
                @if let Some(r) = rate { "Rate limited to " (number(r.round())) " per minute" }
                @if p["rate_limited"].as_bool() == Some(true) { " · waiting for the rate limit" }
            }
            p.status #eta data-eta=[eta.filter(|s| *s >= 1.0)] {
                @if let Some(s) = eta.filter(|s| *s >= 1.0) { "About " (duration_text(std::time::Duration::from_secs_f64(s))) " remaining" }
            }
            p.status #waiting {
                @if waiting > 0 { (waiting_text(waiting)) }
            }
        }
    }
}

/// The progress line of workspaces waiting for quota (app.js writes the same).
fn waiting_text(n: u64) -> String {
    format!(
        "{n} waiting for quota: {} in name order as soon as the quota has room",
        if n == 1 { "it launches" } else { "they launch" }
    )
}

fn workspace_rows(v: &Value) -> Markup {
    let rows = v["workspaces"].as_array().cloned().unwrap_or_default();
    html! {
        @for w in &rows {
            @let name = w["name"].as_str().unwrap_or_default();
            @let state = w["state"].as_str().unwrap_or_default();
            @let attempts = w["attempts"].as_u64().unwrap_or(0);
            tr data-name=(name) {
                th scope="row" { (name) }
                td data-label="State" { span.badge.(state) data-field="state" { (workspace_label(state)) } }
                td data-field="instance" data-label="Instance" { @if let Some(i) = w["instance_id"].as_str() { code { (i) } } }
                td data-field="zone" data-label="Zone" { (w["availability_zone"].as_str().unwrap_or_default()) }
                td data-field="retries" data-label="Retries" { (attempts.saturating_sub(1)) }
                td data-field="error" data-label="Problem" {
                    @if let Some(t) = w["error"]["title"].as_str() {
                        strong { (t) } br; span.muted { (w["error"]["what_you_can_do"].as_str().unwrap_or_default()) }
                    } @else if let Some(r) = w["skip_reason"].as_str() { span.muted { (r) } }
                }
            }
        }
    }
}

fn summary(v: &Value) -> Markup {
    let r = &v["report"];
    if r.is_null() {
        return html! {};
    }
    let failed = r["failed"].as_array().map_or(0, Vec::len);
    let skipped = r["skipped"].as_array().map_or(0, Vec::len);
    html! {
        section.card.summary aria-labelledby="summary-title" {
            h2 #summary-title { "Summary" }
            dl {
                dt { "Launched" } dd { (r["launched"]) }
                dt { "Succeeded" } dd { (r["succeeded"]) " of " (r["total"]) }
                dt { "Failed" } dd { (failed) }
                dt { "Skipped" } dd { (skipped) }
                dt { "Not launched" } dd { (r["not_started"]) }
                @if let Some(s) = v["progress"]["elapsed_s"].as_f64() { dt { "Time" } dd { (duration_text(std::time::Duration::from_secs_f64(s))) } }
            }
        }
    }
}

pub async fn launch_progress(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let banner_data = Banner::of(&app, &headers).await;
    let back = format!("/launches/{id}");
    let Ok(launch) = api::find(&app, &id) else {
        let main = html! { h1 { "No such launch" } p { a href="/" { "See the launches" } } };
        return page(
            StatusCode::NOT_FOUND,
            layout("Launch", Nav::Launch, banner(&banner_data, &back), main),
        );
    };
    let v = launch.view();
    let state = v["state"].as_str().unwrap_or_default().to_string();
    let active = launch.state().is_active();
    let p = &v["progress"];
    let (done, total) = (p["completed"].as_u64().unwrap_or(0), will_launch(p));
    let main = html! {
        div.launch #launch data-id=(id) data-active=(active) {
            div.title-row {
                h1 { "Launch of " (v["fleet"].as_str().unwrap_or_default()) }
                span role="status" { span.badge.(state) #launch-state { (state_text(&v)) } }
            }
            p.muted { "Launch " code { (id) } " · started " (v["created_at"].as_str().unwrap_or_default()) @if let Some(place) = v["place"].as_str() { " · in " (place) } }
            p.notice.warning.connection #connection role="status" {}
            @if state == "queued" { p.notice.warning #queued-note { "Waiting for the launch before it in this account and region to finish." } }
            @if state == "interrupted" {
                div.notice.warning #interrupted-note {
                    p { strong { "prism serve stopped while this launch ran" } " (a restart or a shutdown): " (done) " of " (total) " workspaces were launched before it stopped." }
                    @if v["resumable"].as_bool() == Some(true) {
                        p { "Resume carries on where it stopped: the workspaces launched already are found, none is launched twice." }
                        form method="post" action={ "/launches/" (id) "/resume" } {
                            button.button.primary type="submit" { "Resume" }
                        }
                    }
                }
            }
            @if let Some(t) = v["error"]["title"].as_str() { div.notice.critical { strong { (t) } pre.explain { (v["error"]["what_happened"].as_str().unwrap_or_default()) } } }
            section.card aria-label="Progress" { (progress_section(&v)) }
            @if active {
                form method="post" action={ "/launches/" (id) "/cancel" } #cancel-form
                    data-confirm-title="Cancel the remaining launches?"
                    data-confirm-text="Launches already sent finish and their workspaces stay; nothing new starts. You can apply the manifest again later."
                    data-confirm-button="Cancel launches"
                    data-confirm-keep="Keep launching" {
                    button.button.danger type="submit" { "Cancel remaining launches" }
                    span.muted { " Launches already sent finish; nothing new starts." }
                }
            }
            (summary(&v))
            table #workspaces {
                caption.visually-hidden { "Workspaces of this launch" }
                thead { tr { th scope="col" { "Workspace" } th scope="col" { "State" } th scope="col" { "Instance" } th scope="col" { "Zone" } th scope="col" { "Retries" } th scope="col" { "Problem" } } }
                tbody { (workspace_rows(&v)) }
            }
            noscript { p.muted { "Reload the page to see newer progress." } }
        }
    };
    page(
        StatusCode::OK,
        layout(
            "Launch progress",
            Nav::Launch,
            banner(&banner_data, &back),
            main,
        ),
    )
}

/// Resumes an interrupted launch from its page.
pub async fn resume(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    match api::resume(State(app.clone()), UrlPath(id.clone())).await {
        Ok(_) => Redirect::to(&format!("/launches/{id}")).into_response(),
        Err(e) => {
            let banner_data = Banner::of(&app, &headers).await;
            let back = format!("/launches/{id}");
            let main = html! {
                h1 { "Resume" }
                (error_box(&e))
                p { a href=(back) { "Back to the launch" } }
            };
            page(
                e.status,
                layout("Resume", Nav::Launch, banner(&banner_data, &back), main),
            )
        }
    }
}

pub async fn cancel(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> Response {
    if let Ok(l) = api::find(&app, &id)
        && let Err(e) = api::cancel_anywhere(&app, &l).await
    {
        return e.into_response();
    }
    Redirect::to(&format!("/launches/{id}")).into_response()
}
