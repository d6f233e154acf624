//! `?watch=true`: a chunked stream of `{"type":..., "object":...}` lines.
//!
//! kubectl's `get -w`, helm's `--wait` and every informer depend on the real server's
//! resourceVersion contract, so it is followed: no or empty/`"0"` resourceVersion (and
//! `sendInitialEvents=true`, the watch-list protocol) first replays the current objects as
//! ADDED; a given resourceVersion resumes after it, or answers an ERROR event with a 410
//! Status when the history no longer reaches back that far. Writes wake the stream through
//! the store's change channel, so nothing polls.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::events::{EventType, TooOld};
use crate::metadata::View;
use crate::resources::Resource;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{labels, Store};
use crate::table::{Include, Printer};

/// How often BOOKMARK events are sent when asked for (the real server: about a minute).
/// Short here so tests and clients see them without long waits; they are cheap.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// The watch-related query parameters.
#[derive(Debug, Default, Clone)]
pub struct WatchParams {
    pub resource_version: Option<String>,
    pub send_initial_events: Option<bool>,
    pub allow_bookmarks: bool,
    pub timeout: Option<Duration>,
    /// The shape of the objects sent (from the Accept header, see `metadata`): whole,
    /// `PartialObjectMetadata`, or a one-row Table each.
    pub view: View,
    /// `includeObject` of Table rows.
    pub include: Include,
}

impl WatchParams {
    /// Reads the parameters from a query string; malformed numbers are a 400 as on the server.
    pub fn parse(query: &str) -> Result<Self, ApiError> {
        let mut p = Self::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "resourceVersion" => p.resource_version = Some(v.into_owned()),
                "sendInitialEvents" => p.send_initial_events = Some(v == "true" || v == "1"),
                "allowWatchBookmarks" => p.allow_bookmarks = v == "true" || v == "1",
                "timeoutSeconds" => {
                    let secs: u64 = v.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid timeoutSeconds: {v:?}"))
                    })?;
                    p.timeout = Some(Duration::from_secs(secs));
                }
                _ => {}
            }
        }
        Ok(p)
    }
}

/// Which objects a watch reports.
struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(&labels(obj)) && self.fields.matches(obj)
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut bytes =
        serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// The shape events carry their object in.
#[derive(Clone)]
enum Shape {
    Full,
    Metadata,
    Table(Printer),
}

/// An event about an object, in the shape the client asked for.
fn object_line(kind: &str, object: &Value, shape: &Shape) -> Bytes {
    match shape {
        Shape::Full => line(kind, object),
        Shape::Metadata => line(kind, &crate::metadata::object(object)),
        Shape::Table(printer) => {
            let rv = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
            line(kind, &printer.table(std::slice::from_ref(object), rv))
        }
    }
}

