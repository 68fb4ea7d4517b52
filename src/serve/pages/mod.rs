//! The web pages: server-rendered HTML that shows the current state without JavaScript,
//! one small script (`app.js`) that follows a launch with `EventSource`, and a style
//! sheet. Every action is a plain form posted to this server; the handlers call the
//! same functions as the API.

mod launch;
mod login;
mod quota_page;
mod sessions;

pub use launch::{apply, cancel, launch_page, launch_progress, resume};
pub use login::{dismiss, login, login_post, logout};
pub use quota_page::{quotas_page, request_detail, request_increase};
pub use sessions::{end_api, end_others, end_session, list_api, sessions_page};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::App;
use super::error::ApiError;
use super::guard;
use super::quotas;
use crate::quota::request::number;
use crate::quota::usage::Alert;

/// The cookie that hides the alert banner until the alerts change.
const DISMISSED: &str = "prism_dismissed";

pub const SCRIPT: &str = include_str!("../assets/app.js");
pub const STYLE: &str = include_str!("../assets/app.css");
pub const ICON: &str = include_str!("../assets/icon.svg");

/// The files under `/assets/`: (name, body, content type).
const ASSETS: [(&str, &str, &str); 3] = [
    ("app.js", SCRIPT, "text/javascript; charset=utf-8"),
    ("app.css", STYLE, "text/css; charset=utf-8"),
    ("icon.svg", ICON, "image/svg+xml"),
];

/// Each asset's name with its content's digest in it (`app.3f9a…c2.js`): the pages link
/// to these, and browsers keep them for a year, since another content is another name.
static HASHED: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    use sha2::Digest;
    ASSETS
        .iter()
        .map(|(name, body, _)| {
            let digest = sha2::Sha256::digest(body.as_bytes());
            let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
            let (stem, ext) = name.rsplit_once('.').expect("a name with an extension");
            format!("{stem}.{hex}.{ext}")
        })
        .collect()
});

/// The address of asset `name` (`app.js`) as the pages link to it.
pub fn asset_url(name: &str) -> String {
    let i = ASSETS
        .iter()
        .position(|(n, _, _)| *n == name)
        .expect("a known asset");
    format!("/assets/{}", HASHED[i])
}

/// `GET /assets/{file}`: by its digest name, cached for a year; by its plain name
/// (links kept from elsewhere), checked again on every use.
pub async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let found = ASSETS.iter().enumerate().find_map(|(i, a)| {
        if HASHED[i] == file {
            Some((a, "public, max-age=31536000, immutable"))
        } else if a.0 == file {
            Some((a, "no-cache"))
        } else {
            None
        }
    });
    match found {
        Some(((_, body, kind), cache)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
                (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            ],
            *body,
        )
            .into_response(),
        None => ApiError::not_found("there is no such asset").into_response(),
    }
}

/// Which page a layout is for, to mark it in the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Launch,
    Quotas,
    Sessions,
    None,
}

/// The alerts and what the banner shows of them.
struct Banner {
    alerts: Vec<Alert>,
    /// Increase requests AWS has not answered yet.
    open: Vec<serde_json::Value>,
    /// Identifies this set of alerts: a dismissal hides the banner until it changes.
    signature: String,
    dismissed: bool,
}

impl Banner {
    async fn of(app: &App, headers: &HeaderMap) -> Banner {
        let alerts = match quotas::survey_for_banner(app).await {
            Ok(rows) => crate::quota::usage::alerts(&rows),
            Err(_) => vec![],
        };
        Banner::from_alerts(app, alerts, headers).await
    }

    async fn from_alerts(app: &App, alerts: Vec<Alert>, headers: &HeaderMap) -> Banner {
        let open = if alerts.is_empty() {
            vec![]
        } else {
            quotas::open_requests(app).await
        };
        let signature: String = alerts
            .iter()
            .map(|a| format!("{}-{}-{}", a.code, a.usage, a.limit))
            .collect::<Vec<_>>()
            .join(".");
        let dismissed = guard::cookie(headers, DISMISSED).is_some_and(|c| c == signature);
        Banner {
            alerts,
            open,
            signature,
            dismissed,
        }
    }
}

/// "vCPU quota is 88 % used (28/32)".
pub fn alert_text(a: &Alert) -> String {
    let what = match crate::quota::by_name(&a.code) {
        Some(c) if c.unit == "vCPUs" => "vCPU quota".to_string(),
        _ => format!("{} quota", a.name),
    };
    format!(
        "{what} is {} % used ({}/{})",
        a.percent.map_or("-".into(), |p| format!("{p:.0}")),
        number(a.usage),
        number(a.limit)
    )
}

