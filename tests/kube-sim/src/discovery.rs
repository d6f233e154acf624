//! Version and legacy (unaggregated) discovery documents.
//!
//! kubectl 1.34 first asks `/api` and `/apis` for aggregated discovery
//! (`Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,...,application/json`).
//! client-go decides by the response `Content-Type`: plain `application/json` means legacy
//! documents, after which it fetches `/api/v1` and every `/apis/{group}/{version}`. Serving
//! only the legacy form keeps one source of truth (the resource table) and is what older
//! servers do.

use serde_json::{json, Value};

use crate::resources::{self, Resource};

/// The Kubernetes version kube-sim claims to be.
pub const GIT_VERSION: &str = "v1.34.0";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "emulationMajor": "1",
        "emulationMinor": "34",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "33",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-08-27T00:00:00Z",
        "goVersion": "go1.24.6",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`: the core group's versions.
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    })
}

/// `/apis`: every non-core group with its versions, the first being preferred.
pub fn api_group_list(custom: &[&'static Resource]) -> Value {
    let groups: Vec<Value> = resources::groups(custom)
        .into_iter()
        .map(|(group, versions)| group_doc(group, &versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`: one group.
pub fn api_group(custom: &[&'static Resource], group: &str) -> Option<Value> {
    let (g, versions) = resources::groups(custom)
        .into_iter()
        .find(|(g, _)| *g == group)?;
    let mut doc = group_doc(g, &versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

fn group_doc(group: &str, versions: &[&str]) -> Value {
    let gv = |v: &&str| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    json!({
        "name": group,
        "versions": versions.iter().map(gv).collect::<Vec<_>>(),
        "preferredVersion": gv(&versions[0]),
    })
}

fn resource_doc(r: &Resource) -> Value {
    let mut doc = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        doc["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        doc["categories"] = json!(r.categories);
    }
    doc
}

/// `deployments/scale` and `deployments/status` entries: clients (kubectl scale, HPA-style
/// tooling) look for them before using the subresource. Scale is served as `autoscaling/v1`.
fn subresource_docs(r: &Resource) -> Vec<Value> {
    let mut subs: Vec<&str> = r.subresources.to_vec();
    subs.sort_unstable();
    subs.into_iter()
        .map(|sub| {
            let mut doc = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            });
            if sub == "scale" {
                doc["group"] = json!("autoscaling");
                doc["version"] = json!("v1");
                doc["kind"] = json!("Scale");
            }
            doc
        })
        .collect()
}

/// `/api/v1` or `/apis/{group}/{version}`; `None` for an unknown group version.
pub fn api_resource_list(
    custom: &[&'static Resource],
    group: &str,
    version: &str,
) -> Option<Value> {
    if !resources::group_version_exists(custom, group, version) {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let list: Vec<Value> = resources::in_group_version(custom, group, version)
        .flat_map(|r| std::iter::once(resource_doc(r)).chain(subresource_docs(r)))
        .collect();
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": list,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_cover_the_table() {
        let core = api_resource_list(&[], "", "v1").unwrap();
        assert_eq!(core["groupVersion"], "v1");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"namespaces") && names.contains(&"pods"));
        let apps = api_resource_list(&[], "apps", "v1").unwrap();
        assert_eq!(apps["resources"][0]["shortNames"][0], "deploy");
        assert!(api_resource_list(&[], "apps", "v2").is_none());
        let groups = api_group_list(&[]);
        assert_eq!(
            groups["groups"][0]["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
        assert_eq!(
            api_group(&[], "networking.istio.io").unwrap()["kind"],
            "APIGroup"
        );
    }
}
