//! Signing in and out: the one-time link, the token form, sign-out, and dismissing the
//! alert banner.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use crate::serve::guard::{Guard, Peer, SignedIn};

use super::{DISMISSED, Nav, layout, page};

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    code: Option<String>,
    signed_out: Option<String>,
}

fn signed_in(guard: &Guard, headers: &HeaderMap, peer: Peer) -> Response {
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&guard.begin_session(headers, peer)).expect("a cookie is ASCII"),
    );
    r
}

/// Too many attempts from this address: 429 with the wait.
fn slow_down(wait: u64) -> Response {
    let mut r = login_page(
        StatusCode::TOO_MANY_REQUESTS,
        Some(&format!(
            "Too many sign-in attempts from this address. Try again in {wait} s."
        )),
    );
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&wait.to_string()).expect("digits"),
    );
    r
}

fn login_page(status: StatusCode, message: Option<&str>) -> Response {
    page(
        status,
        layout(
            "Sign in",
            Nav::None,
            html! {},
            html! {
                section.card.narrow {
                    h1 { "Sign in" }
                    @if let Some(m) = message { p.notice.warning role="alert" { (m) } }
                    p { "Open the sign-in link " code { "prism serve" } " printed when it started, or paste the API token from the " code { "token" } " file of its state directory." }
                    form method="post" action="/login" {
                        label for="token" { "API token" }
                        input #token type="password" name="token" autocomplete="off" required;
                        button.button.primary type="submit" { "Sign in" }
                    }
                }
            },
        ),
    )
}

pub async fn login(
    State(guard): State<Arc<Guard>>,
    peer: Peer,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if q.code.is_some()
        && let Err(wait) = guard.attempt(peer)
    {
        return slow_down(wait);
    }
    match q.code {
        Some(code) if guard.use_login_code(&code) => signed_in(&guard, &headers, peer),
        Some(_) => login_page(
            StatusCode::UNAUTHORIZED,
            Some(
                "This sign-in link was used already or is not this server's. Paste the API token instead, or restart prism serve for a new link.",
            ),
        ),
        None if q.signed_out.is_some() => login_page(StatusCode::OK, Some("You are signed out.")),
        None => login_page(StatusCode::OK, None),
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login_post(
    State(guard): State<Arc<Guard>>,
    peer: Peer,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if let Err(wait) = guard.attempt(peer) {
        return slow_down(wait);
    }
    if guard.is_token(&f.token) {
        signed_in(&guard, &headers, peer)
    } else {
        login_page(StatusCode::UNAUTHORIZED, Some("That is not the API token."))
    }
}

/// Ends this browser's session and forgets its cookie.
pub async fn logout(
    State(guard): State<Arc<Guard>>,
    session: Option<axum::Extension<SignedIn>>,
) -> Response {
    if let Some(axum::Extension(SignedIn(handle))) = session {
        guard.sessions.end(&handle);
    }
    let mut r = Redirect::to("/login?signed_out=1").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&guard.end_session_cookie()).expect("a cookie is ASCII"),
    );
    r
}

#[derive(Debug, Deserialize)]
pub struct DismissForm {
    signature: String,
    back: String,
}

/// Hides the banner until the alerts change.
pub async fn dismiss(Form(f): Form<DismissForm>) -> Response {
    let back = if f.back.starts_with('/') && !f.back.starts_with("//") {
        f.back
    } else {
        "/".into()
    };
    let cookie: String = f
        .signature
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-._".contains(*c))
        .collect();
    let mut r = Redirect::to(&back).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{DISMISSED}={cookie}; HttpOnly; SameSite=Strict; Path=/"
        ))
        .expect("ASCII"),
    );
    r
}
