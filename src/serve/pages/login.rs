//! Signing in: the one-time link, the token form, and dismissing the alert banner.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use crate::serve::guard::Guard;

use super::{DISMISSED, Nav, layout, page};

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    code: Option<String>,
}

fn signed_in(guard: &Guard) -> Response {
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&guard.session_cookie()).expect("a cookie is ASCII"),
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

pub async fn login(State(guard): State<Arc<Guard>>, Query(q): Query<LoginQuery>) -> Response {
    match q.code {
        Some(code) if guard.use_login_code(&code) => signed_in(&guard),
        Some(_) => login_page(
            StatusCode::UNAUTHORIZED,
            Some(
                "This sign-in link was used already or is not this server's. Paste the API token instead, or restart prism serve for a new link.",
            ),
        ),
        None => login_page(StatusCode::OK, None),
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login_post(State(guard): State<Arc<Guard>>, Form(f): Form<LoginForm>) -> Response {
    if guard.is_token(&f.token) {
        signed_in(&guard)
    } else {
        login_page(StatusCode::UNAUTHORIZED, Some("That is not the API token."))
    }
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
