//! The credentials the client proves itself with, and how they follow rotated files.
//!
//! Credentials named by flags are files (Kubernetes Secrets mounted as volumes, the `.creds`
//! of an operator-mode server). They are rotated by replacing the file, and the server then
//! closes the old user's connections (a changed password, a revoked or expired user JWT): a
//! client holding what it read at start would reconnect with the old credentials for ever.
//! So the files are read at start-up (an unusable file is an error naming the flag) and again
//! at every connection attempt, through async-nats' auth callback. A file that cannot be used
//! at a reconnection is logged (flag and path, never the content) and counted, and that
//! attempt uses the last valid credentials: a half-written Secret is no reason to stop trying.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_nats::{AuthError, ConnectOptions};
use prometheus::IntCounter;
use tracing::{info, warn};

use crate::secret::{read_file, read_secret_file, Secret, SecretFileError};

/// How the client proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Auth {
    None,
    UserPassword {
        user: String,
        password: Secret,
    },
    Token(Secret),
    /// An nkey seed.
    Nkey(Secret),
    /// A user JWT and its nkey seed (a `.creds` file).
    Jwt {
        jwt: Secret,
        seed: Secret,
    },
}

impl Auth {
    /// What the client sends in its CONNECT: these credentials, with the server's `nonce`
    /// signed where the method signs it (nkey, JWT).
    fn answer(&self, nonce: &[u8]) -> Result<async_nats::Auth, AuthError> {
        let mut auth = async_nats::Auth::new();
        match self {
            Auth::None => {}
            Auth::UserPassword { user, password } => {
                auth.username = Some(user.clone());
                auth.password = Some(password.expose().to_owned());
            }
            Auth::Token(token) => auth.token = Some(token.expose().to_owned()),
            Auth::Nkey(seed) => {
                let key = key_pair(seed)?;
                auth.nkey = Some(key.public_key());
                auth.signature = Some(key.sign(nonce).map_err(AuthError::new)?);
            }
            Auth::Jwt { jwt, seed } => {
                let key = key_pair(seed)?;
                auth.jwt = Some(jwt.expose().to_owned());
                auth.signature = Some(key.sign(nonce).map_err(AuthError::new)?);
            }
        }
        Ok(auth)
    }
}

/// The seed's key pair; the seed was checked when it was read. The error never holds the seed.
fn key_pair(seed: &Secret) -> Result<nkeys::KeyPair, AuthError> {
    nkeys::KeyPair::from_seed(seed.expose()).map_err(|_| AuthError::new("not an nkey seed"))
}

/// The files the flags name for the credentials (one kind at a time; clap keeps them exclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CredentialFiles {
    Creds(PathBuf),
    Nkey(PathBuf),
    UserPassword { user: String, password: PathBuf },
    Token(PathBuf),
}

impl CredentialFiles {
    /// The flag that names the files, for messages.
    pub(super) fn flag(&self) -> &'static str {
        match self {
            CredentialFiles::Creds(_) => "--nats-creds",
            CredentialFiles::Nkey(_) => "--nats-nkey",
            CredentialFiles::UserPassword { .. } => "--nats-user",
            CredentialFiles::Token(_) => "--nats-token-file",
        }
    }

    /// Reads and checks the files: at start-up and at every connection attempt. The error
    /// names the flag and the path, never the content.
    pub(super) fn read(&self) -> Result<Auth, SecretFileError> {
        match self {
            CredentialFiles::Creds(path) => {
                let flag = "--nats-creds";
                let text = read_file(flag, path)?;
                parse_creds(&text)
                    .filter(|(_, seed)| nkeys::KeyPair::from_seed(seed).is_ok())
                    .map(|(jwt, seed)| Auth::Jwt {
                        jwt: Secret::new(jwt),
                        seed: Secret::new(seed),
                    })
                    .ok_or_else(|| SecretFileError::Invalid {
                        flag,
                        path: path.clone(),
                        problem: "is not a NATS credentials file (a user JWT and an nkey seed)"
                            .into(),
                    })
            }
            CredentialFiles::Nkey(path) => {
                let flag = "--nats-nkey";
                let seed = read_secret_file(flag, path)?;
                let seed = Secret::new(seed.expose().trim());
                if nkeys::KeyPair::from_seed(seed.expose()).is_err() {
                    return Err(SecretFileError::Invalid {
                        flag,
                        path: path.clone(),
                        problem: "does not hold an nkey seed (one line starting with S)".into(),
                    });
                }
                Ok(Auth::Nkey(seed))
            }
            CredentialFiles::UserPassword { user, password } => Ok(Auth::UserPassword {
                user: user.clone(),
                password: read_secret_file("--nats-password-file", password)?,
            }),
            CredentialFiles::Token(path) => {
                Ok(Auth::Token(read_secret_file("--nats-token-file", path)?))
            }
        }
    }
}

