//! The Endpoints and EndpointSlice controllers: every Service with a selector gets an
//! `Endpoints` object of its name and an `EndpointSlice` (`discovery.k8s.io/v1`, labelled
//! `kubernetes.io/service-name`, owned by the Service) listing the pods it selects that have
//! an IP and have not terminated: ready ones as ready addresses, the others as not ready.
//!
//! Ports are the Service's, with `targetPort` resolved against the pods' named container
//! ports (a number, or the Service port when unset). When a Service goes, its EndpointSlice
//! goes with it (owner reference) and its Endpoints are deleted here, as the real endpoints
//! controller does. Services without a selector are left alone: their Endpoints belong to
//! whoever wrote them.
//!
//! Simplifications: one slice per Service (no 100-endpoint split), IPv4 only,
//! `publishNotReadyAddresses` and topology hints ignored.

use serde_json::{json, Map, Value};

use super::kubelet::is_ready;
use super::*;

/// Label naming the Service an EndpointSlice belongs to.
pub(super) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label the real EndpointSlice controller marks its slices with.
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// The Service's selector, if it has a non-empty one.
fn selector(svc: &Value) -> Option<&Map<String, Value>> {
    svc.pointer("/spec/selector")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
}

/// Whether pod `p` carries every label of `selector`.
fn selects(selector: &Map<String, Value>, p: &Value) -> bool {
    let labels = crate::store::labels(p);
    selector
        .iter()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
}

/// The container port named `name` in `p`.
fn named_port(p: &Value, name: &str) -> Option<i64> {
    p.pointer("/spec/containers")?
        .as_array()?
        .iter()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .find(|port| port["name"] == name)
        .and_then(|port| port["containerPort"].as_i64())
}

/// The Service's ports as endpoints carry them: `targetPort` resolved (against `pod` for a
/// named one), the protocol defaulted to TCP.
fn ports(svc: &Value, pod: Option<&Value>) -> Vec<Value> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = match &p["targetPort"] {
                Value::Number(n) => n.as_i64()?,
                Value::String(name) => match name.parse::<i64>() {
                    Ok(n) => n,
                    Err(_) => named_port(pod?, name)?,
                },
                _ => p["port"].as_i64()?,
            };
            let mut out =
                json!({"port": port, "protocol": p["protocol"].as_str().unwrap_or("TCP")});
            if let Some(name) = p["name"].as_str().filter(|n| !n.is_empty()) {
                out["name"] = json!(name);
            }
            Some(out)
        })
        .collect()
}

fn target_ref(p: &Value) -> Value {
    json!({
        "kind": "Pod",
        "namespace": s(p, "/metadata/namespace"),
        "name": s(p, "/metadata/name"),
        "uid": uid(p),
    })
}

/// Labels an object derived from `svc` carries: the Service's own, plus `extra`.
fn derived_labels(svc: &Value, extra: &[(&str, &str)]) -> Value {
    let mut labels = svc["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    for (k, v) in extra {
        labels[*k] = json!(v);
    }
    labels
}

impl Controller {
    /// Brings the endpoints of every Service in `ns` in line with the pods there.
    pub(super) fn sync_endpoints_in(&self, store: &Store, ns: &str) {
        let (service, pod) = (res("", "services"), res("", "pods"));
        let all = LabelSelector::default();
        let none = FieldSelector::default();
        let Ok((services, _)) = store.list(service, Some(ns), &all, &none) else {
            return;
        };
        if !services.iter().any(|svc| selector(svc).is_some()) {
            return;
        }
        let pods = store
            .list(pod, Some(ns), &all, &none)
            .map(|(items, _)| items)
            .unwrap_or_default();
        for svc in &services {
            self.sync_endpoints(store, svc, &pods);
        }
    }

