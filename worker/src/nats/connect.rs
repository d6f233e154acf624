//! How `run`, `send` and `charts` reach NATS: the flags they share ([`NatsArgs`]), resolved
//! once into [`NatsClient`], the one place a client is built.
//!
//! A first connection attempt tells "cannot work" (credentials refused, TLS failing) from
//! "not yet" (no server reachable): the first is a start-up error naming the cause, the
//! second makes the worker wait for NATS as it always did (`/readyz` says why it is not ready).
//! Credential files are read again at every connection attempt (`nats::credentials`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_nats::{ConnectErrorKind, ConnectOptions};
use clap::Args;
use prometheus::IntCounter;
use rustls::RootCertStore;
use thiserror::Error;
use tracing::warn;

use super::credentials::{Auth, CredentialFiles, CredentialSource};
use super::seeds::{NatsUrlText, SeedList, SeedListError, UrlCredentials};
use crate::pem;
use crate::secret::{redact_user_info, SecretFileError};

/// NATS connection flags of `run`, `send` and `charts` (defined once, flattened into each).
/// Secrets are read from files, never taken as flag values, and no environment value is
/// shown by `--help`.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma separated: a cluster's seed list, e.g.
    /// `nats://nats-0:4222,nats://nats-1:4222`; the client learns the other servers from them.
    /// `tls://` requires TLS. Credentials in a URL work but are better given as files.
    #[arg(
        long = "nats-url",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true,
        global = true,
        value_parser = NatsUrlText::from_arg
    )]
    pub nats_url: NatsUrlText,

    /// A NATS credentials file (`.creds`: a user JWT and its nkey seed), for servers in
    /// operator (JWT) mode.
    #[arg(long, env = "NATS_CREDS", value_name = "FILE", hide_env_values = true, global = true,
          conflicts_with_all = ["nats_nkey", "nats_user", "nats_token_file"])]
    pub nats_creds: Option<PathBuf>,

    /// A file holding an nkey seed (`SU...`): the worker signs the server's challenge with it.
    #[arg(long, env = "NATS_NKEY", value_name = "FILE", hide_env_values = true, global = true,
          conflicts_with_all = ["nats_user", "nats_token_file"])]
    pub nats_nkey: Option<PathBuf>,

    /// User name for user/password authentication, with --nats-password-file.
    #[arg(
        long,
        env = "NATS_USER",
        hide_env_values = true,
        global = true,
        requires = "nats_password_file",
        conflicts_with = "nats_token_file"
    )]
    pub nats_user: Option<String>,

    /// A file holding the password of --nats-user.
    #[arg(
        long,
        env = "NATS_PASSWORD_FILE",
        value_name = "FILE",
        hide_env_values = true,
        global = true,
        requires = "nats_user"
    )]
    pub nats_password_file: Option<PathBuf>,

    /// A file holding an authentication token.
    #[arg(
        long,
        env = "NATS_TOKEN_FILE",
        value_name = "FILE",
        hide_env_values = true,
        global = true
    )]
    pub nats_token_file: Option<PathBuf>,

    /// PEM file of the CA(s) that signed the servers' certificates (a private CA); the only
    /// ones trusted then. Implies --nats-tls-required.
    #[arg(
        long,
        env = "NATS_CA",
        value_name = "FILE",
        hide_env_values = true,
        global = true
    )]
    pub nats_ca: Option<PathBuf>,

    /// PEM client certificate for mutual TLS, with --nats-key. Implies --nats-tls-required.
    #[arg(
        long,
        env = "NATS_CERT",
        value_name = "FILE",
        hide_env_values = true,
        global = true,
        requires = "nats_key"
    )]
    pub nats_cert: Option<PathBuf>,

    /// PEM private key of --nats-cert.
    #[arg(
        long,
        env = "NATS_KEY",
        value_name = "FILE",
        hide_env_values = true,
        global = true,
        requires = "nats_cert"
    )]
    pub nats_key: Option<PathBuf>,

    /// Refuse to talk to a server without TLS.
    #[arg(long, env = "NATS_TLS_REQUIRED", global = true)]
    pub nats_tls_required: bool,
}

impl NatsArgs {
    /// Just a server list, no credentials, no TLS settings (tests, tools).
    pub fn with_url(url: &str) -> NatsArgs {
        NatsArgs {
            nats_url: url.into(),
            nats_creds: None,
            nats_nkey: None,
            nats_user: None,
            nats_password_file: None,
            nats_token_file: None,
            nats_ca: None,
            nats_cert: None,
            nats_key: None,
            nats_tls_required: false,
        }
    }
}

