//! The object store: every served object as JSON, with the metadata the API server owns.
//!
//! One read-write lock guards the map and the global `resourceVersion` counter, so each verb is
//! atomic like a single etcd transaction (writes exclusive, reads shared). Objects are stored under their group/plural (not version),
//! so API versions of one type share storage; reads stamp the requested `apiVersion`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;
use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::convert;
use crate::defaults;
use crate::events::{Event, EventType, History, TooOld};
use crate::resources::{self, Resource};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;

/// `(group, plural, namespace, name)`; `namespace` is `""` for cluster-scoped objects.
type Key = (String, String, String, String);

const CRD_GROUP: &str = "apiextensions.k8s.io";
const CRD_PLURAL: &str = "customresourcedefinitions";

/// Namespaces a fresh cluster has.
const INITIAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

#[derive(Debug, Default, Clone)]
struct State {
    /// Ordered by group, plural, namespace, name, so one kind (in one namespace) is a range.
    /// Change it only through `put` and `take`, which keep `dependents` in step.
    objects: BTreeMap<Key, Value>,
    /// Owner uid → the objects whose `metadata.ownerReferences` name it (the garbage
    /// collector's graph), so finding an owner's dependents does not scan every object.
    dependents: HashMap<String, BTreeSet<Key>>,
    /// Last issued resourceVersion; strictly increasing across all types, like etcd's revision.
    revision: u64,
    history: History,
    /// Resources defined by the stored CustomResourceDefinitions.
    custom: Vec<&'static Resource>,
}

/// The uids an object's `metadata.ownerReferences` name.
fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    meta(obj)
        .get("ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str())
}

impl State {
    /// Stores `obj` under `k`, replacing (and unindexing) what was there.
    fn put(&mut self, k: Key, obj: Value) {
        self.take(&k);
        for owner in owner_uids(&obj) {
            self.dependents
                .entry(owner.to_string())
                .or_default()
                .insert(k.clone());
        }
        self.objects.insert(k, obj);
    }

    /// Removes the object under `k` and its index entries.
    fn take(&mut self, k: &Key) -> Option<Value> {
        let obj = self.objects.remove(k)?;
        for owner in owner_uids(&obj) {
            if let Some(keys) = self.dependents.get_mut(owner) {
                keys.remove(k);
                if keys.is_empty() {
                    self.dependents.remove(owner);
                }
            }
        }
        Some(obj)
    }

    /// The objects of one storage (group/plural), in one namespace or all, in key order,
    /// without visiting other kinds.
    fn of_kind<'a>(
        &'a self,
        group: &'a str,
        plural: &'a str,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Key, &'a Value)> + 'a {
        let start = (
            group.to_string(),
            plural.to_string(),
            ns.unwrap_or("").to_string(),
            String::new(),
        );
        self.objects
            .range(start..)
            .take_while(move |((g, p, kns, _), _)| {
                g == group && p == plural && ns.is_none_or(|n| n == kns)
            })
    }

    /// Recomputes the custom resources after a CustomResourceDefinition write.
    fn refresh_custom(&mut self) {
        self.custom = self
            .of_kind(CRD_GROUP, CRD_PLURAL, None)
            .flat_map(|(_, crd)| resources::from_crd(crd))
            .collect();
    }

    /// Issues the next revision and records the write for watches.
    fn record(&mut self, kind: EventType, k: &Key, object: &mut Value, previous: Option<Value>) {
        self.revision += 1;
        object["metadata"]["resourceVersion"] = json!(self.revision.to_string());
        let (group, plural, namespace, _) = k.clone();
        self.history.push(Event {
            revision: self.revision,
            at: Instant::now(),
            kind,
            group,
            plural,
            namespace,
            object: object.clone(),
            previous,
        });
    }
}

/// Thread-safe object store.
#[derive(Debug)]
pub struct Store {
    state: RwLock<State>,
    /// The revision after the latest write; watches wait on it instead of polling.
    changes: tokio::sync::watch::Sender<u64>,
    /// Set when the server stops, so open watch streams end and graceful shutdown completes.
    closing: tokio::sync::watch::Sender<bool>,
}

/// Options a DELETE body (`DeleteOptions.preconditions`) may carry.
#[derive(Debug, Default, Clone)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// `propagationPolicy: Orphan`: dependents lose their owner reference instead of
    /// being deleted with their owner.
    pub orphan_dependents: bool,
}

fn key(res: &Resource, ns: &str, name: &str) -> Key {
    let (g, p) = res.storage_key();
    (g.into(), p.into(), ns.into(), name.into())
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta(obj: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    obj.get("metadata")
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj).get(field).and_then(Value::as_str).unwrap_or("")
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().expect("set above")
}

