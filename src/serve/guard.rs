//! The layers every request passes: security headers on every answer, the Host check
//! (DNS rebinding), the Origin / Sec-Fetch-Site check on requests that change state
//! (CSRF), and the bearer token on `/api/`. No CORS headers are ever sent.
//!
//! The web pages sign in with a session instead: the one-time login link printed at
//! start (or the token pasted into the login form) begins a server-side session whose
//! random id the browser keeps in an `HttpOnly; SameSite=Strict` cookie (never the
//! token). The session is accepted by the pages and by the API calls of the pages; a
//! request it authenticates that changes state must come from this server's own pages
//! (Origin or `Sec-Fetch-Site`). Sign-in attempts are limited per address.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::sessions::Sessions;

/// The address a browser reaches this server at, when it is not the listen address:
/// `--public-url` (behind a reverse proxy, or a name in DNS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// `https://prism.example.edu` (scheme, host, port when not the scheme's own).
    pub origin: String,
    /// The `Host` header browsers send for it.
    pub host: String,
    /// Served over HTTPS: the cookie is `Secure` and `__Host-` prefixed.
    pub secure: bool,
}

impl PublicUrl {
    /// Parses `--public-url`: an `http` or `https` URL with a host and no path.
    pub fn parse(text: &str) -> Result<PublicUrl, String> {
        let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        let secure = match url.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(format!(
                    "{text:?}: the scheme must be http or https, not {other}"
                ));
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| format!("{text:?} names no host"))?
            .to_ascii_lowercase();
        if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
            return Err(format!(
                "{text:?}: give the address only (scheme, host, port), with no path, query or user"
            ));
        }
        let host = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        Ok(PublicUrl {
            origin: format!("{}://{host}", url.scheme()),
            host,
            secure,
        })
    }
}

/// Where the server listens and how it is reached.
#[derive(Debug, Clone)]
pub struct Door {
    pub listen: SocketAddr,
    /// `--allow-remote`.
    pub remote: bool,
    pub public: Option<PublicUrl>,
}

impl Door {
    /// A loopback door on `port` (tests).
    pub fn loopback(port: u16) -> Door {
        Door {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            remote: false,
            public: None,
        }
    }

    /// The address printed for people: the public URL, else the listen address.
    pub fn base_url(&self) -> String {
        if let Some(p) = &self.public {
            return p.origin.clone();
        }
        // A wildcard address is no address to visit: this machine's loopback is.
        match self.listen {
            SocketAddr::V6(a) if a.ip().is_unspecified() => format!("http://[::1]:{}", a.port()),
            SocketAddr::V4(a) if a.ip().is_unspecified() => {
                format!("http://127.0.0.1:{}", a.port())
            }
            SocketAddr::V6(a) => format!("http://[{}]:{}", a.ip(), a.port()),
            SocketAddr::V4(a) => format!("http://{a}"),
        }
    }

    /// Whether `host` (a `Host` header) names this server. Loopback names, the listen
    /// address and the public URL's host always do; with remote access allowed on a
    /// wildcard address, so does any IP address at the listen port (a literal address
    /// cannot be rebound by DNS).
    fn host_ok(&self, host: &str) -> bool {
        let port = self.listen.port();
        let host = host.to_ascii_lowercase();
        if ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .any(|h| host == format!("{h}:{port}"))
        {
            return true;
        }
        if self.public.as_ref().is_some_and(|p| p.host == host) {
            return true;
        }
        let Ok(addr) = host.parse::<SocketAddr>() else {
            return false;
        };
        addr.port() == port
            && (addr.ip() == self.listen.ip() || (self.remote && self.listen.ip().is_unspecified()))
    }
}

/// What the checks compare with.
#[derive(Debug)]
pub struct Guard {
    /// The API token (replicas adopt a rotation made on another one).
    token: std::sync::RwLock<String>,
    pub door: Door,
    pub sessions: Sessions,
    /// The code of the one-time login link; None once used.
    login: Mutex<Option<String>>,
    /// Sign-in attempts per address.
    attempts: DefaultKeyedRateLimiter<IpAddr>,
}

/// The name of the cookie the pages sign in with over plain HTTP.
pub const COOKIE: &str = "prism_session";
/// Its name over HTTPS: browsers keep it for this exact host, path `/`, secure only.
pub const SECURE_COOKIE: &str = "__Host-prism_session";

