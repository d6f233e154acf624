//! The seed list of `--nats-url`: one or more server URLs, comma separated, the way a NATS
//! cluster's clients are pointed at it (`nats://nats-0:4222,nats://nats-1:4222,...`). The
//! client tries them in turn and then learns the rest of the cluster from the servers.
//!
//! Credentials in a URL (`nats://user:password@host`, `nats://token@host`) are taken out
//! here: the client is given the servers without them and the credentials as options (the
//! NATS client ignores user info in URLs, and would print the URLs in its debug logs), and
//! every message names the servers without them.

use std::fmt;

use async_nats::ServerAddr;
use percent_encoding::percent_decode_str;
use thiserror::Error;

use crate::secret::{redact_user_info, Secret};

/// The text of `--nats-url` as given: kept as text until [`SeedList::parse`] reads it, so
/// that neither clap's parse errors nor a `Debug` print of the configuration can show the
/// credentials it may carry.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsUrlText(String);

impl NatsUrlText {
    /// For clap's `value_parser`: accepts any text (the list is checked by [`SeedList::parse`]).
    pub fn from_arg(text: &str) -> Result<NatsUrlText, String> {
        Ok(NatsUrlText(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for NatsUrlText {
    fn from(text: &str) -> Self {
        NatsUrlText(text.to_owned())
    }
}

impl fmt::Debug for NatsUrlText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_user_info(&self.0))
    }
}

/// Credentials carried in the URLs of the seed list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlCredentials {
    /// `nats://user:password@host`.
    UserPassword { user: String, password: Secret },
    /// `nats://token@host`: a user name without a password is a token, as in every NATS client.
    Token(Secret),
}

/// A parsed `--nats-url`: the servers, without user info, and the credentials they carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedList {
    servers: Vec<ServerAddr>,
    credentials: Option<UrlCredentials>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SeedListError {
    #[error("--nats-url is empty")]
    Empty,
    #[error("--nats-url entry {index} ({shown}) is invalid: {reason}")]
    Invalid {
        index: usize,
        shown: String,
        reason: String,
    },
    #[error("--nats-url entries carry different credentials; give them once (or use --nats-user, --nats-token-file, ...)")]
    DifferentCredentials,
    #[error("--nats-url mixes websocket (ws://, wss://) and NATS (nats://, tls://) servers")]
    MixedSchemes,
}

impl SeedList {
    /// Parses a comma separated list of server URLs; an entry without a scheme is
    /// `nats://`, without a port 4222 (the NATS conventions). Messages show entries redacted.
    pub fn parse(text: &str) -> Result<SeedList, SeedListError> {
        let mut servers = Vec::new();
        let mut credentials: Option<UrlCredentials> = None;
        for (index, entry) in text.split(',').map(str::trim).enumerate() {
            let index = index + 1;
            let invalid = |reason: String| SeedListError::Invalid {
                index,
                shown: redact_user_info(entry),
                reason,
            };
            if entry.is_empty() {
                if text.trim().is_empty() {
                    return Err(SeedListError::Empty);
                }
                return Err(invalid("empty entry".into()));
            }
            let with_scheme = if entry.contains("://") {
                entry.to_owned()
            } else {
                format!("nats://{entry}")
            };
            // The url crate's messages never quote the input.
            let mut url = url::Url::parse(&with_scheme).map_err(|err| invalid(err.to_string()))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(invalid("no host".into()));
            }
            if let Some(found) = take_credentials(&mut url).map_err(invalid)? {
                match &credentials {
                    Some(known) if *known != found => {
                        return Err(SeedListError::DifferentCredentials)
                    }
                    _ => credentials = Some(found),
                }
            }
            let server = ServerAddr::from_url(url).map_err(|err| invalid(err.to_string()))?;
            servers.push(server);
        }
        if servers.iter().any(ServerAddr::is_websocket)
            && servers.iter().any(|server| !server.is_websocket())
        {
            return Err(SeedListError::MixedSchemes);
        }
        Ok(SeedList {
            servers,
            credentials,
        })
    }

    /// The servers, without user info.
    pub fn servers(&self) -> &[ServerAddr] {
        &self.servers
    }

    /// The credentials the URLs carried, if any.
    pub fn credentials(&self) -> Option<&UrlCredentials> {
        self.credentials.as_ref()
    }
}

