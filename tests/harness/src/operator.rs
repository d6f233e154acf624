//! A nats-server in operator (JWT) mode, minted by the test: an operator, a system account,
//! an account with JetStream and one user, their nkeys made with the `nkeys` crate and their
//! JWTs built and signed here (NATS JWT v2: a `{"typ":"JWT","alg":"ed25519-nkey"}` header, the
//! claims, and the issuer's ed25519 signature of both, each base64url without padding). The
//! server resolves accounts from memory (`resolver: MEMORY` with the JWTs preloaded), and the
//! user's `.creds` file is what `nsc` would write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use nkeys::KeyPair;
use serde_json::{json, Value};

use crate::nats::{ClientOptions, ServerConfig};

/// The operator, its accounts and the user; what a server and a client need.
pub struct OperatorMode {
    /// The server configuration (operator JWT, system account, preloaded account JWTs).
    pub server_config: String,
    /// The user's credentials file: its JWT and nkey seed.
    pub user_creds: String,
    /// The user's nkey seed (a secret a test can look for in logs).
    pub user_seed: String,
    /// The account's key: it signs the users' JWTs.
    account: KeyPair,
}

/// A user of the account: its `.creds` file and its seed.
pub struct UserCreds {
    pub creds: String,
    pub seed: String,
}

impl OperatorMode {
    /// Mints the keys and JWTs.
    pub fn mint() -> anyhow::Result<OperatorMode> {
        let operator = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let account = KeyPair::new_account();
        let operator_jwt = jwt(
            &operator,
            &operator.public_key(),
            "test-operator",
            json!({"type": "operator", "version": 2, "system_account": system.public_key()}),
        )?;
        let unlimited = json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1
        });
        let system_jwt = jwt(
            &operator,
            &system.public_key(),
            "SYS",
            json!({"limits": unlimited, "type": "account", "version": 2}),
        )?;
        let mut with_jetstream = unlimited.clone();
        for limit in ["mem_storage", "disk_storage", "streams", "consumer"] {
            with_jetstream[limit] = json!(-1);
        }
        let account_jwt = jwt(
            &operator,
            &account.public_key(),
            "keptn",
            json!({"limits": with_jetstream, "type": "account", "version": 2}),
        )?;
        let server_config = format!(
            "operator: {operator_jwt}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {system_jwt}\n  {}: {account_jwt}\n}}\n",
            system.public_key(),
            system.public_key(),
            account.public_key(),
        );
        let UserCreds { creds, seed } = user_creds(&account, "helm-service", None)?;
        Ok(OperatorMode {
            server_config,
            user_creds: creds,
            user_seed: seed,
            account,
        })
    }

    /// Another user of the account, with a new key; its JWT expires `expires_in` from now
    /// (the server then closes its connections and refuses it) or never.
    pub fn new_user(&self, name: &str, expires_in: Option<Duration>) -> anyhow::Result<UserCreds> {
        user_creds(&self.account, name, expires_in)
    }

    /// A server configuration for [`NatsServer::start_configured`](crate::NatsServer):
    /// `extra` appended (TLS, cluster), the harness's clients using the user's credentials.
    pub fn server(&self, extra: &str) -> ServerConfig {
        let creds = self.user_creds.clone();
        ServerConfig {
            extra: format!("{}{extra}", self.server_config),
            client: ClientOptions::new(move || {
                async_nats::ConnectOptions::new()
                    .credentials(&creds)
                    .expect("the minted credentials parse")
            }),
        }
    }
}

/// A new user of `account` (a JWT it signs, expiring `expires_in` from now or never) as the
/// `.creds` file `nsc` would write.
fn user_creds(
    account: &KeyPair,
    name: &str,
    expires_in: Option<Duration>,
) -> anyhow::Result<UserCreds> {
    let user = KeyPair::new_user();
    let user_jwt = jwt_expiring(
        account,
        &user.public_key(),
        name,
        json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
               "type": "user", "version": 2}),
        expires_in,
    )?;
    let seed = user.seed().map_err(|err| anyhow!("user seed: {err}"))?;
    let creds = format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    );
    Ok(UserCreds { creds, seed })
}

/// A NATS JWT (v2) with `nats` as the claims' `nats` member, signed by `issuer`.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> anyhow::Result<String> {
    jwt_expiring(issuer, subject, name, nats, None)
}

/// [`jwt`], expiring `expires_in` from now (the `exp` claim, whole seconds) or never.
fn jwt_expiring(
    issuer: &KeyPair,
    subject: &str,
    name: &str,
    nats: Value,
    expires_in: Option<Duration>,
) -> anyhow::Result<String> {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let issued_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_secs();
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let mut claims = json!({
        "jti": format!("TEST{issued_at}X{serial}"),
        "iat": issued_at,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    if let Some(expires_in) = expires_in {
        claims["exp"] = json!(issued_at + expires_in.as_secs().max(1));
    }
    let header = URL_SAFE_NO_PAD.encode(json!({"typ": "JWT", "alg": "ed25519-nkey"}).to_string());
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{body}");
    let signature = issuer
        .sign(signed.as_bytes())
        .map_err(|err| anyhow!("signing a JWT: {err}"))?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}
