//! `/metrics` for Prometheus: on `prism serve`'s own listener behind its token, or on a
//! listener of its own (`serve --metrics-listen`, `watch --metrics-listen`) for a
//! scraper, without a token. That listener answers `/metrics` and nothing else; on a
//! loopback address it also insists on a loopback Host, so that a web page cannot read
//! it through a DNS name that points at this machine (DNS rebinding).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::{self, Metrics};

/// The metrics, in the format the client asks for: OpenMetrics when its `Accept` names
/// it (Prometheus does), else Prometheus's classic text format.
pub async fn metrics(State(m): State<Arc<Metrics>>, headers: HeaderMap) -> Response {
    let open = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let (kind, body) = if open {
        (metrics::OPENMETRICS, m.encode())
    } else {
        (metrics::PROMETHEUS_TEXT, m.encode_prometheus())
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Whether `host` (a Host header) names this machine by loopback: `localhost` or a
/// loopback address, with or without a port.
pub fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The router of a metrics listener on `addr`.
pub fn router(m: Arc<Metrics>, addr: SocketAddr) -> Router {
    let loopback = addr.ip().is_loopback();
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(m)
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                let host = req
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default();
                if loopback && !loopback_host(host) {
                    return (
                        StatusCode::FORBIDDEN,
                        "the Host header does not name this machine by loopback\n",
                    )
                        .into_response();
                }
                next.run(req).await
            },
        ))
}

/// Why a metrics listener may not open on `addr`: it serves without a token, so an
/// address other than loopback takes `--allow-remote`.
pub fn refusal(addr: &SocketAddr, allow_remote: bool) -> Option<String> {
    (!addr.ip().is_loopback() && !allow_remote).then(|| {
        format!(
            "refusing to serve metrics on {addr}, which is not a loopback address: --metrics-listen serves without a token; pass --allow-remote to let other machines scrape it"
        )
    })
}

/// Serves the metrics on `listener` until `stop` resolves.
pub async fn run(
    listener: tokio::net::TcpListener,
    m: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()>,
) {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let limits = super::listen::Limits {
        max_connections: 16,
        ..super::listen::Limits::default()
    };
    let conns = super::listen::accept_until(listener, router(m, addr), limits, stop).await;
    conns.drain(std::time::Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_localhost_and_loopback_addresses() {
        for host in [
            "localhost",
            "localhost:9100",
            "127.0.0.1:9",
            "[::1]:9100",
            "[::1]",
        ] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9100",
            "10.0.0.1:9100",
            "",
            "[fe80::1]:1",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
    }

    #[test]
    fn only_loopback_is_served_without_allow_remote() {
        let lo: SocketAddr = "127.0.0.1:9100".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9100".parse().unwrap();
        assert!(refusal(&lo, false).is_none());
        assert!(refusal(&any, false).is_some());
        assert!(refusal(&any, true).is_none());
    }
}