/// The object's labels (non-string values are rejected on write, so they cannot appear here).
pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    meta(obj)
        .get("labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// RFC 1123 subdomain (most names) or label (namespaces), as the real validation demands.
fn validate_name(res: &Resource, name: &str) -> Result<(), ApiError> {
    let label_only = res.plural == "namespaces";
    let max = if label_only { 63 } else { 253 };
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    let ok = name.len() <= max
        && if label_only {
            ok_part(name)
        } else {
            name.split('.').all(ok_part)
        };
    if ok {
        Ok(())
    } else {
        let what = if label_only {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        };
        Err(ApiError::invalid(
            res.kind,
            name,
            format!("metadata.name: Invalid value: \"{name}\": {what}"),
        ))
    }
}

/// Checks the parts of metadata every type shares (labels and annotations are string maps).
fn validate_meta(res: &Resource, obj: &Value, name: &str) -> Result<(), ApiError> {
    for field in ["labels", "annotations"] {
        if let Some(v) = meta(obj).get(field) {
            let ok = v.is_null()
                || v.as_object()
                    .is_some_and(|m| m.values().all(Value::is_string));
            if !ok {
                return Err(ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: metadata.{field} must be a map of strings",
                    res.kind,
                    res.version,
                    res.kind
                )));
            }
        }
    }
    validate_name(res, name)
}

/// 5 characters from the alphabet the real server uses for `generateName` suffixes.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Everything but metadata and status — a change here bumps `metadata.generation`.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    v
}