/// The servers, comma separated, without user info: what messages show.
impl fmt::Display for SeedList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, server) in self.servers.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            f.write_str(server.as_url_str().trim_end_matches('/'))?;
        }
        Ok(())
    }
}

/// Takes the user info out of `url`, percent-decoded.
fn take_credentials(url: &mut url::Url) -> Result<Option<UrlCredentials>, String> {
    if url.username().is_empty() && url.password().is_none() {
        return Ok(None);
    }
    let decode = |text: &str| {
        percent_decode_str(text)
            .decode_utf8()
            .map(|decoded| decoded.into_owned())
            .map_err(|_| "its user info is not UTF-8 once percent-decoded".to_owned())
    };
    let user = decode(url.username())?;
    let password = url.password().map(decode).transpose()?;
    url.set_username("")
        .and_then(|()| url.set_password(None))
        .map_err(|()| "its user info cannot be removed".to_owned())?;
    Ok(Some(match password {
        Some(password) => UrlCredentials::UserPassword {
            user,
            password: Secret::new(password),
        },
        None => UrlCredentials::Token(Secret::new(user)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comma_separated_list_is_several_servers() {
        let seeds = SeedList::parse("nats://127.0.0.1:4222, nats://127.0.0.1:4223,nats-2").unwrap();
        let servers: Vec<(String, u16)> = seeds
            .servers()
            .iter()
            .map(|s| (s.host().to_owned(), s.port()))
            .collect();
        assert_eq!(
            servers,
            [
                ("127.0.0.1".to_owned(), 4222),
                ("127.0.0.1".to_owned(), 4223),
                ("nats-2".to_owned(), 4222)
            ]
        );
        assert_eq!(
            seeds.to_string(),
            "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://nats-2"
        );
        assert!(seeds.credentials().is_none());
        let tls = SeedList::parse("tls://nats.example:4443").unwrap();
        assert!(tls.servers()[0].tls_required());
    }

    #[test]
    fn credentials_are_taken_out_of_the_urls() {
        let seeds =
            SeedList::parse("nats://alice:p%40ss@nats-0:4222,nats://alice:p%40ss@nats-1").unwrap();
        assert_eq!(
            seeds.credentials(),
            Some(&UrlCredentials::UserPassword {
                user: "alice".into(),
                password: Secret::new("p@ss")
            })
        );
        assert_eq!(seeds.to_string(), "nats://nats-0:4222,nats://nats-1");
        for server in seeds.servers() {
            assert!(!server.has_user_pass(), "{}", server.as_url_str());
            assert!(!server.as_url_str().contains("p%40ss"));
        }
        let token = SeedList::parse("nats://s3cret-token@nats-0,nats-1").unwrap();
        assert_eq!(
            token.credentials(),
            Some(&UrlCredentials::Token(Secret::new("s3cret-token")))
        );
        assert!(!format!("{token:?} {token}").contains("s3cret"));
    }

    #[test]
    fn bad_lists_are_refused_without_showing_credentials() {
        assert_eq!(SeedList::parse(" "), Err(SeedListError::Empty));
        let err = SeedList::parse("nats://a:4222,,nats://b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--nats-url entry 2 () is invalid: empty entry"
        );
        let err = SeedList::parse("nats://u:hunter2@a:99999")
            .unwrap_err()
            .to_string();
        assert!(err.contains("entry 1 (nats://***@a:99999)"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(
            SeedList::parse("nats://u:one@a,nats://u:two@b"),
            Err(SeedListError::DifferentCredentials)
        );
        assert_eq!(
            SeedList::parse("ws://a:80,nats://b"),
            Err(SeedListError::MixedSchemes)
        );
        assert!(SeedList::parse("http://a:80").is_err());
        assert!(format!("{:?}", NatsUrlText::from("nats://u:hunter2@a")).contains("***@a"));
        assert!(!format!("{:?}", NatsUrlText::from("nats://u:hunter2@a")).contains("hunter2"));
    }
}
