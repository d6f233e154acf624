//! Table answers: `Accept: application/json;as=Table;g=meta.k8s.io;v=v1`, what `kubectl get`
//! asks for when it prints columns. The real server renders each kind with its printer
//! (`NAME READY STATUS RESTARTS AGE` for pods, ...) and custom resources with their CRD's
//! `additionalPrinterColumns`; kubectl prints the cells as they come, so these follow the
//! real printers' column names, order, priorities (`-o wide` shows priority 1) and cell
//! wording for the kinds kube-sim serves. Kinds without a printer here get `NAME AGE`, as on
//! the real server.
//!
//! Each row carries the object as `includeObject` asks: `PartialObjectMetadata` by default,
//! the whole object with `Object`, nothing with `None`.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::resources::{self, Resource};
use crate::store::Store;

/// How a cell is computed.
#[derive(Clone)]
enum Source {
    /// A built-in printer's function of the object.
    Builtin(fn(&Value) -> Value),
    /// A CRD printer column's JSONPath.
    Path(String),
    /// Time since `metadata.creationTimestamp`, as kubectl words durations.
    Age,
}

#[derive(Clone)]
struct Column {
    name: String,
    kind: &'static str,
    format: &'static str,
    priority: u8,
    description: String,
    source: Source,
}

/// `includeObject` of a Table request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Include {
    None,
    #[default]
    Metadata,
    Object,
}

impl Include {
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// Renders objects of one resource as Table rows.
#[derive(Clone)]
pub struct Printer {
    columns: Vec<Column>,
    include: Include,
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn none_if_empty(x: String) -> Value {
    json!(if x.is_empty() {
        "<none>".to_string()
    } else {
        x
    })
}

fn strings(v: &Value, ptr: &str) -> Vec<String> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `k=v,k2=v2` of a string map (sorted, as Go prints maps), or `<none>`.
fn map_string(v: &Value, ptr: &str) -> Value {
    let parts: Vec<String> = v
        .pointer(ptr)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    none_if_empty(parts.join(","))
}

/// kubectl's `HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    match secs {
        s if s < -1 => "<invalid>".into(),
        s if s < 0 => "0s".into(),
        s if s < 120 => format!("{s}s"),
        _ if m < 10 => match secs % 60 {
            0 => format!("{m}m"),
            rest => format!("{m}m{rest}s"),
        },
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 => match m % 60 {
            0 => format!("{h}h"),
            rest => format!("{h}h{rest}m"),
        },
        _ if h < 48 => format!("{h}h"),
        _ if h < 192 => match h % 24 {
            0 => format!("{d}d"),
            rest => format!("{d}d{rest}h"),
        },
        _ if d < 730 => format!("{d}d"),
        _ if d < 2920 => match d % 365 {
            0 => format!("{}y", d / 365),
            rest => format!("{}y{rest}d", d / 365),
        },
        _ => format!("{}y", d / 365),
    }
}

fn age_of(obj: &Value, field: &str) -> Value {
    let ptr = format!("/metadata/{field}");
    match DateTime::parse_from_rfc3339(s(obj, &ptr)) {
        Ok(t) => json!(human_duration(
            (Utc::now() - t.with_timezone(&Utc)).num_seconds()
        )),
        Err(_) => json!("<unknown>"),
    }
}

fn pod_status(p: &Value) -> Value {
    let mut reason = s(p, "/status/phase").to_string();
    if let Some(r) = p.pointer("/status/reason").and_then(Value::as_str) {
        reason = r.to_string();
    }
    for c in p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(w) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
            reason = w.to_string();
        } else if let Some(t) = c
            .pointer("/state/terminated/reason")
            .and_then(Value::as_str)
        {
            reason = t.to_string();
        }
    }
    json!(if reason.is_empty() {
        "Unknown".into()
    } else {
        reason
    })
}

fn pod_ready(p: &Value) -> Value {
    let statuses = p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    let total = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses.map_or(0, |cs| cs.iter().filter(|c| c["ready"] == true).count());
    json!(format!("{ready}/{total}"))
}

fn service_external_ip(svc: &Value) -> Value {
    match s(svc, "/spec/type") {
        "ExternalName" => json!(s(svc, "/spec/externalName")),
        "LoadBalancer" => {
            let ips: Vec<String> = svc
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                .map(str::to_string)
                .chain(strings(svc, "/spec/externalIPs"))
                .collect();
            json!(if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            })
        }
        _ => none_if_empty(strings(svc, "/spec/externalIPs").join(",")),
    }
}