/// The object without the fields a client cannot meaningfully change, for no-op detection.
fn comparable(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    if let Some(m) = v.as_object_mut() {
        m.remove("apiVersion");
    }
    v
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// A store holding the namespaces every cluster starts with.
    pub fn new() -> Self {
        let store = Self {
            state: RwLock::new(State::default()),
            changes: tokio::sync::watch::Sender::new(0),
            closing: tokio::sync::watch::Sender::new(false),
        };
        let ns = resources::find("", "v1", "namespaces").expect("namespaces in the table");
        for name in INITIAL_NAMESPACES {
            store
                .create(ns, "", json!({"metadata": {"name": name}}))
                .expect("initial namespace");
        }
        store
    }

    /// Shared access for reads: GETs, LISTs and the controllers' reads run side by side and
    /// wait only for a write in progress.
    fn lock(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every verb works on copies).
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Exclusive access for one write.
    fn lock_mut(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The resources the stored CustomResourceDefinitions define (served versions only).
    pub fn custom_resources(&self) -> Vec<&'static Resource> {
        self.lock().custom.clone()
    }

    /// The current revision, the `resourceVersion` of lists.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// A detached copy of the current state, for `dryRun=All`: a write runs through every
    /// check on the copy and is answered, but nothing is stored and no watch sees it.
    pub fn simulate(&self) -> Store {
        let state = self.lock().clone();
        Store {
            changes: tokio::sync::watch::Sender::new(state.revision),
            closing: tokio::sync::watch::Sender::new(false),
            state: RwLock::new(state),
        }
    }

    /// Wakes watches after a write (called once the lock is released).
    fn notify(&self, revision: u64) {
        self.changes.send_replace(revision);
    }

    /// A receiver that changes on every write.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A receiver that turns `true` when the server shuts down.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Ends every open watch stream.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Events of `res`'s storage (in `ns`, or all namespaces) after `revision`, stamped for
    /// the requested API version, and the revision they bring the caller up to.
    #[allow(clippy::type_complexity)]
    pub fn events_since(
        &self,
        res: &Resource,
        ns: Option<&str>,
        revision: u64,
    ) -> Result<(Vec<(EventType, Value, Option<Value>)>, u64), TooOld> {
        let state = self.lock();
        let events = Self::history_of(&state, res, ns, revision)?
            .map(|e| {
                (
                    e.kind,
                    Self::present(res, &e.object),
                    e.previous.as_ref().map(|o| Self::present(res, o)),
                )
            })
            .collect();
        Ok((events, state.revision))
    }

    /// The objects of `res` (in `ns`, or all namespaces) as written after `revision`, each
    /// with the instant it was stored, oldest first. For tests that time a client against
    /// the moment the server held a state (e.g. a pod turning ready): an observer of its own
    /// would see that moment late by however long the machine kept it waiting.
    pub fn writes_since(
        &self,
        res: &Resource,
        ns: Option<&str>,
        revision: u64,
    ) -> Result<Vec<(Instant, Value)>, TooOld> {
        let state = self.lock();
        let writes = Self::history_of(&state, res, ns, revision)?
            .map(|e| (e.at, Self::present(res, &e.object)))
            .collect();
        Ok(writes)
    }

    /// The kept events of `res`'s storage (in `ns`, or all namespaces) after `revision`.
    fn history_of<'a>(
        state: &'a State,
        res: &Resource,
        ns: Option<&'a str>,
        revision: u64,
    ) -> Result<impl Iterator<Item = &'a Event> + 'a, TooOld> {
        let (g, p) = res.storage_key();
        Ok(state
            .history
            .since(revision)?
            .filter(move |e| e.group == g && e.plural == p && ns.is_none_or(|n| n == e.namespace)))
    }

    /// Returns a stored object converted to and stamped for the requested version.
    fn present(res: &Resource, obj: &Value) -> Value {
        let mut out = convert::from_storage(res, obj.clone());
        out["apiVersion"] = json!(res.api_version());
        out["kind"] = json!(res.kind);
        out
    }

    /// POST: assigns name (from `generateName`), uid, resourceVersion, creationTimestamp and
    /// generation; refuses duplicates and objects in namespaces that do not exist.
    pub fn create(&self, res: &Resource, ns: &str, obj: Value) -> Result<Value, ApiError> {
        self.write(|state| Self::create_locked(state, res, ns, obj))
    }

    /// Runs one write under the lock and wakes watches if it produced a revision.
    fn write<T>(&self, f: impl FnOnce(&mut State) -> Result<T, ApiError>) -> Result<T, ApiError> {
        let mut state = self.lock_mut();
        let before = state.revision;
        let out = f(&mut state);
        let after = state.revision;
        drop(state);
        if after != before {
            self.notify(after);
        }
        out
    }

    /// Server-side apply's verb: `change` gets the current object (`None` when absent) and
    /// returns the desired one, which is created or updated in one atomic step.
    pub fn upsert(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        change: impl FnOnce(Option<&Value>) -> Result<Value, ApiError>,
    ) -> Result<(Value, bool), ApiError> {
        self.write(|state| {
            let exists = state.objects.contains_key(&key(res, ns, name));
            if exists {
                Self::modify_locked(state, res, ns, name, |cur| change(Some(cur)))
                    .map(|o| (o, false))
            } else {
                let mut obj = change(None)?;
                let body_name = meta_str(&obj, "name");
                if !body_name.is_empty() && body_name != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({body_name}) does not match the name on the URL ({name})"
                    )));
                }
                meta_mut(&mut obj).insert("name".into(), json!(name));
                Self::create_locked(state, res, ns, obj).map(|o| (o, true))
            }
        })
    }

    fn create_locked(
        state: &mut State,
        res: &Resource,
        ns: &str,
        obj: Value,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body is not a JSON object",
            ));
        }
        check_type(res, &obj)?;
        let requested = res;
        let res = convert::storage(res);
        let mut obj = convert::to_storage(requested, obj);
        defaults::apply(res, &mut obj);
        let body_ns = meta_str(&obj, "namespace").to_string();
        if res.namespaced {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        } else if !body_ns.is_empty() {
            meta_mut(&mut obj).remove("namespace");
        }
        let mut name = meta_str(&obj, "name").to_string();
        if name.is_empty() {
            let prefix = meta_str(&obj, "generateName").to_string();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    res.kind,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
            name = loop {
                let candidate = format!("{prefix}{}", random_suffix());
                if !state.objects.contains_key(&key(res, ns, &candidate)) {
                    break candidate;
                }
            };
        }
        validate_meta(res, &obj, &name)?;
        if res.group.is_empty() && res.plural == "services" {
            allocate_cluster_ip(state, &mut obj, &name)?;
        }
        if resources::is_crd(res) {
            accept_crd(&mut obj, &name)?;
        }
        if res.namespaced {
            let ns_res = resources::find("", "v1", "namespaces").expect("namespaces in the table");
            if !state.objects.contains_key(&key(ns_res, "", ns)) {
                return Err(ApiError::not_found("namespaces", "", ns));
            }
        }
        let k = key(res, ns, &name);
        if state.objects.contains_key(&k) {
            return Err(ApiError::already_exists(res.plural, res.group, &name));
        }
        let m = meta_mut(&mut obj);
        m.insert("name".into(), json!(name));
        if res.namespaced {
            m.insert("namespace".into(), json!(ns));
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now()));
        m.remove("deletionTimestamp");
        if res.generation {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
        if res.plural == "namespaces" {
            // What the namespace registry and lifecycle admission add on a real cluster.
            m.entry("labels")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .map(|l| l.insert("kubernetes.io/metadata.name".into(), json!(name)));
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        let mut stored = Self::present(res, &obj);
        state.record(EventType::Added, &k, &mut stored, None);
        state.put(k, stored.clone());
        if resources::is_crd(res) {
            state.refresh_custom();
        }
        if std::ptr::eq(requested, res) {
            Ok(stored)
        } else {
            Ok(Self::present(requested, &stored))
        }
    }

    /// The objects of `res`'s storage in `ns` whose `metadata.ownerReferences` name
    /// `owner_uid` (any reference, controller or not), in name order. Uses the owner index:
    /// the cost follows the number of dependents, not of stored objects.
    pub fn owned_by(&self, res: &Resource, ns: &str, owner_uid: &str) -> Vec<Value> {
        let state = self.lock();
        let (g, p) = res.storage_key();
        state
            .dependents
            .get(owner_uid)
            .into_iter()
            .flatten()
            .filter(|(kg, kp, kns, _)| kg == g && kp == p && kns == ns)
            .filter_map(|k| state.objects.get(k))
            .map(|o| Self::present(res, o))
            .collect()
    }

    /// The writes after `revision` to the storages of `kinds`, as `(index into kinds, event
    /// type, object after the write, object before it)`, and the revision they bring the
    /// caller up to. Cheaper than `events_since` per kind: one pass over the history, from
    /// the first event after `revision`.
    #[allow(clippy::type_complexity)]
    pub fn changes_since(
        &self,
        kinds: &[&Resource],
        revision: u64,
    ) -> Result<(Vec<(usize, EventType, Value, Option<Value>)>, u64), TooOld> {
        let state = self.lock();
        let keys: Vec<(&str, &str)> = kinds.iter().map(|r| r.storage_key()).collect();
        let changes = state
            .history
            .since(revision)?
            .filter_map(|e| {
                let i = keys
                    .iter()
                    .position(|(g, p)| e.group == *g && e.plural == *p)?;
                Some((i, e.kind, e.object.clone(), e.previous.clone()))
            })
            .collect();
        Ok((changes, state.revision))
    }

    /// GET of one object.
    pub fn get(&self, res: &Resource, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.lock()
            .objects
            .get(&key(res, ns, name))
            .map(|o| Self::present(res, o))
            .ok_or_else(|| ApiError::not_found(res.plural, res.group, name))
    }

    /// LIST; `ns` of `None` lists across all namespaces. Items are in namespace/name order.
    pub fn list(
        &self,
        res: &Resource,
        ns: Option<&str>,
        labels_sel: &LabelSelector,
        fields: &FieldSelector,
    ) -> Result<(Vec<Value>, u64), ApiError> {
        if let Some(t) = fields.0.iter().find(|t| !res.supports_field(&t.field)) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {}",
                t.field
            )));
        }
        let state = self.lock();
        let (g, p) = res.storage_key();
        let items = state
            .of_kind(g, p, ns)
            .filter(|(_, o)| labels_sel.matches(&labels(o)) && fields.matches(o))
            .map(|(_, o)| Self::present(res, o))
            .collect();
        Ok((items, state.revision))
    }

    /// PUT: replaces the object, keeping what the server owns. A non-empty
    /// `metadata.resourceVersion` in the body must equal the stored one (optimistic
    /// concurrency); an unchanged object is returned as is, without a new resourceVersion.
    pub fn update(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        obj: Value,
    ) -> Result<Value, ApiError> {
        self.modify(res, ns, name, |_| Ok(obj))
    }

    /// Read-modify-write under the lock: `change` gets the current object and returns the new
    /// one, which then goes through the same checks as PUT. PATCH is built on this.
    pub fn modify(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        change: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        self.write(|state| Self::modify_locked(state, res, ns, name, change))
    }

    fn modify_locked(
        state: &mut State,
        res: &Resource,
        ns: &str,
        name: &str,
        change: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let k = key(res, ns, name);
        // The stored object (in the storage version) and as the client's version shows it.
        let stored_old = state
            .objects
            .get(&k)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res.plural, res.group, name))?;
        let old = Self::present(res, &stored_old);
        let new = change(&old)?;
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the request body is not a JSON object",
            ));
        }
        check_type(res, &new)?;
        let requested = res;
        let res = convert::storage(res);
        let mut new = convert::to_storage(requested, new);
        defaults::apply(res, &mut new);
        let body_name = meta_str(&new, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta_str(&new, "namespace");
        if res.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let body_rv = meta_str(&new, "resourceVersion");
        if !body_rv.is_empty() && body_rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict(
                res.plural,
                res.group,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        validate_meta(res, &new, name)?;
        crate::immutable::check(res, &stored_old, &new, name)?;
        if res.group.is_empty() && res.plural == "services" {
            keep_cluster_ip(&old, &mut new, name)?;
        }
        let old_meta = meta(&old).clone();
        let m = meta_mut(&mut new);
        m.insert("name".into(), json!(name));
        if res.namespaced {
            m.insert("namespace".into(), json!(ns));
        }
        for owned in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
        ] {
            match old_meta.get(owned) {
                Some(v) => m.insert(owned.into(), v.clone()),
                None => m.remove(owned),
            };
        }
        m.insert(
            "resourceVersion".into(),
            old_meta["resourceVersion"].clone(),
        );
        let mut new = Self::present(res, &new);
        if comparable(&new) == comparable(&stored_old) {
            return Ok(old);
        }
        if res.generation && spec_part(&new) != spec_part(&stored_old) {
            let g = old_meta
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            new["metadata"]["generation"] = json!(g + 1);
        }
        state.record(EventType::Modified, &k, &mut new, Some(stored_old));
        state.put(k, new.clone());
        if resources::is_crd(res) {
            state.refresh_custom();
        }
        if std::ptr::eq(requested, res) {
            Ok(new)
        } else {
            Ok(Self::present(requested, &new))
        }
    }

    /// DELETE: removes the object immediately (no finalizers or grace periods) and returns it.
    /// Deleting a namespace removes every object in it; the returned namespace carries
    /// `deletionTimestamp` and phase `Terminating`, the last state a real client would see.
    pub fn delete(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        pre: &Preconditions,
    ) -> Result<Value, ApiError> {
        self.write(|state| Self::delete_locked(state, res, ns, name, pre))
    }

    fn delete_locked(
        state: &mut State,
        res: &Resource,
        ns: &str,
        name: &str,
        pre: &Preconditions,
    ) -> Result<Value, ApiError> {
        let k = key(res, ns, name);
        let current = state
            .objects
            .get(&k)
            .ok_or_else(|| ApiError::not_found(res.plural, res.group, name))?;
        if let Some(uid) = &pre.uid {
            if uid != meta_str(current, "uid") {
                return Err(ApiError::conflict(
                    res.plural,
                    res.group,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(current, "uid")
                    ),
                ));
            }
        }
        if let Some(rv) = &pre.resource_version {
            if rv != meta_str(current, "resourceVersion") {
                return Err(ApiError::conflict(
                    res.plural,
                    res.group,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        meta_str(current, "resourceVersion")
                    ),
                ));
            }
        }
        let mut removed = state.take(&k).expect("checked above");
        state.record(EventType::Deleted, &k, &mut removed, None);
        Self::collect_dependents(state, meta_str(&removed, "uid"), pre.orphan_dependents);
        if res.plural == "namespaces" {
            let contained: Vec<Key> = state
                .objects
                .keys()
                .filter(|(_, _, kns, _)| kns.as_str() == name)
                .cloned()
                .collect();
            for ck in contained {
                let mut gone = state.take(&ck).expect("listed above");
                state.record(EventType::Deleted, &ck, &mut gone, None);
            }
            removed["metadata"]["deletionTimestamp"] = json!(now());
            removed["status"] = json!({"phase": "Terminating"});
        }
        if resources::is_crd(res) {
            state.refresh_custom();
            // The custom objects go with their definition (unless another CRD still serves
            // the same group/plural, which validation normally prevents).
            let group = removed["spec"]["group"].as_str().unwrap_or("").to_string();
            let plural = removed["spec"]["names"]["plural"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let still_served = state
                .custom
                .iter()
                .any(|r| r.group == group && r.plural == plural);
            if !still_served && !plural.is_empty() {
                let contained: Vec<Key> = state
                    .of_kind(&group, &plural, None)
                    .map(|(k, _)| k.clone())
                    .collect();
                for ck in contained {
                    let mut gone = state.take(&ck).expect("listed above");
                    state.record(EventType::Deleted, &ck, &mut gone, None);
                }
            }
        }
        Ok(Self::present(res, &removed))
    }
}

