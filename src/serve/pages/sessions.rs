//! The Sessions page: every browser signed in, when it began and was last used, and a
//! way to end any of them (the API has the same list and the same revocation).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use crate::serve::error::ApiError;
use crate::serve::guard::{Guard, SignedIn};
use crate::serve::sessions::SessionView;

use super::{Nav, layout, page};

/// "2026-12-03 22:40 UTC".
fn when(unix: u64) -> String {
    jiff::Timestamp::from_second(unix as i64)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// "12 hours", "7 days", "90 minutes".
fn spoken(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = match s {
        _ if s >= 86_400 && s.is_multiple_of(86_400) => (s / 86_400, "day"),
        _ if s >= 3_600 && s.is_multiple_of(3_600) => (s / 3_600, "hour"),
        _ if s >= 60 && s.is_multiple_of(60) => (s / 60, "minute"),
        _ => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// "Chrome 131 on Linux" is more than we can promise from a `User-Agent`; the first
/// product and the platform in brackets are what people recognise.
fn browser(agent: &str) -> String {
    let platform = agent
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(p, _)| p.split(';').next().unwrap_or(p).trim().to_string());
    let product = agent
        .split_whitespace()
        .rev()
        .find(|w| w.contains('/') && !w.starts_with("Safari/") && !w.starts_with("Mozilla/"))
        .map(|w| w.replace('/', " "))
        .unwrap_or_else(|| agent.chars().take(40).collect());
    match platform {
        Some(p) if !p.is_empty() => format!("{product} ({p})"),
        _ => product,
    }
}

pub async fn sessions_page(
    State(guard): State<Arc<Guard>>,
    current: Option<axum::Extension<SignedIn>>,
) -> Response {
    let current = current.map(|axum::Extension(SignedIn(h))| h);
    let sessions = guard.sessions.list();
    let life = guard.sessions.lifetimes();
    let others = sessions
        .iter()
        .filter(|s| Some(&s.id) != current.as_ref())
        .count();
    let main = html! {
        div.title-row {
            h1 { "Sessions" }
            @if others > 0 {
                form method="post" action="/sessions/end-others" {
                    button.button.danger type="submit" { "Sign out all other browsers" }
                }
            }
        }
        p.muted {
            "Each browser that signed in has a session. A session ends after "
            (spoken(life.idle)) " without use, "
            (spoken(life.absolute)) " after it began, when its browser signs out, or when you end it here. "
            code { "prism serve --rotate-token" } " ends them all."
        }
        div.table-box {
            table #sessions {
                caption.visually-hidden { "Browsers signed in" }
                thead { tr {
                    th scope="col" { "Browser" }
                    th scope="col" { "Address" }
                    th scope="col" { "Signed in" }
                    th scope="col" { "Last used" }
                    th scope="col" { "Ends" }
                    th scope="col" { span.visually-hidden { "Action" } }
                } }
                tbody {
                    @for s in &sessions {
                        tr data-session=(s.id) {
                            th scope="row" data-label="Browser" {
                                (browser(&s.session.browser))
                                @if Some(&s.id) == current.as_ref() { " " span.badge.ok { "This browser" } }
                            }
                            td data-label="Address" { (s.session.address) }
                            td data-label="Signed in" { (when(s.session.began)) }
                            td data-label="Last used" { (when(s.session.last_used)) }
                            td data-label="Ends" { (when(s.expires)) }
                            td data-label="" {
                                @if Some(&s.id) == current.as_ref() {
                                    form method="post" action="/logout" {
                                        button.button.small type="submit" { "Sign out" }
                                    }
                                } @else {
                                    form method="post" action={ "/sessions/" (s.id) "/end" } {
                                        button.button.small.danger type="submit" aria-label={ "End the session of " (browser(&s.session.browser)) " from " (s.session.address) } { "End" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(
        StatusCode::OK,
        layout("Sessions", Nav::Sessions, html! {}, main),
    )
}

/// Ends one session from the page.
pub async fn end_session(
    State(guard): State<Arc<Guard>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    guard.sessions.end(&id);
    Redirect::to("/sessions").into_response()
}

/// Ends every session but this browser's.
pub async fn end_others(
    State(guard): State<Arc<Guard>>,
    current: Option<axum::Extension<SignedIn>>,
) -> Response {
    let current = current.map(|axum::Extension(SignedIn(h))| h);
    for s in guard.sessions.list() {
        if Some(&s.id) != current.as_ref() {
            guard.sessions.end(&s.id);
        }
    }
    Redirect::to("/sessions").into_response()
}

/// `GET /api/v1/sessions`.
pub async fn list_api(State(guard): State<Arc<Guard>>) -> Json<serde_json::Value> {
    let sessions: Vec<SessionView> = guard.sessions.list();
    Json(serde_json::json!({ "sessions": sessions }))
}

/// `DELETE /api/v1/sessions/{id}`: 204, or 404 when there is no such session.
pub async fn end_api(
    State(guard): State<Arc<Guard>>,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    if guard.sessions.end(&id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("there is no session with this id")
            .fix("List the sessions with GET /api/v1/sessions."))
    }
}

#[cfg(test)]
mod tests {
    use super::{browser, spoken};
    use std::time::Duration;

    #[test]
    fn lifetimes_are_said_in_words() {
        assert_eq!(spoken(Duration::from_secs(12 * 3600)), "12 hours");
        assert_eq!(spoken(Duration::from_secs(7 * 86_400)), "7 days");
        assert_eq!(spoken(Duration::from_secs(3600)), "1 hour");
        assert_eq!(spoken(Duration::from_secs(90)), "90 seconds");
    }

    #[test]
    fn a_browser_is_named_by_its_product_and_platform() {
        assert_eq!(
            browser(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
            ),
            "Chrome 131.0.0.0 (X11)"
        );
        assert_eq!(browser("curl/8.5.0"), "curl 8.5.0");
        assert_eq!(browser("unknown browser"), "unknown browser");
    }
}