/// Why the settings cannot be used, found before connecting.
#[derive(Debug, Error)]
pub enum NatsSetupError {
    #[error(transparent)]
    SeedList(#[from] SeedListError),
    #[error(transparent)]
    File(#[from] SecretFileError),
    #[error("credentials are given both in --nats-url and by {flag}: give them once")]
    CredentialsTwice { flag: &'static str },
    #[error("--nats-cert and --nats-key cannot be used together: {reason}")]
    ClientCertificate { reason: String },
}

/// TLS settings beyond what the URLs say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tls {
    required: bool,
    ca: Option<PathBuf>,
    /// Certificate and key, for mutual TLS.
    client: Option<(PathBuf, PathBuf)>,
}

/// Why connecting failed.
#[derive(Debug, Error)]
pub enum NatsConnectError {
    /// Nothing can work until an operator changes the credentials.
    #[error("NATS at {servers} refused the credentials: {reason} (check --nats-creds, --nats-nkey, --nats-user with --nats-password-file, --nats-token-file or the user info of --nats-url)")]
    Refused { servers: String, reason: String },
    /// Nothing can work until an operator changes the TLS settings (or the server's).
    #[error(
        "TLS with NATS at {servers} failed: {reason} (check --nats-ca, --nats-cert and --nats-key)"
    )]
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
    credentials: CredentialSource,
    tls: Tls,
}

impl NatsArgs {
    /// Parses the seed list and reads every file named by the flags, so that a mistake is an
    /// error at start-up naming the flag, before any connection attempt.
    pub fn resolve(&self) -> Result<NatsClient, NatsSetupError> {
        let seeds = SeedList::parse(self.nats_url.as_str())?;
        let credentials = match (seeds.credentials(), self.credential_files()) {
            (None, None) => CredentialSource::Fixed(Auth::None),
            (Some(in_url), None) => CredentialSource::Fixed(match in_url.clone() {
                UrlCredentials::UserPassword { user, password } => {
                    Auth::UserPassword { user, password }
                }
                UrlCredentials::Token(token) => Auth::Token(token),
            }),
            (None, Some(files)) => CredentialSource::Files {
                at_start: files.read()?,
                files,
            },
            (Some(_), Some(files)) => {
                return Err(NatsSetupError::CredentialsTwice { flag: files.flag() })
            }
        };
        Ok(NatsClient {
            seeds,
            credentials,
            tls: self.tls()?,
        })
    }

    /// The credential files the flags name (clap keeps them one kind at a time).
    fn credential_files(&self) -> Option<CredentialFiles> {
        if let Some(path) = &self.nats_creds {
            return Some(CredentialFiles::Creds(path.clone()));
        }
        if let Some(path) = &self.nats_nkey {
            return Some(CredentialFiles::Nkey(path.clone()));
        }
        if let (Some(user), Some(path)) = (&self.nats_user, &self.nats_password_file) {
            return Some(CredentialFiles::UserPassword {
                user: user.clone(),
                password: path.clone(),
            });
        }
        self.nats_token_file.clone().map(CredentialFiles::Token)
    }

