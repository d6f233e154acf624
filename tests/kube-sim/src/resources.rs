//! The table of resource types kube-sim serves.
//!
//! Everything the server knows about a type (its URL, whether it is namespaced, which verbs
//! discovery advertises, which field selectors it accepts) comes from this one table, so adding
//! a type is one entry and discovery can never disagree with the routes.

use serde_json::Value;

/// Verbs advertised for ordinary read/write resources, in the order the real server lists them.
const RW: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Namespaces cannot be deleted as a collection.
const NS_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// Field selectors every type supports.
const META_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// One served resource type in one API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// API group; `""` is the legacy core group served under `/api`.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Lower-case plural used in URLs.
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Built-in (compiled into clients' schemes) rather than custom: decides whether strategic
    /// merge patch is accepted — the real server answers 415 for custom resources.
    pub builtin: bool,
    /// Whether `metadata.generation` is maintained (types with a `spec` the controllers track).
    pub generation: bool,
    /// Field selectors beyond `metadata.name` / `metadata.namespace`.
    pub extra_fields: &'static [&'static str],
    /// Subresources served (`status`, `scale`). A type with `status` keeps its stored status
    /// on writes to the main resource, as the real registry strategies do.
    pub subresources: &'static [&'static str],
}

impl Resource {
    /// `group/version`, or just `version` for the core group — the `apiVersion` of objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Storage identity: versions of one group/plural share objects (like etcd storage does
    /// for Istio's v1alpha3 and v1beta1), so the key ignores the version.
    pub fn storage_key(&self) -> (&'static str, &'static str) {
        (self.group, self.plural)
    }

    /// Whether `field` may be used in a field selector on this type.
    pub fn supports_field(&self, field: &str) -> bool {
        META_FIELDS.contains(&field) || self.extra_fields.contains(&field)
    }

    /// Whether `/{name}/{sub}` is served for this type.
    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }
}

const fn core(
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
) -> Resource {
    builtin("", "v1", kind, plural, singular, namespaced, short_names)
}

/// A built-in type of `group/version` with the plain verbs and nothing else; entries add
/// categories, generation and subresources with struct update syntax.
const fn builtin(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
) -> Resource {
    Resource {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        verbs: RW,
        short_names,
        categories: &[],
        builtin: true,
        generation: false,
        extra_fields: &[],
        subresources: &[],
    }
}

const fn istio(
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
) -> Resource {
    Resource {
        group: "networking.istio.io",
        version,
        kind,
        plural,
        singular,
        namespaced: true,
        verbs: RW,
        short_names,
        categories: &["istio-io", "networking-istio-io"],
        builtin: false,
        generation: true,
        extra_fields: &[],
        subresources: &[],
    }
}

/// HorizontalPodAutoscaler in one of its served versions (they share storage).
const fn hpa(version: &'static str) -> Resource {
    Resource {
        categories: &["all"],
        generation: true,
        subresources: &["status"],
        ..builtin(
            "autoscaling",
            version,
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            "horizontalpodautoscaler",
            true,
            &["hpa"],
        )
    }
}

