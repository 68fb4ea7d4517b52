//! The layers every request passes: security headers on every answer, the Host check
//! (DNS rebinding), the Origin / Sec-Fetch-Site check on requests that change state
//! (CSRF), and the bearer token on `/api/`. No CORS headers are ever sent.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// What the checks compare with.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The API token.
    pub token: String,
    /// The `Host` values accepted (`127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`, and
    /// the listen address when remote access is allowed).
    pub hosts: Vec<String>,
}

impl Guard {
    pub fn new(token: String, port: u16, listen_host: Option<String>) -> Arc<Guard> {
        let mut hosts: Vec<String> = ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .map(|h| format!("{h}:{port}"))
            .collect();
        hosts.extend(listen_host.map(|h| format!("{h}:{port}")));
        Arc::new(Guard { token, hosts })
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
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        given.trim().as_bytes().ct_eq(self.token.as_bytes()).into()
    }
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

/// Refuses an API call without the right bearer token (401).
pub async fn require_token(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/api/") && !guard.token_ok(req.headers()) {
        return ApiError::unauthorized().into_response();
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
        (header::REFERRER_POLICY, "no-referrer"),
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