    /// Checks the CA, certificate and key files now; the client reads them again on every
    /// connection, so renewed files (a Secret updated in place) are picked up on reconnect.
    fn tls(&self) -> Result<Tls, NatsSetupError> {
        let roots = match &self.nats_ca {
            Some(path) => pem::roots("--nats-ca", path)?,
            None => RootCertStore::empty(),
        };
        let client = match (&self.nats_cert, &self.nats_key) {
            (Some(cert), Some(key)) => {
                let chain = pem::certificates("--nats-cert", cert)?;
                let (private_key, _) = pem::private_key("--nats-key", key)?;
                // The same check the client makes when it connects, made now.
                pem::client_config(roots, Some((chain, private_key))).map_err(|err| {
                    NatsSetupError::ClientCertificate {
                        reason: err.to_string(),
                    }
                })?;
                Some((cert.clone(), key.clone()))
            }
            _ => None,
        };
        Ok(Tls {
            required: self.nats_tls_required || self.nats_ca.is_some() || client.is_some(),
            ca: self.nats_ca.clone(),
            client,
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
    /// on the server (monitoring shows it). Every connection attempt authenticates with what
    /// the credential files hold then; `reload_failures` counts attempts that found them
    /// unusable (and used the last valid credentials).
    fn options(&self, name: &str, reload_failures: Option<IntCounter>) -> ConnectOptions {
        let mut options = self.credentials.connect_options(reload_failures).name(name);
        if let Some(ca) = &self.tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        options.require_tls(self.tls.required)
    }

    /// One attempt over every server of the seed list: for `send` and `charts`, which report
    /// and exit rather than wait.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, NatsConnectError> {
        self.options(name, None)
            .connect(self.seeds.servers().to_vec())
            .await
            .map_err(|err| self.classify(err))
    }

    /// The worker's client: reconnects for ever. A first attempt over the seed list decides:
    /// refused credentials or failing TLS are returned (nothing can work), unreachable
    /// servers are waited for in the background (the client connects once one is up).
    /// `events` hears about every connection change; `reload_failures` counts connection
    /// attempts that found the credential files unusable.
    pub async fn connect_worker(
        &self,
        name: &str,
        events: Arc<ConnectionEvents>,
        reload_failures: IntCounter,
    ) -> Result<async_nats::Client, NatsConnectError> {
        let options = || {
            let events = events.clone();
            self.options(name, Some(reload_failures.clone()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        nats: NatsArgs,
    }

    fn parse(args: &[&str]) -> Result<NatsArgs, clap::Error> {
        let mut argv = vec!["probe"];
        argv.extend_from_slice(args);
        Probe::try_parse_from(argv).map(|probe| probe.nats)
    }

    #[test]
    fn credentials_are_one_kind_at_a_time_and_come_in_pairs() {
        assert!(parse(&["--nats-creds", "a", "--nats-nkey", "b"]).is_err());
        assert!(parse(&["--nats-creds", "a", "--nats-token-file", "b"]).is_err());
        assert!(
            parse(&["--nats-user", "u"]).is_err(),
            "needs a password file"
        );
        assert!(
            parse(&["--nats-password-file", "p"]).is_err(),
            "needs a user"
        );
        assert!(parse(&["--nats-cert", "c"]).is_err(), "needs a key");
        assert!(parse(&["--nats-user", "u", "--nats-password-file", "p"]).is_ok());
    }

    #[test]
    fn resolving_reads_and_checks_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let password = file("password", "hunter2\n");
        let nats = parse(&["--nats-user", "u", "--nats-password-file", &password])
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(
            *nats.credentials.at_start(),
            Auth::UserPassword {
                user: "u".into(),
                password: Secret::new("hunter2")
            }
        );
        assert!(!format!("{nats:?}").contains("hunter2"));

        let twice = parse(&["--nats-url", "nats://a:b@h", "--nats-token-file", &password])
            .unwrap()
            .resolve()
            .unwrap_err();
        assert!(twice
            .to_string()
            .contains("both in --nats-url and by --nats-token-file"));

        let not_a_seed = file("seed", "SUnot-a-seed\n");
        let err = parse(&["--nats-nkey", &not_a_seed])
            .unwrap()
            .resolve()
            .unwrap_err();
        assert!(
            err.to_string().contains("does not hold an nkey seed"),
            "{err}"
        );
        assert!(!err.to_string().contains("SUnot"), "{err}");

        let not_creds = file("creds", "hello\n");
        let err = parse(&["--nats-creds", &not_creds])
            .unwrap()
            .resolve()
            .unwrap_err();
        assert!(
            err.to_string().contains("is not a NATS credentials file"),
            "{err}"
        );

        let not_pem = file("ca", "hello\n");
        let err = parse(&["--nats-ca", &not_pem])
            .unwrap()
            .resolve()
            .unwrap_err();
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );

        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        let seed_file = file("user.nk", &format!("{seed}\n"));
        let nats = parse(&["--nats-nkey", &seed_file])
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(*nats.credentials.at_start(), Auth::Nkey(Secret::new(seed)));
        assert!(!nats.tls.required);
    }

    #[test]
    fn help_never_shows_environment_values() {
        let command = Probe::command();
        for arg in command.get_arguments() {
            if arg.get_env().is_some() && arg.get_id() != "nats_tls_required" {
                assert!(
                    arg.is_hide_env_values_set(),
                    "--help would show the value of {:?}",
                    arg.get_env()
                );
            }
        }
    }
}
