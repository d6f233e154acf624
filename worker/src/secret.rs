//! Secrets that stay secret: a value that never prints, files it is read from, and URLs whose
//! user info is hidden before they reach a log line, an error message or an HTTP answer.
//!
//! Credentials come from files (`--nats-password-file`, `--resource-service-token-file`, ...)
//! rather than flags, so they are neither in `ps` output nor in `--help`; once read they live
//! in a [`Secret`], whose `Debug` and `Display` print `***`.

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A credential: prints as `***`; [`expose`](Self::expose) is the one way to its text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Secret(text.into())
    }

    /// The secret's text, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A file named by a flag could not be used. Names the flag and the path, never the content.
#[derive(Debug, Error)]
pub enum SecretFileError {
    #[error("cannot read {flag} {}: {reason}", path.display())]
    Unreadable {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{flag} {} is empty", path.display())]
    Empty { flag: &'static str, path: PathBuf },
    #[error("{flag} {} {problem}", path.display())]
    Invalid {
        flag: &'static str,
        path: PathBuf,
        problem: String,
    },
}

/// Reads a file holding a secret (a password, a token, a seed); one trailing line break is
/// dropped, as files made with `echo` or Kubernetes Secrets from literals may carry one.
pub fn read_secret_file(flag: &'static str, path: &Path) -> Result<Secret, SecretFileError> {
    let text = read_file(flag, path)?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if text.trim().is_empty() {
        return Err(SecretFileError::Empty {
            flag,
            path: path.to_owned(),
        });
    }
    Ok(Secret::new(text))
}

/// Reads a file named by `flag` as UTF-8 text (certificates, keys, credentials).
pub fn read_file(flag: &'static str, path: &Path) -> Result<String, SecretFileError> {
    let unreadable = |reason: String| SecretFileError::Unreadable {
        flag,
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|err| unreadable(err.to_string()))?;
    String::from_utf8(bytes).map_err(|_| unreadable("not UTF-8 text".into()))
}

/// `text` with the user info of every URL in it (`scheme://user:password@host`) replaced by
/// `***`, for messages that quote URLs or errors that may (reqwest's name the URL).
pub fn redact_user_info(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The authority ends at the path, query, fragment, or anything that cannot be in it.
        let end = after
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | ',' | '"' | '\'' | '<' | '>' | '`')
                    || c.is_whitespace()
            })
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(user_end) => {
                out.push_str("***");
                out.push_str(&authority[user_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret} {secret:?}"), "*** ***");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn user_info_is_redacted_wherever_a_url_appears() {
        assert_eq!(
            redact_user_info("connecting to nats://alice:s3cret@nats-0:4222,tls://tok@nats-1"),
            "connecting to nats://***@nats-0:4222,tls://***@nats-1"
        );
        assert_eq!(
            redact_user_info("error for url (https://u:p%40ss@rs:8080/v1/x?y=1): refused"),
            "error for url (https://***@rs:8080/v1/x?y=1): refused"
        );
        assert_eq!(
            redact_user_info("plain nats://nats:4222 and http://x/a@b"),
            "plain nats://nats:4222 and http://x/a@b"
        );
        assert_eq!(redact_user_info("no url here"), "no url here");
        assert_eq!(redact_user_info("odd ://@"), "odd ://***@");
    }

    #[test]
    fn secret_files_name_the_flag_and_path_never_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "hunter2\n").unwrap();
        let secret = read_secret_file("--nats-password-file", &path).unwrap();
        assert_eq!(secret.expose(), "hunter2");

        std::fs::write(&path, "\n").unwrap();
        let err = read_secret_file("--nats-password-file", &path).unwrap_err();
        assert!(err.to_string().ends_with("password is empty"), "{err}");

        let missing = dir.path().join("missing");
        let err = read_secret_file("--nats-token-file", &missing).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("cannot read --nats-token-file ") && text.contains("missing"),
            "{text}"
        );
    }
}