/// All served resources. Order within a group version is discovery order.
pub static RESOURCES: &[Resource] = &[
    Resource {
        verbs: NS_VERBS,
        extra_fields: &["status.phase"],
        ..core("Namespace", "namespaces", "namespace", false, &["ns"])
    },
    core("ConfigMap", "configmaps", "configmap", true, &["cm"]),
    Resource {
        extra_fields: &["type"],
        ..core("Secret", "secrets", "secret", true, &[])
    },
    Resource {
        categories: &["all"],
        subresources: &["status"],
        ..core("Service", "services", "service", true, &["svc"])
    },
    core(
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        true,
        &["sa"],
    ),
    Resource {
        extra_fields: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ..core("Event", "events", "event", true, &["ev"])
    },
    Resource {
        categories: &["all"],
        extra_fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ..core("Pod", "pods", "pod", true, &["po"])
    },
    Resource {
        subresources: &["status"],
        ..core(
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            "persistentvolumeclaim",
            true,
            &["pvc"],
        )
    },
    Resource {
        subresources: &["status"],
        ..core(
            "PersistentVolume",
            "persistentvolumes",
            "persistentvolume",
            false,
            &["pv"],
        )
    },
    Resource {
        subresources: &["status"],
        ..core(
            "ResourceQuota",
            "resourcequotas",
            "resourcequota",
            true,
            &["quota"],
        )
    },
    core("LimitRange", "limitranges", "limitrange", true, &["limits"]),
    core("Endpoints", "endpoints", "endpoints", true, &["ep"]),
    Resource {
        subresources: &["status"],
        ..core("Node", "nodes", "node", false, &["no"])
    },
    Resource {
        group: "apps",
        categories: &["all"],
        generation: true,
        subresources: &["status", "scale"],
        ..core("Deployment", "deployments", "deployment", true, &["deploy"])
    },
    Resource {
        group: "apps",
        categories: &["all"],
        generation: true,
        subresources: &["status", "scale"],
        ..core("ReplicaSet", "replicasets", "replicaset", true, &["rs"])
    },
    Resource {
        categories: &["all"],
        generation: true,
        subresources: &["status", "scale"],
        ..builtin(
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            "statefulset",
            true,
            &["sts"],
        )
    },
    Resource {
        categories: &["all"],
        generation: true,
        subresources: &["status"],
        ..builtin(
            "apps",
            "v1",
            "DaemonSet",
            "daemonsets",
            "daemonset",
            true,
            &["ds"],
        )
    },
    // autoscaling/v2 is preferred; v1 reads and writes the same objects.
    hpa("v2"),
    hpa("v1"),
    Resource {
        categories: &["all"],
        generation: true,
        subresources: &["status"],
        ..builtin("batch", "v1", "Job", "jobs", "job", true, &[])
    },
    Resource {
        categories: &["all"],
        generation: true,
        subresources: &["status"],
        ..builtin(
            "batch",
            "v1",
            "CronJob",
            "cronjobs",
            "cronjob",
            true,
            &["cj"],
        )
    },
    Resource {
        generation: true,
        subresources: &["status"],
        ..builtin(
            "networking.k8s.io",
            "v1",
            "Ingress",
            "ingresses",
            "ingress",
            true,
            &["ing"],
        )
    },
    Resource {
        generation: true,
        ..builtin(
            "networking.k8s.io",
            "v1",
            "IngressClass",
            "ingressclasses",
            "ingressclass",
            false,
            &[],
        )
    },
    Resource {
        generation: true,
        ..builtin(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            "networkpolicy",
            true,
            &["netpol"],
        )
    },
    Resource {
        generation: true,
        subresources: &["status"],
        ..builtin(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            "poddisruptionbudget",
            true,
            &["pdb"],
        )
    },
    builtin(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
        &[],
    ),
    builtin(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        false,
        &[],
    ),
    builtin(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        true,
        &[],
    ),
    builtin(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        "role",
        true,
        &[],
    ),
    builtin(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        "storageclass",
        false,
        &["sc"],
    ),
    builtin(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        true,
        &[],
    ),
    builtin(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        true,
        &[],
    ),
    istio(
        "v1beta1",
        "VirtualService",
        "virtualservices",
        "virtualservice",
        &["vs"],
    ),
    istio(
        "v1beta1",
        "DestinationRule",
        "destinationrules",
        "destinationrule",
        &["dr"],
    ),
    istio(
        "v1alpha3",
        "VirtualService",
        "virtualservices",
        "virtualservice",
        &["vs"],
    ),
    istio(
        "v1alpha3",
        "DestinationRule",
        "destinationrules",
        "destinationrule",
        &["dr"],
    ),
    Resource {
        group: "apiextensions.k8s.io",
        categories: &["api-extensions"],
        generation: true,
        subresources: &["status"],
        ..core(
            "CustomResourceDefinition",
            "customresourcedefinitions",
            "customresourcedefinition",
            false,
            &["crd", "crds"],
        )
    },
];

/// The CRD type itself, whose objects make custom resources servable.
pub fn is_crd(res: &Resource) -> bool {
    res.group == "apiextensions.k8s.io" && res.plural == "customresourcedefinitions"
}

/// Built-in resources followed by `custom` (those defined by stored CRDs).
pub fn all<'a>(custom: &'a [&'static Resource]) -> impl Iterator<Item = &'static Resource> + 'a {
    RESOURCES.iter().chain(custom.iter().copied())
}