fn service_ports(svc: &Value) -> Value {
    let ports: Vec<String> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(n) => format!("{}:{n}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    none_if_empty(ports.join(","))
}

fn endpoints_list(ep: &Value) -> Value {
    let mut out = Vec::new();
    for subset in ep["subsets"].as_array().into_iter().flatten() {
        let ports: Vec<i64> = subset["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_i64())
            .collect();
        for a in subset["addresses"].as_array().into_iter().flatten() {
            let ip = a["ip"].as_str().unwrap_or_default();
            if ports.is_empty() {
                out.push(ip.to_string());
            }
            out.extend(ports.iter().map(|p| format!("{ip}:{p}")));
        }
    }
    let shown = if out.len() > 3 {
        format!("{} + {} more...", out[..3].join(","), out.len() - 3)
    } else {
        out.join(",")
    };
    none_if_empty(shown)
}

fn job_status(job: &Value) -> Value {
    let conditions = job["status"]["conditions"].as_array();
    let has = |t: &str| {
        conditions.is_some_and(|cs| cs.iter().any(|c| c["type"] == t && c["status"] == "True"))
    };
    json!(if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if job["spec"]["suspend"] == true {
        "Suspended"
    } else {
        "Running"
    })
}

fn job_duration(job: &Value) -> Value {
    let start = DateTime::parse_from_rfc3339(s(job, "/status/startTime"));
    let end = DateTime::parse_from_rfc3339(s(job, "/status/completionTime"))
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc::now());
    match start {
        Ok(t) => json!(human_duration((end - t.with_timezone(&Utc)).num_seconds())),
        Err(_) => json!(""),
    }
}

fn hpa_targets(hpa: &Value) -> Value {
    let metrics = hpa["spec"]["metrics"].as_array();
    let current = hpa["status"]["currentMetrics"].as_array();
    let shown: Vec<String> = metrics
        .into_iter()
        .flatten()
        .map(|m| {
            let name = m["resource"]["name"].as_str().unwrap_or("metric");
            let target = &m["resource"]["target"];
            let now = current
                .into_iter()
                .flatten()
                .find(|c| c["resource"]["name"] == name)
                .map(|c| &c["resource"]["current"]);
            match target["averageUtilization"].as_i64() {
                Some(t) => {
                    let cur = now
                        .and_then(|c| c["averageUtilization"].as_i64())
                        .map_or("<unknown>".into(), |c| format!("{c}%"));
                    format!("{name}: {cur}/{t}%")
                }
                None => {
                    let t = target["averageValue"].as_str().unwrap_or("?");
                    let cur = now
                        .and_then(|c| c["averageValue"].as_str())
                        .unwrap_or("<unknown>");
                    format!("{name}: {cur}/{t}")
                }
            }
        })
        .collect();
    none_if_empty(shown.join(", "))
}

fn ingress_hosts(ing: &Value) -> Value {
    let hosts: Vec<String> = ing["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["host"].as_str().unwrap_or("*").to_string())
        .collect();
    json!(if hosts.is_empty() {
        "*".to_string()
    } else {
        hosts.join(",")
    })
}

fn int_or_string(v: &Value, ptr: &str) -> Value {
    match v.pointer(ptr) {
        Some(Value::Number(n)) => json!(n.to_string()),
        Some(Value::String(x)) => json!(x),
        _ => json!("N/A"),
    }
}

/// `(name, type, priority, cell)` of each column of a built-in kind's printer, after NAME.
#[allow(clippy::type_complexity)]
fn builtin(kind: &str) -> Option<Vec<(&'static str, &'static str, u8, fn(&Value) -> Value)>> {
    Some(match kind {
        "Pod" => vec![
            ("Ready", "string", 0, pod_ready),
            ("Status", "string", 0, pod_status),
            ("Restarts", "string", 0, |_| json!("0")),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
            ("IP", "string", 1, |o| {
                none_if_empty(s(o, "/status/podIP").into())
            }),
            ("Node", "string", 1, |o| {
                none_if_empty(s(o, "/spec/nodeName").into())
            }),
            ("Nominated Node", "string", 1, |_| json!("<none>")),
            ("Readiness Gates", "string", 1, |_| json!("<none>")),
        ],
        "Deployment" => vec![
            ("Ready", "string", 0, |o| {
                json!(format!(
                    "{}/{}",
                    i(o, "/status/readyReplicas"),
                    i(o, "/spec/replicas")
                ))
            }),
            ("Up-to-date", "integer", 0, |o| {
                json!(i(o, "/status/updatedReplicas"))
            }),
            ("Available", "integer", 0, |o| {
                json!(i(o, "/status/availableReplicas"))
            }),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "ReplicaSet" => vec![
            ("Desired", "integer", 0, |o| json!(i(o, "/spec/replicas"))),
            ("Current", "integer", 0, |o| json!(i(o, "/status/replicas"))),
            ("Ready", "integer", 0, |o| {
                json!(i(o, "/status/readyReplicas"))
            }),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "StatefulSet" => vec![
            ("Ready", "string", 0, |o| {
                json!(format!(
                    "{}/{}",
                    i(o, "/status/readyReplicas"),
                    i(o, "/spec/replicas")
                ))
            }),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "DaemonSet" => vec![
            ("Desired", "integer", 0, |o| {
                json!(i(o, "/status/desiredNumberScheduled"))
            }),
            ("Current", "integer", 0, |o| {
                json!(i(o, "/status/currentNumberScheduled"))
            }),
            ("Ready", "integer", 0, |o| {
                json!(i(o, "/status/numberReady"))
            }),
            ("Up-to-date", "integer", 0, |o| {
                json!(i(o, "/status/updatedNumberScheduled"))
            }),
            ("Available", "integer", 0, |o| {
                json!(i(o, "/status/numberAvailable"))
            }),
            ("Node Selector", "string", 0, |o| {
                map_string(o, "/spec/template/spec/nodeSelector")
            }),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "Job" => vec![
            ("Status", "string", 0, job_status),
            ("Completions", "string", 0, |o| {
                let want = o["spec"]["completions"]
                    .as_i64()
                    .map_or("1".to_string(), |c| c.to_string());
                json!(format!("{}/{want}", i(o, "/status/succeeded")))
            }),
            ("Duration", "string", 0, job_duration),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "CronJob" => vec![
            ("Schedule", "string", 0, |o| json!(s(o, "/spec/schedule"))),
            ("Timezone", "string", 0, |o| {
                none_if_empty(s(o, "/spec/timeZone").into())
            }),
            ("Suspend", "boolean", 0, |o| {
                json!(o["spec"]["suspend"] == true)
            }),
            ("Active", "integer", 0, |o| {
                json!(o["status"]["active"].as_array().map_or(0, Vec::len))
            }),
            ("Last Schedule", "string", 0, |_| json!("<none>")),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "Service" => vec![
            ("Type", "string", 0, |o| {
                json!(o["spec"]["type"].as_str().unwrap_or("ClusterIP"))
            }),
            ("Cluster-IP", "string", 0, |o| {
                none_if_empty(s(o, "/spec/clusterIP").into())
            }),
            ("External-IP", "string", 0, service_external_ip),
            ("Port(s)", "string", 0, service_ports),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
            ("Selector", "string", 1, |o| map_string(o, "/spec/selector")),
        ],
        "Endpoints" => vec![
            ("Endpoints", "string", 0, endpoints_list),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "EndpointSlice" => vec![
            ("AddressType", "string", 0, |o| json!(s(o, "/addressType"))),
            ("Ports", "string", 0, |o| {
                let ports: Vec<String> = o["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["port"].as_i64().map(|p| p.to_string()))
                    .collect();
                none_if_empty(ports.join(","))
            }),
            ("Endpoints", "string", 0, |o| {
                let ips: Vec<String> = o["endpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|e| strings(e, "/addresses"))
                    .collect();
                none_if_empty(ips.join(","))
            }),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "ConfigMap" => vec![
            ("Data", "integer", 0, |o| {
                let n = o["data"].as_object().map_or(0, |m| m.len())
                    + o["binaryData"].as_object().map_or(0, |m| m.len());
                json!(n)
            }),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "Secret" => vec![
            ("Type", "string", 0, |o| {
                json!(o["type"].as_str().unwrap_or("Opaque"))
            }),
            ("Data", "integer", 0, |o| {
                json!(o["data"].as_object().map_or(0, |m| m.len()))
            }),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "ServiceAccount" => vec![
            ("Secrets", "string", 0, |o| {
                json!(o["secrets"].as_array().map_or(0, Vec::len))
            }),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "Namespace" => vec![
            ("Status", "string", 0, |o| json!(s(o, "/status/phase"))),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "Node" => vec![
            ("Status", "string", 0, |o| {
                let ready = o["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                json!(if ready { "Ready" } else { "NotReady" })
            }),
            ("Roles", "string", 0, |o| {
                let roles: Vec<String> = o["metadata"]["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
                    .map(str::to_string)
                    .collect();
                none_if_empty(roles.join(","))
            }),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
            ("Version", "string", 0, |o| {
                json!(s(o, "/status/nodeInfo/kubeletVersion"))
            }),
        ],
        "PersistentVolumeClaim" => vec![
            ("Status", "string", 0, |o| json!(s(o, "/status/phase"))),
            ("Volume", "string", 0, |o| json!(s(o, "/spec/volumeName"))),
            ("Capacity", "string", 0, |o| {
                json!(s(o, "/status/capacity/storage"))
            }),
            ("Access Modes", "string", 0, |o| {
                json!(access_modes(&o["status"]["accessModes"]))
            }),
            ("StorageClass", "string", 0, |o| {
                none_if_empty(s(o, "/spec/storageClassName").into())
            }),
            ("VolumeAttributesClass", "string", 0, |_| json!("<unset>")),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "PersistentVolume" => vec![
            ("Capacity", "string", 0, |o| {
                json!(s(o, "/spec/capacity/storage"))
            }),
            ("Access Modes", "string", 0, |o| {
                json!(access_modes(&o["spec"]["accessModes"]))
            }),
            ("Reclaim Policy", "string", 0, |o| {
                json!(s(o, "/spec/persistentVolumeReclaimPolicy"))
            }),
            ("Status", "string", 0, |o| json!(s(o, "/status/phase"))),
            ("Claim", "string", 0, |o| {
                let ns = s(o, "/spec/claimRef/namespace");
                let name = s(o, "/spec/claimRef/name");
                json!(if name.is_empty() {
                    String::new()
                } else {
                    format!("{ns}/{name}")
                })
            }),
            ("StorageClass", "string", 0, |o| {
                json!(s(o, "/spec/storageClassName"))
            }),
            ("VolumeAttributesClass", "string", 0, |_| json!("<unset>")),
            ("Reason", "string", 0, |o| json!(s(o, "/status/reason"))),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "StorageClass" => vec![
            ("Provisioner", "string", 0, |o| json!(s(o, "/provisioner"))),
            ("ReclaimPolicy", "string", 0, |o| {
                json!(s(o, "/reclaimPolicy"))
            }),
            ("VolumeBindingMode", "string", 0, |o| {
                json!(s(o, "/volumeBindingMode"))
            }),
            ("AllowVolumeExpansion", "string", 0, |o| {
                json!(o["allowVolumeExpansion"] == true)
            }),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "HorizontalPodAutoscaler" => vec![
            ("Reference", "string", 0, |o| {
                json!(format!(
                    "{}/{}",
                    s(o, "/spec/scaleTargetRef/kind"),
                    s(o, "/spec/scaleTargetRef/name")
                ))
            }),
            ("Targets", "string", 0, hpa_targets),
            ("MinPods", "string", 0, |o| {
                json!(o["spec"]["minReplicas"].as_i64().unwrap_or(1).to_string())
            }),
            ("MaxPods", "integer", 0, |o| {
                json!(i(o, "/spec/maxReplicas"))
            }),
            ("Replicas", "integer", 0, |o| {
                json!(i(o, "/status/currentReplicas"))
            }),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "Ingress" => vec![
            ("Class", "string", 0, |o| {
                none_if_empty(s(o, "/spec/ingressClassName").into())
            }),
            ("Hosts", "string", 0, ingress_hosts),
            ("Address", "string", 0, |o| {
                let ips: Vec<String> = o
                    .pointer("/status/loadBalancer/ingress")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                    .map(str::to_string)
                    .collect();
                json!(ips.join(","))
            }),
            ("Ports", "string", 0, |o| {
                json!(
                    if o["spec"]["tls"].as_array().is_some_and(|t| !t.is_empty()) {
                        "80, 443"
                    } else {
                        "80"
                    }
                )
            }),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "PodDisruptionBudget" => vec![
            ("Min Available", "string", 0, |o| {
                int_or_string(o, "/spec/minAvailable")
            }),
            ("Max Unavailable", "string", 0, |o| {
                int_or_string(o, "/spec/maxUnavailable")
            }),
            ("Allowed Disruptions", "integer", 0, |o| {
                json!(i(o, "/status/disruptionsAllowed"))
            }),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "NetworkPolicy" => vec![
            ("Pod-Selector", "string", 0, |o| {
                match map_string(o, "/spec/podSelector/matchLabels") {
                    v if v == "<none>" => json!("<none>"),
                    v => v,
                }
            }),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "Role" | "ClusterRole" => vec![("Created At", "string", 0, |o| {
            json!(s(o, "/metadata/creationTimestamp"))
        })],
        "RoleBinding" | "ClusterRoleBinding" => vec![
            ("Role", "string", 0, |o| {
                json!(format!(
                    "{}/{}",
                    s(o, "/roleRef/kind"),
                    s(o, "/roleRef/name")
                ))
            }),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "Lease" => vec![
            ("Holder", "string", 0, |o| {
                json!(s(o, "/spec/holderIdentity"))
            }),
            ("Age", "string", 0, |o| age_of(o, "creationTimestamp")),
        ],
        "CustomResourceDefinition" => vec![("Created At", "date", 0, |o| {
            json!(s(o, "/metadata/creationTimestamp"))
        })],
        _ => return None,
    })
}

fn access_modes(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Evaluates the JSONPath subset CRD printer columns use: `.a.b`, `[n]`, `[*]` and
/// `[?(@.k=="v")]`; several matches are joined with `,` as kubectl's printer does.
fn json_path(obj: &Value, path: &str) -> Value {
    let mut current: Vec<&Value> = vec![obj];
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            current = current.into_iter().filter_map(|v| v.get(key)).collect();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { break };
            // A filter's own closing bracket comes after its expression's ')'.
            let (inner, after) = if r.starts_with("?(") {
                match r.find(")]") {
                    Some(e) => (&r[..e + 1], &r[e + 2..]),
                    None => break,
                }
            } else {
                (&r[..end], &r[end + 1..])
            };
            current = match inner {
                "*" => current
                    .into_iter()
                    .flat_map(|v| v.as_array().into_iter().flatten())
                    .collect(),
                f if f.starts_with("?(@.") => {
                    let expr = f.trim_start_matches("?(@.").trim_end_matches(')');
                    let (key, want) = expr.split_once("==").unwrap_or((expr, ""));
                    let want = want.trim().trim_matches('"').trim_matches('\'');
                    let key = key.trim();
                    current
                        .into_iter()
                        .flat_map(|v| v.as_array().into_iter().flatten())
                        .filter(|x| x.get(key).and_then(Value::as_str) == Some(want))
                        .collect()
                }
                n => match n.parse::<usize>() {
                    Ok(n) => current.into_iter().filter_map(|v| v.get(n)).collect(),
                    Err(_) => Vec::new(),
                },
            };
            rest = after;
        } else {
            break;
        }
    }
    match current.as_slice() {
        [] => Value::Null,
        [one] => (*one).clone(),
        many => json!(many
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(",")),
    }
}

fn column(name: &str, kind: &'static str, priority: u8, source: Source) -> Column {
    let (format, description) = match name {
        "Name" => (
            "name",
            "Name must be unique within a namespace. Cannot be updated.".to_string(),
        ),
        _ => ("", name.to_string()),
    };
    Column {
        name: name.to_string(),
        kind,
        format,
        priority,
        description,
        source,
    }
}

impl Printer {
    /// The printer for `res`: its built-in columns, or (for a custom resource) its CRD's
    /// printer columns, or `NAME AGE`.
    pub fn new(store: &Store, res: &Resource, include: Include) -> Self {
        let name = if res.kind == "StorageClass" {
            // The default class is marked in its name cell.
            Source::Builtin(|o| {
                let name = s(o, "/metadata/name");
                let default = o
                    .pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class")
                    == Some(&json!("true"));
                json!(if default {
                    format!("{name} (default)")
                } else {
                    name.to_string()
                })
            })
        } else {
            Source::Path(".metadata.name".into())
        };
        let mut columns = vec![column("Name", "string", 0, name)];
        if let Some(cols) = res.builtin.then(|| builtin(res.kind)).flatten() {
            for (name, kind, priority, f) in cols {
                let source = if name == "Age" {
                    Source::Age
                } else {
                    Source::Builtin(f)
                };
                columns.push(column(name, kind, priority, source));
            }
        } else {
            let printer_columns = crd_columns(store, res);
            if printer_columns.is_empty() {
                columns.push(column("Age", "date", 0, Source::Age));
            }
            columns.extend(printer_columns);
        }
        Self { columns, include }
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        self.columns
            .iter()
            .map(|c| match &c.source {
                Source::Builtin(f) => f(obj),
                Source::Path(p) => json_path(obj, p),
                Source::Age => age_of(obj, "creationTimestamp"),
            })
            .collect()
    }

    fn row(&self, obj: &Value) -> Value {
        let mut row = json!({"cells": self.cells(obj)});
        match self.include {
            Include::None => {}
            Include::Metadata => row["object"] = crate::metadata::object(obj),
            Include::Object => row["object"] = obj.clone(),
        }
        row
    }

    fn definitions(&self) -> Vec<Value> {
        self.columns
            .iter()
            .map(|c| {
                json!({"name": c.name, "type": c.kind, "format": c.format,
                       "description": c.description, "priority": c.priority})
            })
            .collect()
    }

    /// A Table of `objects` at list revision `resource_version`.
    pub fn table(&self, objects: &[Value], resource_version: &str) -> Value {
        json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": self.definitions(),
            "rows": objects.iter().map(|o| self.row(o)).collect::<Vec<_>>(),
        })
    }
}

/// The `additionalPrinterColumns` of the CRD version serving `res`.
fn crd_columns(store: &Store, res: &Resource) -> Vec<Column> {
    let crd_res = resources::find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .expect("CRDs in the table");
    let Ok(crd) = store.get(crd_res, "", &format!("{}.{}", res.plural, res.group)) else {
        return Vec::new();
    };
    let version = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == res.version)
        .cloned()
        .unwrap_or(Value::Null);
    version["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let name = c["name"].as_str()?;
            let path = c["jsonPath"].as_str()?;
            let kind = match c["type"].as_str() {
                Some("integer") => "integer",
                Some("number") => "number",
                Some("boolean") => "boolean",
                Some("date") => "date",
                _ => "string",
            };
            let priority = c["priority"].as_u64().unwrap_or(0).min(1) as u8;
            let source = if path == ".metadata.creationTimestamp" && kind == "date" {
                Source::Age
            } else {
                Source::Path(path.to_string())
            };
            Some(column(name, kind, priority, source))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_worded_as_kubectl_words_them() {
        for (secs, want) in [
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 120, "3h2m"),
            (30 * 3600, "30h"),
            (3 * 86_400 + 3600, "3d1h"),
            (40 * 86_400, "40d"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn json_path_subset_of_printer_columns() {
        let obj = json!({"spec": {"hosts": ["a", "b"]}, "status": {"conditions": [
            {"type": "Accepted", "status": "True"}, {"type": "Programmed", "status": "False"}]}});
        assert_eq!(json_path(&obj, ".spec.hosts"), json!(["a", "b"]));
        assert_eq!(json_path(&obj, ".spec.hosts[1]"), json!("b"));
        assert_eq!(json_path(&obj, ".spec.hosts[*]"), json!("a,b"));
        assert_eq!(
            json_path(
                &obj,
                r#".status.conditions[?(@.type=="Programmed")].status"#
            ),
            json!("False")
        );
        assert_eq!(json_path(&obj, ".spec.missing"), Value::Null);
    }

    #[test]
    fn pod_cells_show_readiness_and_the_waiting_reason() {
        let p = json!({"metadata": {"name": "web-0"}, "spec": {"containers": [{}, {}]},
            "status": {"phase": "Pending", "containerStatuses": [
                {"ready": true, "state": {"running": {}}},
                {"ready": false, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}});
        assert_eq!(pod_ready(&p), json!("1/2"));
        assert_eq!(pod_status(&p), json!("ImagePullBackOff"));
    }
}