fn banner(b: &Banner, back: &str) -> Markup {
    if b.alerts.is_empty() || b.dismissed {
        return html! {};
    }
    let critical = b.alerts.iter().any(|a| a.severity == "critical");
    let level = if critical { "critical" } else { "warning" };
    html! {
        section.banner.(level) aria-labelledby="banner-title" {
            div.banner-text {
                h2 #banner-title .visually-hidden {
                    @if critical { "Critical quota alert" } @else { "Quota warning" }
                }
                @for a in &b.alerts {
                    p {
                        span.badge.(a.severity) { @if a.severity == "critical" { "Critical" } @else { "Warning" } }
                        " "
                        strong { (alert_text(a)) }
                        " "
                        span.muted { "· " (a.name) }
                        @if let Some(r) = b.open.iter().find(|r| r["code"] == a.code.as_str()) {
                            " · "
                            a href={ "/quotas/requests/" (r["request_id"].as_str().unwrap_or_default()) } {
                                "an increase to " (r["desired_value"].as_f64().map_or("?".into(), number)) " is "
                                (quota_page::status_word(r["status"].as_str().unwrap_or_default()).to_lowercase())
                            }
                        }
                    }
                }
            }
            div.banner-actions {
                @if b.open.iter().any(|r| r["code"] == b.alerts[0].code.as_str()) {
                    a.button href="/quotas#requests" { "See the requests" }
                } @else {
                    a.button.primary href={ "/quotas?request=" (b.alerts[0].code) "#request-form" } { "Request increase" }
                }
                form method="post" action="/alerts/dismiss" {
                    input type="hidden" name="signature" value=(b.signature);
                    input type="hidden" name="back" value=(back);
                    button.button type="submit" { "Dismiss" }
                }
            }
        }
    }
}

fn layout(title: &str, nav: Nav, banner_html: Markup, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · prism" }
                link rel="stylesheet" href=(asset_url("app.css"));
                link rel="icon" href=(asset_url("icon.svg")) type="image/svg+xml";
                script src=(asset_url("app.js")) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { img src=(asset_url("icon.svg")) alt="" width="22" height="22"; " prism" }
                    nav aria-label="Pages" {
                        a href="/" aria-current=[(nav == Nav::Launch).then_some("page")] { "Launch" }
                        a href="/quotas" aria-current=[(nav == Nav::Quotas).then_some("page")] { "Quotas" }
                        a href="/sessions" aria-current=[(nav == Nav::Sessions).then_some("page")] { "Sessions" }
                    }
                    @if nav != Nav::None {
                        form.sign-out method="post" action="/logout" {
                            button.button.small type="submit" { "Sign out" }
                        }
                    }
                }
                (banner_html)
                main #main { (main) }
            }
        }
    }
}

/// The page of an address with nothing at it.
pub fn not_found_page(path: &str) -> Response {
    let main = html! {
        h1 { "Nothing here" }
        p { "There is no page at " code { (path) } "." }
        p { a href="/" { "Back to the launches" } " · " a href="/quotas" { "Quotas" } }
    };
    page(
        StatusCode::NOT_FOUND,
        layout("Not found", Nav::None, html! {}, main),
    )
}

fn page(status: StatusCode, markup: Markup) -> Response {
    (status, markup).into_response()
}

/// A usage bar: an SVG rectangle as wide as `fraction` (0–1), coloured by `class`.
fn bar(fraction: f64, class: &str, label: &str, id: Option<&str>) -> Markup {
    let width = format!("{:.1}", (fraction.clamp(0.0, 1.0) * 1000.0).round() / 10.0);
    html! {
        svg.bar.(class) id=[id] viewBox="0 0 100 10" preserveAspectRatio="none" role="img" aria-label=(label) {
            rect.track x="0" y="0" width="100" height="10" rx="0" {}
            rect.fill x="0" y="0" width=(width) height="10" rx="0" {}
        }
    }
}

fn error_box(e: &ApiError) -> Markup {
    let err = &e.body["error"];
    let text = |k: &str| err[k].as_str().unwrap_or_default().to_string();
    html! {
        div.notice.critical {
            p { strong { (text("title")) } }
            @if text("what_happened") != text("title") { pre.explain { (text("what_happened")) } }
            @if !text("what_you_can_do").is_empty() { p { (text("what_you_can_do")) } }
            @if let Some(problems) = err["problems"].as_array() {
                ul {
                    @for p in problems {
                        li { (p["line"]) ":" (p["column"]) " " (p["message"].as_str().unwrap_or_default()) }
                    }
                }
            }
        }
    }
}