/// Sign-in attempts allowed per address: a burst of 10, then one every 6 s.
const ATTEMPTS_PER_MINUTE: u32 = 10;

/// Paths that need no sign-in.
fn open_path(path: &str) -> bool {
    path == "/healthz" || path == "/login" || path.starts_with("/assets/")
}

/// The session a page request was signed in with (absent for bearer-token calls).
#[derive(Debug, Clone)]
pub struct SignedIn(pub String);

/// The address a request came from (the proxy's, behind one).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

impl Guard {
    pub fn new(token: String, door: Door, sessions: Sessions) -> Arc<Guard> {
        let per_minute = NonZeroU32::new(ATTEMPTS_PER_MINUTE).expect("not zero");
        Arc::new(Guard {
            token: std::sync::RwLock::new(token),
            door,
            sessions,
            login: Mutex::new(None),
            attempts: RateLimiter::keyed(Quota::per_minute(per_minute)),
        })
    }

    /// A new one-time login code (the previous one no longer works).
    pub fn new_login_code(&self) -> String {
        let code = super::api_token::fresh();
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

    /// Counts a sign-in attempt from `peer`: Err(seconds to wait) when it has made too
    /// many.
    pub fn attempt(&self, peer: Peer) -> Result<(), u64> {
        let ip = peer.0.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        self.attempts.check_key(&ip).map_err(|not_until| {
            let clock = governor::clock::DefaultClock::default();
            not_until
                .wait_time_from(governor::clock::Clock::now(&clock))
                .as_secs()
                .max(1)
        })
    }

    /// Whether `given` is the API token.
    pub fn is_token(&self, given: &str) -> bool {
        let token = self.token.read().unwrap_or_else(|e| e.into_inner());
        given.trim().as_bytes().ct_eq(token.as_bytes()).into()
    }

    /// Replaces the API token (rotated on another replica); true when it changed.
    pub fn set_token(&self, token: &str) -> bool {
        let mut now = self.token.write().unwrap_or_else(|e| e.into_inner());
        let changed = *now != token;
        token.clone_into(&mut now);
        changed
    }

    fn cookie_name(&self) -> &'static str {
        if self.door.public.as_ref().is_some_and(|p| p.secure) {
            SECURE_COOKIE
        } else {
            COOKIE
        }
    }

    /// Begins a session for a browser; returns the `Set-Cookie` value that carries it.
    pub fn begin_session(&self, headers: &HeaderMap, peer: Peer) -> String {
        let browser = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown browser");
        let address = peer.0.map(|ip| ip.to_string()).unwrap_or_default();
        let id = self.sessions.begin(browser, &address);
        let max_age = self.sessions.lifetimes().absolute.as_secs();
        let secure = if self.cookie_name() == SECURE_COOKIE {
            "; Secure"
        } else {
            ""
        };
        format!(
            "{}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}",
            self.cookie_name()
        )
    }

    /// The `Set-Cookie` value that makes a browser forget its session.
    pub fn end_session_cookie(&self) -> String {
        let secure = if self.cookie_name() == SECURE_COOKIE {
            "; Secure"
        } else {
            ""
        };
        format!(
            "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}",
            self.cookie_name()
        )
    }

    /// The session the request's cookie names, when it is live.
    pub fn session(&self, headers: &HeaderMap) -> Option<String> {
        cookie(headers, self.cookie_name()).and_then(|id| self.sessions.check(&id))
    }