    /// Writes the Endpoints and EndpointSlice of one Service from `pods` (its namespace's).
    fn sync_endpoints(&self, store: &Store, svc: &Value, pods: &[Value]) {
        let Some(selector) = selector(svc) else {
            return;
        };
        if s(svc, "/spec/type") == "ExternalName" {
            return;
        }
        let (ns, name) = object_name(svc);
        let members: Vec<&Value> = pods
            .iter()
            .filter(|p| selects(selector, p))
            .filter(|p| !s(p, "/status/podIP").is_empty())
            .filter(|p| !matches!(s(p, "/status/phase"), "Succeeded" | "Failed"))
            .collect();
        let address = |p: &Value| {
            let mut a = json!({"ip": s(p, "/status/podIP"), "targetRef": target_ref(p)});
            if let Some(node) = p.pointer("/spec/nodeName").and_then(Value::as_str) {
                a["nodeName"] = json!(node);
            }
            a
        };
        let ready: Vec<Value> = members
            .iter()
            .filter(|p| is_ready(p))
            .map(|p| address(p))
            .collect();
        let not_ready: Vec<Value> = members
            .iter()
            .filter(|p| !is_ready(p))
            .map(|p| address(p))
            .collect();
        let endpoint_ports = ports(svc, members.first().copied());
        let mut subset = json!({"ports": endpoint_ports});
        if !ready.is_empty() {
            subset["addresses"] = json!(ready);
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = json!(not_ready);
        }
        // No members: no subsets at all (the real controller writes none, not an empty list).
        let subsets = (!members.is_empty()).then(|| json!([subset]));
        let endpoints = res("", "endpoints");
        let labels = derived_labels(svc, &[]);
        let with_subsets = |mut obj: Value| {
            match &subsets {
                Some(subsets) => obj["subsets"] = subsets.clone(),
                None => {
                    if let Some(o) = obj.as_object_mut() {
                        o.remove("subsets");
                    }
                }
            }
            obj
        };
        match store.get(endpoints, &ns, &name) {
            Ok(_) => {
                let _ = store.modify(endpoints, &ns, &name, |cur| {
                    let mut out = with_subsets(cur.clone());
                    out["metadata"]["labels"] = labels;
                    Ok(out)
                });
            }
            Err(_) => {
                let body = with_subsets(json!({"metadata": {"name": name, "labels": labels}}));
                if let Err(e) = store.create(endpoints, &ns, body) {
                    tracing::warn!(error = %e.message, "creating Endpoints {ns}/{name}");
                }
            }
        }
        let slice_endpoints: Vec<Value> = members
            .iter()
            .map(|p| {
                let ready = is_ready(p);
                let mut e = json!({
                    "addresses": [s(p, "/status/podIP")],
                    "conditions": {"ready": ready, "serving": ready, "terminating": false},
                    "targetRef": target_ref(p),
                });
                if let Some(node) = p.pointer("/spec/nodeName").and_then(Value::as_str) {
                    e["nodeName"] = json!(node);
                }
                e
            })
            .collect();
        let slices = res("discovery.k8s.io", "endpointslices");
        let labels = derived_labels(
            svc,
            &[(SERVICE_NAME_LABEL, &name), (MANAGED_BY_LABEL, MANAGED_BY)],
        );
        let owned_slices = owned(store, slices, svc, "Service");
        match owned_slices.first() {
            Some(slice) => {
                let _ = store.modify(slices, &ns, s(slice, "/metadata/name"), |cur| {
                    let mut out = cur.clone();
                    out["metadata"]["labels"] = labels;
                    out["endpoints"] = json!(slice_endpoints);
                    out["ports"] = json!(endpoint_ports);
                    Ok(out)
                });
            }
            None => {
                let body = json!({
                    "metadata": {
                        "generateName": format!("{name}-"),
                        "labels": labels,
                        "ownerReferences": owner_ref(svc, "v1", "Service"),
                    },
                    "addressType": "IPv4",
                    "endpoints": slice_endpoints,
                    "ports": endpoint_ports,
                });
                match store.create(slices, &ns, body) {
                    Ok(created) => {
                        // The Service may have been deleted since it was read: its delete
                        // collected the slices it owned then, not this one. Remove it as
                        // the garbage collector would (an owner that no longer exists).
                        let owner_alive = store
                            .get(res("", "services"), &ns, &name)
                            .is_ok_and(|cur| uid(&cur) == uid(svc));
                        if !owner_alive {
                            let pre = Preconditions {
                                uid: Some(uid(&created).to_string()),
                                ..Preconditions::default()
                            };
                            let _ = store.delete(slices, &ns, s(&created, "/metadata/name"), &pre);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.message, "creating the EndpointSlice of {ns}/{name}");
                    }
                }
            }
        }
    }

    /// Deletes the Endpoints a deleted selector Service had (its slice goes with the
    /// Service's owner reference).
    pub(super) fn drop_endpoints(&self, store: &Store, svc: &Value) {
        if selector(svc).is_none() {
            return;
        }
        let (ns, name) = object_name(svc);
        let endpoints = res("", "endpoints");
        let Ok(current) = store.get(endpoints, &ns, &name) else {
            return;
        };
        // A Service of the same name created meanwhile keeps them.
        if store.get(res("", "services"), &ns, &name).is_ok() {
            return;
        }
        let pre = Preconditions {
            uid: Some(uid(&current).to_string()),
            ..Preconditions::default()
        };
        let _ = store.delete(endpoints, &ns, &name, &pre);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_ports_resolve_by_number_name_or_the_service_port() {
        let svc = json!({"spec": {"ports": [
            {"name": "http", "port": 80, "targetPort": "web"},
            {"port": 443, "targetPort": 8443, "protocol": "TCP"},
            {"name": "metrics", "port": 9090},
        ]}});
        let pod =
            json!({"spec": {"containers": [{"ports": [{"name": "web", "containerPort": 8080}]}]}});
        assert_eq!(
            ports(&svc, Some(&pod)),
            vec![
                json!({"name": "http", "port": 8080, "protocol": "TCP"}),
                json!({"port": 8443, "protocol": "TCP"}),
                json!({"name": "metrics", "port": 9090, "protocol": "TCP"}),
            ]
        );
        // Without a pod to resolve it, a named target port is left out.
        assert_eq!(ports(&svc, None).len(), 2);
    }
}