impl Store {
    /// The garbage collector, run with the delete that removes an owner: objects whose
    /// `metadata.ownerReferences` name the owner's uid are deleted too, and theirs in turn
    /// (background propagation, done at once); with `orphan`, they only lose the reference.
    fn collect_dependents(state: &mut State, owner_uid: &str, orphan: bool) {
        let mut owners = vec![owner_uid.to_string()];
        while let Some(owner) = owners.pop() {
            let dependents: Vec<Key> = state
                .dependents
                .get(&owner)
                .map(|keys| keys.iter().cloned().collect())
                .unwrap_or_default();
            for dk in dependents {
                if orphan {
                    let mut obj = state.take(&dk).expect("listed above");
                    let previous = obj.clone();
                    if let Some(refs) = obj["metadata"]["ownerReferences"].as_array_mut() {
                        refs.retain(|r| r["uid"] != owner.as_str());
                        if refs.is_empty() {
                            if let Some(meta) = obj["metadata"].as_object_mut() {
                                meta.remove("ownerReferences");
                            }
                        }
                    }
                    state.record(EventType::Modified, &dk, &mut obj, Some(previous));
                    state.put(dk, obj);
                } else {
                    let mut gone = state.take(&dk).expect("listed above");
                    state.record(EventType::Deleted, &dk, &mut gone, None);
                    owners.push(meta_str(&gone, "uid").to_string());
                }
            }
        }
    }
}

