//! The layers every request passes: security headers on every answer, the Host check
//! (DNS rebinding), the Origin / Sec-Fetch-Site check on requests that change state
//! (CSRF), and the bearer token on `/api/`. No CORS headers are ever sent.
//!
//! The web pages sign in with a cookie instead: the one-time login link printed at
//! start (or the token pasted into the login form) sets an `HttpOnly; SameSite=Strict`
//! cookie. The cookie is accepted by the pages and by the API calls of the pages; a
//! request it authenticates that changes state must come from this server's own pages
//! (Origin or `Sec-Fetch-Site`).

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// What the checks compare with.
#[derive(Debug)]
pub struct Guard {
    /// The API token.
    pub token: String,
    /// The `Host` values accepted (`127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`, and
    /// the listen address when remote access is allowed).
    pub hosts: Vec<String>,
    /// The code of the one-time login link; None once used.
    login: Mutex<Option<String>>,
}

/// The name of the cookie the pages sign in with.
pub const COOKIE: &str = "prism_session";

/// Paths that need no sign-in.
fn open_path(path: &str) -> bool {
    path == "/healthz" || path == "/login" || path.starts_with("/assets/")
}

impl Guard {
    pub fn new(token: String, port: u16, listen_host: Option<String>) -> Arc<Guard> {
        let mut hosts: Vec<String> = ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .map(|h| format!("{h}:{port}"))
            .collect();
        hosts.extend(listen_host.map(|h| format!("{h}:{port}")));
        Arc::new(Guard {
            token,
            hosts,
            login: Mutex::new(None),
        })
    }

    /// A new one-time login code (the previous one no longer works).
    pub fn new_login_code(&self) -> String {
        let code = super::token::fresh();
        *self.login.lock().unwrap_or_else(|e| e.into_inner()) = Some(code.clone());
        code
    }

    /// Whether `code` is the login code; it is then used up.
    pub fn use_login_code(&self, code: &str) -> bool {
        let mut login = self.login.lock().unwrap_or_else(|e| e.into_inner());
        let ok = login
            .as_deref()
            .is_some_and(|c| bool::from(c.as_bytes().ct_eq(code.as_bytes())));
        if ok {
            *login = None;
        }
        ok
    }

    /// Whether `given` is the API token.
    pub fn is_token(&self, given: &str) -> bool {
        given.trim().as_bytes().ct_eq(self.token.as_bytes()).into()
    }

    /// The `Set-Cookie` value that signs a browser in.
    pub fn session_cookie(&self) -> String {
        format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", self.token)
    }

    /// Whether the request carries the sign-in cookie.
    pub fn cookie_ok(&self, headers: &HeaderMap) -> bool {
        cookie(headers, COOKIE).is_some_and(|v| self.is_token(&v))
    }

    fn host_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| self.hosts.iter().any(|ok| ok.eq_ignore_ascii_case(h)))
    }

    fn token_ok(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            // The scheme is case-insensitive (RFC 9110 §11.1).
            .and_then(|(scheme, token)| {
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
        else {
            return false;
        };
        self.is_token(given)
    }
}

/// The value of cookie `name`, when the request has it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Whether a browser says the request comes from this server's own pages.
fn from_own_page(headers: &HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").map(|s| s.to_str());
    let origin = headers.get(header::ORIGIN).is_some();
    (matches!(site, Some(Ok("same-origin"))) || origin) && same_origin(headers)
}

/// Whether a request that changes state comes from a page of this server (or from a
/// client that is no browser: those send neither header).
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.to_str(), Ok("same-origin" | "none"))
    {
        return false;
    }
    match headers.get(header::ORIGIN).map(|o| o.to_str()) {
        None => true,
        Some(Ok(origin)) => headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|host| origin.eq_ignore_ascii_case(&format!("http://{host}"))),
        Some(Err(_)) => false,
    }
}

/// Refuses a request whose `Host` is not this server's loopback address (403).
pub async fn check_host(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    if !guard.host_ok(req.headers()) {
        return ApiError::forbidden("the request's Host header does not name this server")
            .into_response();
    }
    next.run(req).await
}

