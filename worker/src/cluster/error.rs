//! The one error type of the cluster module, with the distinction callers act on: is it worth
//! trying again (the event is redelivered with backoff) or will it fail the same way again
//! (report `errored` to Keptn with a message a person can act on)?

use std::time::Duration;

use kube::runtime::watcher;

/// A failure talking to the Kubernetes API.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No usable client configuration (missing or invalid kubeconfig, unknown context, not
    /// in a cluster). Retrying does not help.
    #[error("cannot configure the Kubernetes client: {0}")]
    Config(String),

    /// The API server answered with an error, or could not be reached.
    #[error("Kubernetes API: {action}: {}", describe(.source))]
    Request {
        /// What we were doing, e.g. `get Service carts in sockshop-dev`.
        action: String,
        #[source]
        source: kube::Error,
    },

    /// No answer within the request timeout (a hung connection or an overloaded server).
    #[error("Kubernetes API: {action}: no answer within {after:?}")]
    Timeout { action: String, after: Duration },

    /// The namespace exists but is being deleted; nothing can be created in it until it is
    /// gone, which happens by itself.
    #[error(
        "namespace {namespace} is being deleted (phase Terminating); try again once it is gone"
    )]
    NamespaceTerminating { namespace: String },

    /// The API server broke the protocol (e.g. a watch without resourceVersion).
    #[error("Kubernetes API: {action}: {detail}")]
    Protocol { action: String, detail: String },

    /// An object was read but its content is not what its writer (e.g. Helm) writes.
    #[error("{what} is unreadable: {reason}")]
    Unreadable { what: String, reason: String },
}

impl ClusterError {
    pub(crate) fn request(action: String, source: kube::Error) -> Self {
        ClusterError::Request { action, source }
    }

    /// Maps a watcher error onto the request error it wraps.
    pub(crate) fn watch(action: String, error: watcher::Error) -> Self {
        match error {
            watcher::Error::InitialListFailed(source)
            | watcher::Error::WatchStartFailed(source)
            | watcher::Error::WatchFailed(source) => ClusterError::Request { action, source },
            watcher::Error::WatchError(status) => ClusterError::Request {
                action,
                source: kube::Error::Api(status),
            },
            watcher::Error::NoResourceVersion => ClusterError::Protocol {
                action,
                detail: "the watch answer carried no resourceVersion".into(),
            },
        }
    }

    /// Whether the same request may succeed later: connection failures, timeouts, throttling
    /// (429), server errors (5xx) and optimistic-concurrency conflicts are transient;
    /// authorization (401/403), missing objects or kinds (404), invalid objects (400/422) and
    /// configuration problems are not.
    pub fn is_transient(&self) -> bool {
        match self {
            ClusterError::Config(_)
            | ClusterError::Protocol { .. }
            | ClusterError::Unreadable { .. } => false,
            ClusterError::Timeout { .. } | ClusterError::NamespaceTerminating { .. } => true,
            ClusterError::Request { source, .. } => kube_error_is_transient(source),
        }
    }

    /// The HTTP status code of an API error answer, if the server answered with one.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            ClusterError::Request {
                source: kube::Error::Api(status),
                ..
            } => Some(status.code),
            _ => None,
        }
    }
}

fn kube_error_is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => {
            matches!(status.code, 408 | 429 | 500..=599)
                // 409 Conflict (stale resourceVersion) succeeds after a fresh read; 409
                // AlreadyExists does not.
                || (status.code == 409 && status.reason == "Conflict")
        }
        // The connection failed, was refused or reset, or the stream broke.
        kube::Error::HyperError(_)
        | kube::Error::Service(_)
        | kube::Error::ReadEvents(_)
        | kube::Error::HttpError(_) => true,
        _ => false,
    }
}

/// kube-rs's own `Display` of an API error repeats the whole Status struct; people want the
/// code, reason and message.
fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let mut out = format!("{} {}", status.code, status.reason);
            if !status.message.is_empty() {
                out.push_str(": ");
                out.push_str(&status.message);
            }
            out
        }
        other => {
            // Connection errors hide the useful part (e.g. "Connection refused") in sources.
            let mut out = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !out.contains(&text) {
                    out.push_str(": ");
                    out.push_str(&text);
                }
                source = cause.source();
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str) -> ClusterError {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "reason": reason,
            "message": format!("the {reason} message"),
        }))
        .expect("status");
        ClusterError::request("get thing".into(), kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn transient_follows_the_status_code() {
        for code in [429, 500, 502, 503, 504] {
            assert!(api(code, "Whatever").is_transient(), "{code}");
        }
        for (code, reason) in [
            (400, "BadRequest"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "NotFound"),
            (409, "AlreadyExists"),
            (422, "Invalid"),
        ] {
            assert!(!api(code, reason).is_transient(), "{code}");
        }
        assert!(api(409, "Conflict").is_transient());
        assert!(ClusterError::Timeout {
            action: "x".into(),
            after: Duration::from_secs(1)
        }
        .is_transient());
        assert!(!ClusterError::Config("x".into()).is_transient());
    }

    #[test]
    fn display_is_short_and_names_the_action() {
        let text = api(403, "Forbidden").to_string();
        assert_eq!(
            text,
            "Kubernetes API: get thing: 403 Forbidden: the Forbidden message"
        );
        assert_eq!(api(403, "Forbidden").status_code(), Some(403));
    }
}