/// Checks a new CustomResourceDefinition's names the way the apiextensions registry does
/// (name `<plural>.<group>`, no clash with a built-in type) and marks it established:
/// there is no naming controller, so names are accepted at once.
fn accept_crd(obj: &mut Value, name: &str) -> Result<(), ApiError> {
    let invalid = |msg: &str| ApiError::invalid("CustomResourceDefinition", name, msg);
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let group = spec["group"].as_str().unwrap_or("");
    let plural = spec["names"]["plural"].as_str().unwrap_or("");
    if group.is_empty() {
        return Err(invalid("spec.group: Required value"));
    }
    if plural.is_empty() {
        return Err(invalid("spec.names.plural: Required value"));
    }
    if spec["names"]["kind"].as_str().unwrap_or("").is_empty() {
        return Err(invalid("spec.names.kind: Required value"));
    }
    if name != format!("{plural}.{group}") {
        return Err(invalid(&format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
        )));
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        return Err(invalid("spec.versions: Invalid value: null: must have exactly one version marked as storage version"));
    }
    if resources::RESOURCES
        .iter()
        .any(|r| r.group == group && r.plural == plural)
    {
        return Err(invalid(&format!(
            "spec.group: Invalid value: \"{group}\": {plural}.{group} is a built-in resource"
        )));
    }
    let stored: Vec<Value> = versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .map(|v| v["name"].clone())
        .collect();
    let at = now();
    obj["status"] = json!({
        "acceptedNames": spec["names"],
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": at,
             "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": at,
             "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
        ],
        "storedVersions": stored,
    });
    Ok(())
}

