//! How `run`, `send` and `charts` reach NATS: the flags they share ([`NatsArgs`]), resolved
//! once into [`NatsClient`], the one place a client is built.
//!
//! A first connection attempt tells "cannot work" (credentials refused, TLS failing) from
//! "not yet" (no server reachable): the first is a start-up error naming the cause, the
//! second makes the worker wait for NATS as it always did (`/readyz` says why it is not ready).

use std::sync::{Arc, Mutex};

use async_nats::{ConnectErrorKind, ConnectOptions};
use clap::Args;
use thiserror::Error;
use tracing::warn;

use super::seeds::{NatsUrlText, SeedList, SeedListError};
use crate::secret::redact_user_info;

/// NATS connection flags of `run`, `send` and `charts` (defined once, flattened into each).
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma separated: a cluster's seed list, e.g.
    /// `nats://nats-0:4222,nats://nats-1:4222`; the client learns the other servers from them.
    #[arg(
        long = "nats-url",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true,
        global = true,
        value_parser = NatsUrlText::from_arg
    )]
    pub url: NatsUrlText,
}

/// Why the settings cannot be used, found before connecting.
#[derive(Debug, Error)]
pub enum NatsSetupError {
    #[error(transparent)]
    SeedList(#[from] SeedListError),
}

/// Why connecting failed.
#[derive(Debug, Error)]
pub enum NatsConnectError {
    /// Nothing can work until an operator changes the credentials.
    #[error("NATS at {servers} refused the credentials: {reason}")]
    Refused { servers: String, reason: String },
    /// Nothing can work until an operator changes the TLS settings (or the server's).
    #[error("TLS with NATS at {servers} failed: {reason}")]
    Tls { servers: String, reason: String },
    /// No server answered (yet).
    #[error("cannot reach NATS at {servers}: {reason}")]
    Unreachable { servers: String, reason: String },
}

impl NatsConnectError {
    /// Whether waiting for NATS can help (the servers may come up), unlike refused
    /// credentials or a TLS failure.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, NatsConnectError::Unreachable { .. })
    }
}

/// The resolved connection settings: everything read and checked, ready to connect.
#[derive(Debug, Clone)]
pub struct NatsClient {
    seeds: SeedList,
}

impl NatsArgs {
    /// Parses the seed list and reads every file named by the flags, so that a mistake is an
    /// error at start-up naming the flag, before any connection attempt.
    pub fn resolve(&self) -> Result<NatsClient, NatsSetupError> {
        Ok(NatsClient {
            seeds: SeedList::parse(self.url.as_str())?,
        })
    }
}

/// What the client last reported about its connection, for `/readyz`.
#[derive(Debug, Default)]
pub struct ConnectionEvents {
    last_error: Mutex<Option<String>>,
}

impl ConnectionEvents {
    fn record(&self, event: &async_nats::Event) {
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            async_nats::Event::Connected => *last = None,
            async_nats::Event::ServerError(_) | async_nats::Event::ClientError(_) => {
                *last = Some(redact_user_info(&event.to_string()));
            }
            _ => {}
        }
    }

    /// The last connection error since the last successful connection.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl NatsClient {
    /// The servers, without credentials: what messages show.
    pub fn servers(&self) -> String {
        self.seeds.to_string()
    }

    /// Connect options with the credentials and TLS settings; `name` is the client's name
    /// on the server (monitoring shows it).
    pub fn options(&self, name: &str) -> ConnectOptions {
        ConnectOptions::new().name(name)
    }

    /// One attempt over every server of the seed list: for `send` and `charts`, which report
    /// and exit rather than wait.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, NatsConnectError> {
        self.options(name)
            .connect(self.seeds.servers().to_vec())
            .await
            .map_err(|err| self.classify(err))
    }

    /// The worker's client: reconnects for ever. A first attempt over the seed list decides:
    /// refused credentials or failing TLS are returned (nothing can work), unreachable
    /// servers are waited for in the background (the client connects once one is up).
    /// `events` hears about every connection change.
    pub async fn connect_worker(
        &self,
        name: &str,
        events: Arc<ConnectionEvents>,
    ) -> Result<async_nats::Client, NatsConnectError> {
        let options = || {
            let events = events.clone();
            self.options(name)
                .max_reconnects(None)
                .event_callback(move |event| {
                    let events = events.clone();
                    async move { events.record(&event) }
                })
        };
        match options().connect(self.seeds.servers().to_vec()).await {
            Ok(client) => Ok(client),
            Err(err) => {
                let err = self.classify(err);
                if !err.is_unreachable() {
                    return Err(err);
                }
                warn!(error = %err, "NATS not reachable yet; connecting in the background");
                options()
                    .retry_on_initial_connect()
                    .connect(self.seeds.servers().to_vec())
                    .await
                    .map_err(|err| self.classify(err))
            }
        }
    }

    fn classify(&self, err: async_nats::ConnectError) -> NatsConnectError {
        let servers = self.servers();
        let reason = redact_user_info(&error_chain(&err));
        match err.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                NatsConnectError::Refused { servers, reason }
            }
            ConnectErrorKind::Tls => NatsConnectError::Tls { servers, reason },
            _ if is_tls_failure(&err) => NatsConnectError::Tls { servers, reason },
            _ => NatsConnectError::Unreachable { servers, reason },
        }
    }
}

/// A handshake failure reaches us as an I/O error wrapping rustls' error.
fn is_tls_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if cause.is::<async_nats::rustls::Error>() {
            return true;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<async_nats::rustls::Error>())
            {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

/// The error and its causes, `: `-separated, each said once.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