/// Refuses a state-changing request sent from another site (403).
pub async fn check_origin(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && !same_origin(req.headers()) {
        return ApiError::forbidden("a request from another site may not change anything here")
            .into_response();
    }
    next.run(req).await
}

/// Refuses an API call without the right bearer token or sign-in cookie (401), and
/// sends a page request without the cookie to the login page. A request signed in by
/// the cookie that changes state must come from this server's own pages (403).
pub async fn require_token(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if open_path(path) {
        return next.run(req).await;
    }
    let api = path.starts_with("/api/");
    if api && guard.token_ok(req.headers()) {
        return next.run(req).await;
    }
    if !guard.cookie_ok(req.headers()) {
        if api {
            return ApiError::unauthorized().into_response();
        }
        return axum::response::Redirect::to("/login").into_response();
    }
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    if !safe && !from_own_page(req.headers()) {
        return ApiError::forbidden("a request from another site may not change anything here")
            .into_response();
    }
    next.run(req).await
}

/// Adds the security headers to every answer.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::middleware::{from_fn, from_fn_with_state};
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    const TOKEN: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

    fn app() -> Router {
        let guard = Guard::new(TOKEN.into(), 7878, None);
        Router::new()
            .route("/api/x", get(|| async { "ok" }).post(|| async { "ok" }))
            .route(
                "/page",
                get(|| async { "page" }).post(|| async { "posted" }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .layer(from_fn_with_state(guard.clone(), require_token))
            .layer(from_fn(check_origin))
            .layer(from_fn_with_state(guard, check_host))
            .layer(from_fn(security_headers))
    }

    async fn status(req: Request<Body>) -> (StatusCode, axum::http::HeaderMap) {
        let r = app().oneshot(req).await.unwrap();
        (r.status(), r.headers().clone())
    }

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<Body> {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    const AUTH: (&str, &str) = (
        "authorization",
        "Bearer 0123456789abcdefghijklmnopqrstuvwxyzABCDEFG",
    );

    #[tokio::test]
    async fn the_token_is_needed_on_the_api_only() {
        let host = ("host", "127.0.0.1:7878");
        let (s, h) = status(req("GET", "/api/x", &[host])).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(h["www-authenticate"], "Bearer");
        let wrong = (
            "authorization",
            "Bearer 0123456789abcdefghijklmnopqrstuvwxyzABCDEF_",
        );
        assert_eq!(
            status(req("GET", "/api/x", &[host, wrong])).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(req("GET", "/api/x", &[host, ("authorization", TOKEN)]))
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(req("GET", "/api/x", &[host, AUTH])).await.0,
            StatusCode::OK
        );
        assert_eq!(
            status(req("GET", "/healthz", &[host])).await.0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn the_cookie_signs_in_pages_and_their_api_calls_from_this_site_only() {
        let host = ("host", "127.0.0.1:7878");
        let cookie = (
            "cookie",
            "other=1; prism_session=0123456789abcdefghijklmnopqrstuvwxyzABCDEFG",
        );
        let (s, h) = status(req("GET", "/page", &[host])).await;
        assert_eq!(
            (s, h["location"].to_str().unwrap()),
            (StatusCode::SEE_OTHER, "/login")
        );
        let wrong = ("cookie", "prism_session=nope");
        assert_eq!(
            status(req("GET", "/page", &[host, wrong])).await.0,
            StatusCode::SEE_OTHER
        );
        assert_eq!(
            status(req("GET", "/api/x", &[host, wrong])).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(req("GET", "/page", &[host, cookie])).await.0,
            StatusCode::OK
        );
        assert_eq!(
            status(req("GET", "/api/x", &[host, cookie])).await.0,
            StatusCode::OK
        );
        // A change signed in by the cookie needs a browser's word that it comes from here.
        for path in ["/page", "/api/x"] {
            assert_eq!(
                status(req("POST", path, &[host, cookie])).await.0,
                StatusCode::FORBIDDEN,
                "{path}"
            );
            let same = ("sec-fetch-site", "same-origin");
            assert_eq!(
                status(req("POST", path, &[host, cookie, same])).await.0,
                StatusCode::OK
            );
            let origin = ("origin", "http://127.0.0.1:7878");
            assert_eq!(
                status(req("POST", path, &[host, cookie, origin])).await.0,
                StatusCode::OK
            );
            let null = ("origin", "null");
            assert_eq!(
                status(req("POST", path, &[host, cookie, null])).await.0,
                StatusCode::FORBIDDEN
            );
        }
    }

    #[test]
    fn the_login_code_works_once() {
        let guard = Guard::new(TOKEN.into(), 7878, None);
        assert!(!guard.use_login_code("anything"));
        let code = guard.new_login_code();
        assert_eq!(code.len(), 43);
        assert!(!guard.use_login_code("wrong"));
        assert!(guard.use_login_code(&code));
        assert!(!guard.use_login_code(&code));
        assert_eq!(
            guard.session_cookie(),
            format!("prism_session={TOKEN}; HttpOnly; SameSite=Strict; Path=/")
        );
    }

    #[tokio::test]
    async fn a_foreign_host_is_refused() {
        for host in [
            "127.0.0.1:7878",
            "localhost:7878",
            "[::1]:7878",
            "LOCALHOST:7878",
        ] {
            assert_eq!(
                status(req("GET", "/healthz", &[("host", host)])).await.0,
                StatusCode::OK,
                "{host}"
            );
        }
        for host in [
            "evil.example:7878",
            "127.0.0.1:80",
            "127.0.0.1",
            "localhost.evil:7878",
        ] {
            assert_eq!(
                status(req("GET", "/healthz", &[("host", host)])).await.0,
                StatusCode::FORBIDDEN,
                "{host}"
            );
        }
        assert_eq!(
            status(req("GET", "/healthz", &[])).await.0,
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test]
    async fn a_cross_site_post_is_refused_even_with_the_token() {
        let host = ("host", "127.0.0.1:7878");
        for bad in [
            [("origin", "http://evil.example"), ("x", "")],
            [("origin", "null"), ("x", "")],
            [("sec-fetch-site", "cross-site"), ("x", "")],
            [
                ("sec-fetch-site", "same-site"),
                ("origin", "http://127.0.0.1:7878"),
            ],
        ] {
            let r = req("POST", "/api/x", &[host, AUTH, bad[0], bad[1]]);
            assert_eq!(status(r).await.0, StatusCode::FORBIDDEN, "{bad:?}");
        }
        for good in [
            [
                ("origin", "http://127.0.0.1:7878"),
                ("sec-fetch-site", "same-origin"),
            ],
            [("x", ""), ("y", "")],
        ] {
            let r = req("POST", "/api/x", &[host, AUTH, good[0], good[1]]);
            assert_eq!(status(r).await.0, StatusCode::OK, "{good:?}");
        }
        // Reading is not changing: a GET from elsewhere still needs the token, no more.
        let r = req(
            "GET",
            "/api/x",
            &[host, AUTH, ("origin", "http://evil.example")],
        );
        assert_eq!(status(r).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn every_answer_has_the_security_headers_and_no_cors() {
        for r in [
            req("GET", "/healthz", &[("host", "127.0.0.1:7878")]),
            req("GET", "/healthz", &[("host", "evil:7878")]),
            req(
                "GET",
                "/api/x",
                &[("host", "127.0.0.1:7878"), ("origin", "http://evil")],
            ),
        ] {
            let (_, h) = status(r).await;
            assert_eq!(h["x-content-type-options"], "nosniff");
            assert_eq!(h["cache-control"], "no-store");
            assert!(
                h["content-security-policy"]
                    .to_str()
                    .unwrap()
                    .contains("script-src 'self'")
            );
            assert!(h.keys().all(|k| !k.as_str().starts_with("access-control-")));
        }
    }
}
