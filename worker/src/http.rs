//! The operator-facing HTTP endpoints: `/metrics`, `/healthz`, `/readyz`.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::nats::connect::ConnectionEvents;

/// What readiness depends on.
pub struct Health {
    pub nats: async_nats::Client,
    /// What the client last said about its connection (the reason it is not connected).
    pub nats_events: Arc<ConnectionEvents>,
    /// Set once the stream, consumer and buckets are bound.
    pub bound: AtomicBool,
    /// Cleared when shutdown begins, so load balancers stop counting on us.
    pub accepting: AtomicBool,
}

impl Health {
    pub fn new(nats: async_nats::Client, nats_events: Arc<ConnectionEvents>) -> Self {
        Health {
            nats,
            nats_events,
            bound: AtomicBool::new(false),
            accepting: AtomicBool::new(true),
        }
    }

    /// Why the worker is not ready, or `None` when it is. Connection errors are the
    /// client's own words, URLs redacted (they name no credentials).
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Some(match self.nats_events.last_error() {
                Some(error) => format!("not connected to NATS ({error})"),
                None => "not connected to NATS".into(),
            });
        }
        if !self.bound.load(Ordering::SeqCst) {
            return Some("stream and consumer not bound yet".into());
        }
        if !self.accepting.load(Ordering::SeqCst) {
            return Some("shutting down".into());
        }
        None
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Arc<Health>,
}

pub fn router(metrics: Metrics, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(AppState { metrics, health })
}

/// Serves until `shutdown` fires. Binding happens before this returns a future, so
/// a taken port is reported at start-up.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> anyhow::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {addr} (--http-addr): {err}"))?;
    tracing::info!(addr = %listener.local_addr()?, "HTTP endpoints listening");
    let app = router(metrics, health);
    Ok(axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .into_future())
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn ready_handler(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.not_ready_reason() {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}