/// The user JWT and the nkey seed of a `.creds` file, as `nsc` writes it and async-nats reads
/// it: the first two values each framed by dashed lines (`-----BEGIN NATS USER JWT-----`,
/// the value, `------END NATS USER JWT------`).
fn parse_creds(text: &str) -> Option<(&str, &str)> {
    let framing = |line: &str| line.len() >= 6 && line.starts_with("---") && line.ends_with("---");
    let value = |line: &str| {
        !line.is_empty()
            && line
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '='))
    };
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut values = Vec::with_capacity(2);
    let mut at = 0;
    while at + 2 < lines.len() && values.len() < 2 {
        if framing(lines[at]) && value(lines[at + 1]) && framing(lines[at + 2]) {
            values.push(lines[at + 1]);
            at += 3;
        } else {
            at += 1;
        }
    }
    match values[..] {
        [jwt, seed] => Some((jwt, seed)),
        _ => None,
    }
}

/// Where each connection attempt takes its credentials from.
#[derive(Debug, Clone)]
pub(super) enum CredentialSource {
    /// The same for the life of the process: none, or the user info of the URLs.
    Fixed(Auth),
    /// Files named by flags: read again at every attempt; `at_start` is what start-up read.
    Files {
        files: CredentialFiles,
        at_start: Auth,
    },
}

impl CredentialSource {
    /// The credentials start-up found.
    #[cfg(test)]
    pub(super) fn at_start(&self) -> &Auth {
        match self {
            CredentialSource::Fixed(auth) => auth,
            CredentialSource::Files { at_start, .. } => at_start,
        }
    }

    /// Connect options that authenticate every connection attempt with the current
    /// credentials; `reload_failures` counts attempts that found the files unusable.
    pub(super) fn connect_options(&self, reload_failures: Option<IntCounter>) -> ConnectOptions {
        let current: Arc<dyn Fn() -> Auth + Send + Sync> = match self {
            CredentialSource::Fixed(Auth::None) => return ConnectOptions::new(),
            CredentialSource::Fixed(auth) => {
                let auth = auth.clone();
                Arc::new(move || auth.clone())
            }
            CredentialSource::Files { files, at_start } => {
                let rotating = Rotating {
                    files: files.clone(),
                    last_valid: Mutex::new(at_start.clone()),
                    reload_failures,
                };
                Arc::new(move || rotating.for_attempt())
            }
        };
        ConnectOptions::with_auth_callback(move |nonce| {
            let current = current.clone();
            async move {
                // Files may sit on a slow volume: read them off the runtime's threads.
                let auth = tokio::task::spawn_blocking(move || current())
                    .await
                    .map_err(|_| AuthError::new("reading the credentials failed"))?;
                auth.answer(&nonce)
            }
        })
    }
}

/// Credential files read again for each connection attempt, and the last valid credentials
/// they held, used when they cannot be read.
struct Rotating {
    files: CredentialFiles,
    last_valid: Mutex<Auth>,
    reload_failures: Option<IntCounter>,
}