fn bookmark(res: &Resource, revision: u64, initial_end: bool) -> Bytes {
    let mut object = json!({
        "kind": res.kind,
        "apiVersion": res.api_version(),
        "metadata": {"resourceVersion": revision.to_string()},
    });
    if initial_end {
        object["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line("BOOKMARK", &object)
}

fn expired(e: TooOld) -> Bytes {
    let status = ApiError::expired(format!(
        "too old resource version: {} ({})",
        e.requested, e.oldest
    ))
    .to_status();
    line("ERROR", &status)
}

/// The open stream's state between chunks.
struct Watcher {
    store: Arc<Store>,
    res: &'static Resource,
    ns: Option<String>,
    filter: Filter,
    shape: Shape,
    pending: VecDeque<Bytes>,
    /// Everything up to this revision has been considered.
    cursor: u64,
    deadline: Option<Instant>,
    next_bookmark: Option<Instant>,
    changes: tokio::sync::watch::Receiver<u64>,
    closing: tokio::sync::watch::Receiver<bool>,
    done: bool,
}

impl Watcher {
    /// Queues the events after `cursor` that pass the filter; selector transitions become
    /// ADDED/DELETED.
    fn catch_up(&mut self) {
        match self
            .store
            .events_since(self.res, self.ns.as_deref(), self.cursor)
        {
            Err(e) => {
                self.pending.push_back(expired(e));
                self.done = true;
            }
            Ok((events, revision)) => {
                for (kind, obj, previous) in events {
                    let now = self.filter.matches(&obj);
                    let before = previous.as_ref().is_some_and(|p| self.filter.matches(p));
                    let kind = match kind {
                        EventType::Modified if now && !before => EventType::Added,
                        EventType::Modified if before && !now => EventType::Deleted,
                        k if now => k,
                        _ => continue,
                    };
                    self.pending
                        .push_back(object_line(kind.as_str(), &obj, &self.shape));
                }
                self.cursor = revision;
            }
        }
    }

    async fn next_chunk(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some((Ok(chunk), self));
            }
            if self.done || *self.closing.borrow() {
                return None;
            }
            let far = Instant::now() + Duration::from_secs(86_400);
            let deadline = self.deadline.unwrap_or(far);
            let bookmark_at = self.next_bookmark.unwrap_or(far);
            // Biased: when several are ready (a starved task), writes and a due bookmark are
            // delivered before the deadline ends the stream, so nothing due is lost.
            tokio::select! {
                biased;
                _ = self.closing.changed() => return None,
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    self.catch_up();
                }
                _ = tokio::time::sleep_until(bookmark_at) => {
                    self.pending.push_back(bookmark(self.res, self.cursor, false));
                    self.next_bookmark = Some(Instant::now() + BOOKMARK_INTERVAL);
                }
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }
}

/// Starts a watch of `res` in `ns` (`None`: all namespaces). Errors in the request itself
/// (bad selectors, malformed resourceVersion) are ordinary Status responses; an expired
/// resourceVersion is reported inside the stream, as the real server does.
pub fn start(
    store: Arc<Store>,
    res: &'static Resource,
    ns: Option<&str>,
    labels_sel: LabelSelector,
    fields: FieldSelector,
    params: &WatchParams,
) -> Result<Response, ApiError> {
    if let Some(t) = fields.0.iter().find(|t| !res.supports_field(&t.field)) {
        return Err(ApiError::bad_request(format!(
            "field label not supported: {}",
            t.field
        )));
    }
    let rv = params.resource_version.as_deref().unwrap_or("");
    let replay = params.send_initial_events == Some(true) || rv.is_empty() || rv == "0";
    let filter = Filter {
        labels: labels_sel,
        fields,
    };
    let shape = match params.view {
        View::Full => Shape::Full,
        View::Metadata => Shape::Metadata,
        View::Table => Shape::Table(Printer::new(&store, res, params.include)),
    };
    // Subscribe before reading state so no write between the two is missed.
    let changes = store.subscribe();
    let mut pending = VecDeque::new();
    let cursor = if replay {
        let (items, revision) = store.list(
            res,
            ns,
            &LabelSelector::default(),
            &FieldSelector::default(),
        )?;
        for item in items.iter().filter(|o| filter.matches(o)) {
            pending.push_back(object_line("ADDED", item, &shape));
        }
        if params.send_initial_events == Some(true) && params.allow_bookmarks {
            pending.push_back(bookmark(res, revision, true));
        }
        revision
    } else {
        rv.parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?
    };
    let now = Instant::now();
    let mut watcher = Watcher {
        closing: store.closing(),
        store,
        res,
        ns: ns.map(String::from),
        filter,
        shape,
        pending,
        cursor,
        deadline: params.timeout.map(|t| now + t),
        next_bookmark: params.allow_bookmarks.then(|| now + BOOKMARK_INTERVAL),
        changes,
        done: false,
    };
    // Events already in the history after a given resourceVersion go out at once.
    watcher.catch_up();
    let stream = futures::stream::unfold(watcher, Watcher::next_chunk);
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