/// [`find`] among built-in and `custom` resources.
pub fn find_in(
    custom: &[&'static Resource],
    group: &str,
    version: &str,
    plural: &str,
) -> Option<&'static Resource> {
    all(custom).find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Leaks `s` once per distinct value (custom resources are few and live for the process).
fn intern_str(s: &str) -> &'static str {
    static STRS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut strs = STRS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = strs.iter().find(|x| **x == s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    strs.push(leaked);
    leaked
}

fn intern_strs(v: &[String]) -> &'static [&'static str] {
    static LISTS: std::sync::Mutex<Vec<&'static [&'static str]>> =
        std::sync::Mutex::new(Vec::new());
    let items: Vec<&'static str> = v.iter().map(|s| intern_str(s)).collect();
    let mut lists = LISTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = lists.iter().find(|l| **l == items.as_slice()) {
        return found;
    }
    let leaked: &'static [&'static str] = Box::leak(items.into_boxed_slice());
    lists.push(leaked);
    leaked
}

fn intern_resource(r: Resource) -> &'static Resource {
    static RES: std::sync::Mutex<Vec<&'static Resource>> = std::sync::Mutex::new(Vec::new());
    let mut all = RES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = all.iter().find(|x| ***x == r) {
        return found;
    }
    let leaked: &'static Resource = Box::leak(Box::new(r));
    all.push(leaked);
    leaked
}

/// The resources a CustomResourceDefinition object defines: one per served version, in the
/// order listed (the first served version is preferred, as kube-aggregator orders by
/// priority only for built-ins). Malformed CRDs define nothing.
pub fn from_crd(crd: &Value) -> Vec<&'static Resource> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let (Some(group), Some(plural), Some(kind)) = (
        spec["group"].as_str(),
        names["plural"].as_str(),
        names["kind"].as_str(),
    ) else {
        return Vec::new();
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let short_names = intern_strs(&strings(&names["shortNames"]));
    let categories = intern_strs(&strings(&names["categories"]));
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    versions
        .iter()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .filter_map(|v| {
            let version = v["name"].as_str()?;
            let subresources: Vec<String> = v["subresources"]
                .as_object()
                .map(|m| {
                    m.keys()
                        .filter(|k| *k == "status" || *k == "scale")
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            Some(intern_resource(Resource {
                group: intern_str(group),
                version: intern_str(version),
                kind: intern_str(kind),
                plural: intern_str(plural),
                singular: intern_str(&singular),
                namespaced,
                verbs: RW,
                short_names,
                categories,
                builtin: false,
                generation: true,
                extra_fields: &[],
                subresources: intern_strs(&subresources),
            }))
        })
        .collect()
}

/// Looks a resource up by its URL coordinates.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    find_in(&[], group, version, plural)
}

/// The resources served in one group version, in discovery order.
pub fn in_group_version<'a>(
    custom: &'a [&'static Resource],
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static Resource> + 'a {
    all(custom).filter(move |r| r.group == group && r.version == version)
}

/// Served non-core groups with their versions, preferred (first listed) version first.
pub fn groups(custom: &[&'static Resource]) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in all(custom).filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) => {
                if !versions.contains(&r.version) {
                    versions.push(r.version);
                }
            }
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

/// Whether the group version exists at all (for 404 vs. an empty list).
pub fn group_version_exists(custom: &[&'static Resource], group: &str, version: &str) -> bool {
    all(custom).any(|r| r.group == group && r.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_versions_share_storage_and_prefer_v1beta1() {
        let a = find("networking.istio.io", "v1alpha3", "virtualservices").unwrap();
        let b = find("networking.istio.io", "v1beta1", "virtualservices").unwrap();
        assert_eq!(a.storage_key(), b.storage_key());
        let groups = groups(&[]);
        let istio = groups
            .iter()
            .find(|(g, _)| *g == "networking.istio.io")
            .unwrap();
        assert_eq!(istio.1, vec!["v1beta1", "v1alpha3"]);
        assert_eq!(groups[0].0, "apps");
    }

    #[test]
    fn core_lookup_and_api_version() {
        let cm = find("", "v1", "configmaps").unwrap();
        assert_eq!(cm.api_version(), "v1");
        assert!(cm.namespaced);
        let ns = find("", "v1", "namespaces").unwrap();
        assert!(!ns.namespaced);
        assert!(!ns.verbs.contains(&"deletecollection"));
        assert_eq!(
            find("apps", "v1", "deployments").unwrap().api_version(),
            "apps/v1"
        );
        assert!(find("apps", "v1", "configmaps").is_none());
    }
}