impl Rotating {
    fn for_attempt(&self) -> Auth {
        let mut last_valid = self.last_valid.lock().unwrap_or_else(|e| e.into_inner());
        match self.files.read() {
            Ok(auth) => {
                if auth != *last_valid {
                    info!(
                        flag = self.files.flag(),
                        "NATS credential files changed; connecting with the new credentials"
                    );
                    *last_valid = auth.clone();
                }
                auth
            }
            Err(err) => {
                warn!(
                    error = %err,
                    "cannot use the NATS credential files for this connection attempt; trying the last valid credentials"
                );
                if let Some(failures) = &self.reload_failures {
                    failures.inc();
                }
                last_valid.clone()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(jwt: &str, seed: &str) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        )
    }

    #[test]
    fn creds_files_give_their_jwt_and_seed() {
        let text = creds("eyJ0eXAi.eyJqdGki.sig-_=", "SUAIO3FHUX5PNV2LQ");
        assert_eq!(
            parse_creds(&text),
            Some(("eyJ0eXAi.eyJqdGki.sig-_=", "SUAIO3FHUX5PNV2LQ"))
        );
        assert_eq!(
            parse_creds(&text.replace('\n', "\r\n")),
            Some(("eyJ0eXAi.eyJqdGki.sig-_=", "SUAIO3FHUX5PNV2LQ"))
        );
        assert_eq!(parse_creds("hello\n"), None);
        assert_eq!(parse_creds(""), None);
        // The JWT alone is not enough.
        let jwt_only = "-----BEGIN NATS USER JWT-----\nabc\n------END NATS USER JWT------\n";
        assert_eq!(parse_creds(jwt_only), None);
        // A value with a space is no value.
        assert_eq!(parse_creds(&creds("a b", "SUA")), None);
    }

    #[test]
    fn every_method_answers_the_nonce_as_the_server_expects() {
        let nonce = b"nonce-from-info";
        let user = nkeys::KeyPair::new_user();
        let seed = Secret::new(user.seed().unwrap());

        let auth = Auth::Nkey(seed.clone()).answer(nonce).unwrap();
        assert_eq!(auth.nkey, Some(user.public_key()));
        user.verify(nonce, &auth.signature.unwrap()).unwrap();

        let auth = Auth::Jwt {
            jwt: Secret::new("a.b.c"),
            seed,
        }
        .answer(nonce)
        .unwrap();
        assert_eq!(auth.jwt.as_deref(), Some("a.b.c"));
        assert_eq!(auth.nkey, None);
        user.verify(nonce, &auth.signature.unwrap()).unwrap();

        let auth = Auth::UserPassword {
            user: "u".into(),
            password: Secret::new("p"),
        }
        .answer(nonce)
        .unwrap();
        assert_eq!(
            (auth.username.as_deref(), auth.password.as_deref()),
            (Some("u"), Some("p"))
        );
        let auth = Auth::Token(Secret::new("t")).answer(nonce).unwrap();
        assert_eq!(auth.token.as_deref(), Some("t"));
    }

    #[test]
    fn each_attempt_reads_the_files_again_and_keeps_the_last_valid_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "first-secret\n").unwrap();
        let files = CredentialFiles::UserPassword {
            user: "helm".into(),
            password: path.clone(),
        };
        let at_start = files.read().unwrap();
        let failures = IntCounter::new("failures", "test").unwrap();
        let rotating = Rotating {
            files,
            last_valid: Mutex::new(at_start.clone()),
            reload_failures: Some(failures.clone()),
        };
        assert_eq!(rotating.for_attempt(), at_start);

        std::fs::write(&path, "second-secret\n").unwrap();
        let second = Auth::UserPassword {
            user: "helm".into(),
            password: Secret::new("second-secret"),
        };
        assert_eq!(rotating.for_attempt(), second);

        // Mid-rotation: gone, then empty. The last valid credentials, counted.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(rotating.for_attempt(), second);
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(rotating.for_attempt(), second);
        assert_eq!(failures.get(), 2);

        std::fs::write(&path, "third-secret").unwrap();
        assert_eq!(
            rotating.for_attempt(),
            Auth::UserPassword {
                user: "helm".into(),
                password: Secret::new("third-secret"),
            }
        );
        assert_eq!(failures.get(), 2);
    }

    #[test]
    fn an_invalid_seed_at_reconnection_keeps_the_last_valid_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user.nk");
        let user = nkeys::KeyPair::new_user();
        std::fs::write(&path, format!("{}\n", user.seed().unwrap())).unwrap();
        let files = CredentialFiles::Nkey(path.clone());
        let at_start = files.read().unwrap();
        let rotating = Rotating {
            files,
            last_valid: Mutex::new(at_start.clone()),
            reload_failures: None,
        };
        std::fs::write(&path, "SUnot-a-seed\n").unwrap();
        assert_eq!(rotating.for_attempt(), at_start);
        assert!(!format!("{:?}", rotating.for_attempt()).contains("SU"));
    }
}