    fn host_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| self.door.host_ok(h))
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

    /// Whether a browser says the request comes from this server's own pages.
    fn sent_by_own_page(&self, headers: &HeaderMap) -> bool {
        let site = headers.get("sec-fetch-site").map(|s| s.to_str());
        let origin = headers.get(header::ORIGIN).is_some();
        (matches!(site, Some(Ok("same-origin"))) || origin) && self.same_origin(headers)
    }

    /// Whether a request that changes state comes from a page of this server (or from a
    /// client that is no browser: those send neither header). The origin is the address
    /// the request was sent to, or the public URL.
    fn same_origin(&self, headers: &HeaderMap) -> bool {
        if let Some(site) = headers.get("sec-fetch-site")
            && !matches!(site.to_str(), Ok("same-origin" | "none"))
        {
            return false;
        }
        match headers.get(header::ORIGIN).map(|o| o.to_str()) {
            None => true,
            Some(Ok(origin)) => {
                let public = self.door.public.as_ref().map(|p| p.origin.as_str());
                public.is_some_and(|p| origin.eq_ignore_ascii_case(p))
                    || headers
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .is_some_and(|host| origin.eq_ignore_ascii_case(&format!("http://{host}")))
            }
            Some(Err(_)) => false,
        }
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

/// Refuses a request whose `Host` is not this server's address (403).
pub async fn check_host(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    if !guard.host_ok(req.headers()) {
        return ApiError::forbidden("the request's Host header does not name this server")
            .fix("Use the address prism serve printed; behind a proxy or a DNS name, start it with --public-url.")
            .into_response();
    }
    next.run(req).await
}

/// Refuses a state-changing request sent from another site (403).
pub async fn check_origin(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && !guard.same_origin(req.headers()) {
        return ApiError::forbidden("a request from another site may not change anything here")
            .into_response();
    }
    next.run(req).await
}

/// Refuses an API call without the right bearer token or a live session (401), and
/// sends a page request without one to the login page. A request signed in by a
/// session that changes state must come from this server's own pages (403).
pub async fn require_token(
    State(guard): State<Arc<Guard>>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if open_path(path) {
        return next.run(req).await;
    }
    // `/metrics` is for a scraper: a token, as the API takes, or a session.
    let api = path.starts_with("/api/") || path == "/metrics";
    if api && guard.token_ok(req.headers()) {
        return next.run(req).await;
    }
    let Some(session) = guard.session(req.headers()) else {
        if api {
            return ApiError::unauthorized().into_response();
        }
        return axum::response::Redirect::to("/login").into_response();
    };
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    if !safe && !guard.sent_by_own_page(req.headers()) {
        return ApiError::forbidden("a request from another site may not change anything here")
            .into_response();
    }
    req.extensions_mut().insert(SignedIn(session));
    next.run(req).await
}

/// Adds the security headers to every answer (assets keep their own caching).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
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

    fn guard() -> Arc<Guard> {
        Guard::new(
            TOKEN.into(),
            Door::loopback(7878),
            Sessions::in_memory(Default::default()),
        )
    }

    /// A guard of a server on every address at 7878, reached at `public`.
    fn remote_guard(public: PublicUrl) -> Arc<Guard> {
        Guard::new(
            TOKEN.into(),
            Door {
                listen: "0.0.0.0:7878".parse().unwrap(),
                remote: true,
                public: Some(public),
            },
            Sessions::in_memory(Default::default()),
        )
    }

    fn app_with(guard: Arc<Guard>) -> Router {
        Router::new()
            .route("/api/x", get(|| async { "ok" }).post(|| async { "ok" }))
            .route(
                "/page",
                get(|| async { "page" }).post(|| async { "posted" }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .layer(from_fn_with_state(guard.clone(), require_token))
            .layer(from_fn_with_state(guard.clone(), check_origin))
            .layer(from_fn_with_state(guard, check_host))
            .layer(from_fn(security_headers))
    }

    async fn status(req: Request<Body>) -> (StatusCode, axum::http::HeaderMap) {
        status_with(guard(), req).await
    }

    async fn status_with(
        guard: Arc<Guard>,
        req: Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap) {
        let r = app_with(guard).oneshot(req).await.unwrap();
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
    async fn a_session_signs_in_pages_and_their_api_calls_from_this_site_only() {
        let guard = guard();
        let set = guard.begin_session(&HeaderMap::new(), Peer(None));
        let id = set
            .strip_prefix("prism_session=")
            .and_then(|v| v.split(';').next())
            .unwrap()
            .to_string();
        assert_ne!(id, TOKEN);
        assert!(set.ends_with("; HttpOnly; SameSite=Strict; Path=/; Max-Age=604800"));
        let host = ("host", "127.0.0.1:7878");
        let with_session = format!("other=1; prism_session={id}");
        let cookie = ("cookie", with_session.as_str());
        let status = |r| status_with(guard.clone(), r);
        let (s, h) = status(req("GET", "/page", &[host])).await;
        assert_eq!(
            (s, h["location"].to_str().unwrap()),
            (StatusCode::SEE_OTHER, "/login")
        );
        // The token is no session, and a session is no token.
        let token_cookie = format!("prism_session={TOKEN}");
        for wrong in ["prism_session=nope", token_cookie.as_str()] {
            let wrong = ("cookie", wrong);
            assert_eq!(
                status(req("GET", "/page", &[host, wrong])).await.0,
                StatusCode::SEE_OTHER
            );
            assert_eq!(
                status(req("GET", "/api/x", &[host, wrong])).await.0,
                StatusCode::UNAUTHORIZED
            );
        }
        let as_bearer = format!("Bearer {id}");
        assert_eq!(
            status(req("GET", "/api/x", &[host, ("authorization", &as_bearer)]))
                .await
                .0,
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
        // A change signed in by a session needs a browser's word that it comes from here.
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
        // Ended, it signs in nothing.
        let handle = guard.sessions.list()[0].id.clone();
        assert!(guard.sessions.end(&handle));
        assert_eq!(
            status(req("GET", "/page", &[host, cookie])).await.0,
            StatusCode::SEE_OTHER
        );
    }

    #[test]
    fn the_login_code_works_once() {
        let guard = guard();
        assert!(!guard.use_login_code("anything"));
        let code = guard.new_login_code();
        assert_eq!(code.len(), 43);
        assert!(!guard.use_login_code("wrong"));
        assert!(guard.use_login_code(&code));
        assert!(!guard.use_login_code(&code));
    }

    #[test]
    fn sign_in_attempts_are_limited_per_address() {
        let guard = guard();
        let a = Peer(Some("10.0.0.1".parse().unwrap()));
        let b = Peer(Some("10.0.0.2".parse().unwrap()));
        for _ in 0..ATTEMPTS_PER_MINUTE {
            assert!(guard.attempt(a).is_ok());
        }
        let wait = guard.attempt(a).unwrap_err();
        assert!((1..=6).contains(&wait), "{wait}");
        assert!(
            guard.attempt(b).is_ok(),
            "another address has its own allowance"
        );
    }

    #[test]
    fn over_https_the_cookie_is_secure_and_host_bound() {
        let public = PublicUrl::parse("https://Prism.Example.edu").unwrap();
        assert_eq!(public.origin, "https://prism.example.edu");
        assert_eq!(public.host, "prism.example.edu");
        let guard = remote_guard(public);
        let set = guard.begin_session(&HeaderMap::new(), Peer(None));
        assert!(set.starts_with("__Host-prism_session="), "{set}");
        assert!(set.ends_with("; Secure"), "{set}");
        for bad in [
            "ftp://x",
            "https://x/path",
            "https://u@x",
            "https://x?q=1",
            "nope",
        ] {
            assert!(PublicUrl::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            PublicUrl::parse("http://10.1.2.3:8080").unwrap().host,
            "10.1.2.3:8080"
        );
    }

    #[tokio::test]
    async fn a_remote_door_takes_its_public_name_and_literal_addresses_only() {
        let guard = remote_guard(PublicUrl::parse("https://prism.example.edu").unwrap());
        let status = |r| status_with(guard.clone(), r);
        for host in [
            "prism.example.edu",
            "10.20.30.40:7878",
            "[fd00::1]:7878",
            "localhost:7878",
        ] {
            assert_eq!(
                status(req("GET", "/healthz", &[("host", host)])).await.0,
                StatusCode::OK,
                "{host}"
            );
        }
        for host in [
            "evil.example:7878",
            "10.20.30.40:80",
            "prism.example.edu:7878",
        ] {
            assert_eq!(
                status(req("GET", "/healthz", &[("host", host)])).await.0,
                StatusCode::FORBIDDEN,
                "{host}"
            );
        }
        // A page of the public address may change things; another site may not.
        let host = ("host", "prism.example.edu");
        for (origin, want) in [
            ("https://prism.example.edu", StatusCode::OK),
            ("https://evil.example", StatusCode::FORBIDDEN),
        ] {
            let r = req("POST", "/api/x", &[host, AUTH, ("origin", origin)]);
            assert_eq!(status(r).await.0, want, "{origin}");
        }
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