/// The service CIDR cluster IPs come from, as `kube-apiserver --service-cluster-ip-range`.
const SERVICE_CIDR_BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const SERVICE_CIDR_BITS: u32 = 12;
/// The first address handed out (`10.96.0.1` is the `kubernetes` Service's, `.10` DNS's).
const FIRST_DYNAMIC_OFFSET: u32 = 11;

fn in_service_cidr(ip: std::net::Ipv4Addr) -> bool {
    u32::from(ip) >> (32 - SERVICE_CIDR_BITS) == SERVICE_CIDR_BASE >> (32 - SERVICE_CIDR_BITS)
}

fn cluster_ip_of(obj: &Value) -> &str {
    obj.pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The service registry's allocation on create: `spec.clusterIP` (and `spec.clusterIPs`) from
/// the service CIDR, unique among stored Services. `None` (headless) stays `None`; a requested
/// address must lie in the range and be free; `ExternalName` services get none.
fn allocate_cluster_ip(state: &State, obj: &mut Value, name: &str) -> Result<(), ApiError> {
    let invalid = |msg: String| ApiError::invalid("Service", name, msg);
    if obj.get("spec").is_none_or(|s| !s.is_object()) {
        obj["spec"] = json!({});
    }
    let svc_type = obj["spec"]["type"]
        .as_str()
        .unwrap_or("ClusterIP")
        .to_string();
    let requested = cluster_ip_of(obj).to_string();
    if svc_type == "ExternalName" {
        return Ok(());
    }
    if requested == "None" {
        obj["spec"]["clusterIPs"] = json!(["None"]);
        return Ok(());
    }
    let used: std::collections::BTreeSet<String> = state
        .of_kind("", "services", None)
        .map(|(_, o)| cluster_ip_of(o).to_string())
        .collect();
    let ip = if requested.is_empty() {
        let size = 1u32 << (32 - SERVICE_CIDR_BITS);
        (FIRST_DYNAMIC_OFFSET..size - 1)
            .map(|off| std::net::Ipv4Addr::from(SERVICE_CIDR_BASE + off).to_string())
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| {
                ApiError::internal_error("failed to allocate a serviceIP: range is full")
            })?
    } else {
        let parsed: std::net::Ipv4Addr = requested.parse().map_err(|_| {
            invalid(format!(
                "spec.clusterIPs[0]: Invalid value: \"{requested}\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
            ))
        })?;
        if !in_service_cidr(parsed) {
            return Err(invalid(format!(
                "spec.clusterIPs: Invalid value: []string{{\"{requested}\"}}: failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
            )));
        }
        if used.contains(&requested) {
            return Err(invalid(format!(
                "spec.clusterIPs: Invalid value: []string{{\"{requested}\"}}: failed to allocate IP {requested}: provided IP is already allocated"
            )));
        }
        requested
    };
    obj["spec"]["clusterIP"] = json!(ip);
    obj["spec"]["clusterIPs"] = json!([ip]);
    Ok(())
}

/// On update the allocated address is kept: an omitted `clusterIP`/`clusterIPs` is filled in
/// from the stored object (as the registry's defaulting does), a different one is refused.
fn keep_cluster_ip(old: &Value, new: &mut Value, name: &str) -> Result<(), ApiError> {
    let old_ip = cluster_ip_of(old).to_string();
    if old_ip.is_empty() {
        return Ok(());
    }
    if new.get("spec").is_none_or(|s| !s.is_object()) {
        new["spec"] = json!({});
    }
    let new_ip = cluster_ip_of(new).to_string();
    if new_ip.is_empty() {
        new["spec"]["clusterIP"] = json!(old_ip);
    } else if new_ip != old_ip {
        return Err(ApiError::invalid(
            "Service",
            name,
            format!("spec.clusterIPs[0]: Invalid value: []string{{\"{new_ip}\"}}: may not change once set"),
        ));
    }
    let ips_missing = new["spec"]
        .get("clusterIPs")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty());
    if ips_missing {
        new["spec"]["clusterIPs"] = old["spec"]
            .get("clusterIPs")
            .cloned()
            .unwrap_or_else(|| json!([old_ip]));
    }
    Ok(())
}

/// A body whose `kind`/`apiVersion` are set must name this resource (either API version of a
/// shared type is accepted, as conversion would on a real server).
fn check_type(res: &Resource, obj: &Value) -> Result<(), ApiError> {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let group_of = |av: &str| {
        av.rsplit_once('/')
            .map(|(g, _)| g.to_string())
            .unwrap_or_default()
    };
    if (!kind.is_empty() && kind != res.kind)
        || (!api_version.is_empty() && group_of(api_version) != res.group)
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({}) or kind ({kind}) does not match {}",
            res.api_version(),
            res.kind
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(plural: &str) -> &'static Resource {
        resources::RESOURCES
            .iter()
            .find(|r| r.plural == plural)
            .unwrap()
    }

    #[test]
    fn writes_since_gives_each_write_of_one_kind_with_when_it_was_stored() {
        let s = Store::new();
        let since = s.revision();
        let before = Instant::now();
        s.create(
            res("configmaps"),
            "default",
            json!({"metadata": {"name": "a"}}),
        )
        .unwrap();
        s.create(
            res("secrets"),
            "default",
            json!({"metadata": {"name": "b"}}),
        )
        .unwrap();
        s.modify(res("configmaps"), "default", "a", |cur| {
            let mut out = cur.clone();
            out["data"] = json!({"k": "v"});
            Ok(out)
        })
        .unwrap();
        let after = Instant::now();
        let writes = s
            .writes_since(res("configmaps"), Some("default"), since)
            .unwrap();
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert!(before <= writes[0].0 && writes[0].0 <= writes[1].0 && writes[1].0 <= after);
        assert_eq!(writes[0].1["kind"], "ConfigMap");
        assert_eq!(writes[1].1["data"]["k"], "v");
        assert!(s
            .writes_since(res("configmaps"), Some("kube-system"), since)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn create_assigns_server_metadata_and_refuses_duplicates() {
        let s = Store::new();
        let cm = s
            .create(
                res("configmaps"),
                "default",
                json!({"metadata": {"name": "a"}}),
            )
            .unwrap();
        assert_eq!(cm["kind"], "ConfigMap");
        assert_eq!(cm["metadata"]["namespace"], "default");
        assert!(cm["metadata"]["uid"].as_str().unwrap().len() == 36);
        assert!(cm["metadata"].get("generation").is_none());
        let err = s
            .create(
                res("configmaps"),
                "default",
                json!({"metadata": {"name": "a"}}),
            )
            .unwrap_err();
        assert_eq!(err.reason, "AlreadyExists");
        let err = s
            .create(
                res("configmaps"),
                "nope",
                json!({"metadata": {"name": "a"}}),
            )
            .unwrap_err();
        assert_eq!(err.message, "namespaces \"nope\" not found");
        let gen = s
            .create(
                res("configmaps"),
                "default",
                json!({"metadata": {"generateName": "x-"}}),
            )
            .unwrap();
        assert!(gen["metadata"]["name"].as_str().unwrap().starts_with("x-"));
        assert_eq!(gen["metadata"]["name"].as_str().unwrap().len(), 7);
        let bad = s
            .create(
                res("configmaps"),
                "default",
                json!({"metadata": {"name": "Bad_Name"}}),
            )
            .unwrap_err();
        assert_eq!(bad.code, 422);
    }

    #[test]
    fn update_conflicts_on_stale_version_and_counts_generation() {
        let s = Store::new();
        let d = res("deployments");
        let created = s
            .create(
                d,
                "default",
                json!({"metadata": {"name": "w"}, "spec": {"replicas": 1}}),
            )
            .unwrap();
        let rv1 = created["metadata"]["resourceVersion"].clone();
        let mut changed = created.clone();
        changed["spec"]["replicas"] = json!(2);
        let updated = s.update(d, "default", "w", changed.clone()).unwrap();
        assert_eq!(updated["metadata"]["generation"], 2);
        assert_ne!(updated["metadata"]["resourceVersion"], rv1);
        assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
        // Stale resourceVersion: conflict.
        let err = s.update(d, "default", "w", changed).unwrap_err();
        assert_eq!(err.reason, "Conflict");
        // Label-only change: new resourceVersion, same generation.
        let mut relabelled = updated.clone();
        relabelled["metadata"]["labels"] = json!({"a": "b"});
        let r = s.update(d, "default", "w", relabelled).unwrap();
        assert_eq!(r["metadata"]["generation"], 2);
        // No-op: same resourceVersion.
        let again = s.update(d, "default", "w", r.clone()).unwrap();
        assert_eq!(
            again["metadata"]["resourceVersion"],
            r["metadata"]["resourceVersion"]
        );
    }

    #[test]
    fn owner_index_follows_writes_and_deletes() {
        let s = Store::new();
        let cm = res("configmaps");
        let owner =
            |uid: &str| json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": uid}]);
        s.create(
            cm,
            "default",
            json!({"metadata": {"name": "a", "ownerReferences": owner("u1")}}),
        )
        .unwrap();
        s.create(
            cm,
            "kube-system",
            json!({"metadata": {"name": "b", "ownerReferences": owner("u1")}}),
        )
        .unwrap();
        let names = |ns: &str, uid: &str| -> Vec<String> {
            s.owned_by(cm, ns, uid)
                .iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names("default", "u1"), ["a"]);
        assert_eq!(names("kube-system", "u1"), ["b"]);
        assert!(s.owned_by(res("secrets"), "default", "u1").is_empty());
        s.modify(cm, "default", "a", |cur| {
            let mut out = cur.clone();
            out["metadata"]["ownerReferences"] = owner("u2");
            Ok(out)
        })
        .unwrap();
        assert!(names("default", "u1").is_empty());
        assert_eq!(names("default", "u2"), ["a"]);
        s.delete(cm, "default", "a", &Preconditions::default())
            .unwrap();
        assert!(names("default", "u2").is_empty());
        let rev = s.revision();
        s.create(cm, "default", json!({"metadata": {"name": "c"}}))
            .unwrap();
        s.create(
            res("secrets"),
            "default",
            json!({"metadata": {"name": "d"}}),
        )
        .unwrap();
        let (changes, now) = s.changes_since(&[res("secrets")], rev).unwrap();
        assert_eq!(now, rev + 2);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].2["metadata"]["name"], "d");
    }

    #[test]
    fn namespace_delete_cascades_and_versions_share_storage() {
        let s = Store::new();
        s.create(res("namespaces"), "", json!({"metadata": {"name": "demo"}}))
            .unwrap();
        let v1a3 = resources::find("networking.istio.io", "v1alpha3", "virtualservices").unwrap();
        let v1b1 = resources::find("networking.istio.io", "v1beta1", "virtualservices").unwrap();
        s.create(v1a3, "demo", json!({"metadata": {"name": "vs"}}))
            .unwrap();
        assert_eq!(
            s.get(v1b1, "demo", "vs").unwrap()["apiVersion"],
            "networking.istio.io/v1beta1"
        );
        let gone = s
            .delete(res("namespaces"), "", "demo", &Preconditions::default())
            .unwrap();
        assert_eq!(gone["status"]["phase"], "Terminating");
        assert_eq!(s.get(v1a3, "demo", "vs").unwrap_err().code, 404);
        let (all, _) = s
            .list(
                v1a3,
                None,
                &LabelSelector::default(),
                &FieldSelector::default(),
            )
            .unwrap();
        assert!(all.is_empty());
    }
}
