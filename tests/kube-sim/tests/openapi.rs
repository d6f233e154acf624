//! OpenAPI v3 with the real clients: kubectl and helm validate against `/openapi/v3` (no
//! `--validate=false` / `--disable-openapi-validation`), find `fieldValidation` on the PATCH
//! operations, and leave unknown fields to the server, which rejects them under `Strict`.

mod common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};

fn configmap(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "demo"},
        "data": {"greeting": "hello"},
    })
}

/// Paths (with query) of the requests the sim saw, oldest first.
fn requests(c: &Cluster, method: &str) -> Vec<String> {
    c.sim()
        .audit()
        .into_iter()
        .filter(|e| e.method == method)
        .map(|e| format!("{}?{}", e.path, e.query))
        .collect()
}

#[test]
fn v3_root_and_group_version_documents() {
    let c = Cluster::start();
    let root = c.json(&["get", "--raw", "/openapi/v3"]);
    let paths = root["paths"].as_object().expect("paths");
    for gv in [
        "api/v1",
        "apis/apps/v1",
        "apis/networking.istio.io/v1beta1",
        "apis/networking.istio.io/v1alpha3",
    ] {
        let url = paths[gv]["serverRelativeURL"].as_str().expect(gv);
        assert!(url.starts_with(&format!("/openapi/v3/{gv}?hash=")), "{url}");
    }
    let url = paths["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap();
    let apps = c.json(&["get", "--raw", url]);
    assert!(apps["openapi"].as_str().unwrap().starts_with("3."));
    let schemas = &apps["components"]["schemas"];
    let dep = &schemas["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        dep["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
    );
    assert_eq!(
        dep["properties"]["metadata"]["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    assert!(
        schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]["labels"]
            .is_object()
    );
    let patch = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"]["kind"],
        "Deployment"
    );
    assert!(patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
    let core = c.json(&["get", "--raw", "/openapi/v3/api/v1"]);
    assert!(
        core["components"]["schemas"]["io.k8s.api.core.v1.ConfigMap"]["properties"]["data"]
            .is_object()
    );

    let err = c
        .kubectl(&["get", "--raw", "/openapi/v3/apis/apps/v9"])
        .failure();
    assert!(err.contains("NotFound"), "{err}");
    // v2 stays unserved: the clients never need it once v3 answers.
    let err = c.kubectl(&["get", "--raw", "/openapi/v2"]).failure();
    assert!(err.contains("NotFound"), "{err}");
}

#[test]
fn kubectl_apply_validates_through_openapi_v3() {
    let c = Cluster::start();
    c.kubectl(&["create", "namespace", "demo"]).success();
    c.sim().clear_audit();
    let dep = c.manifest("dep.json", &deployment("nginx:1.25"));
    let cm = c.manifest("cm.json", &configmap("cfg"));
    c.kubectl(&["apply", "-f", &dep]).success();
    c.kubectl(&["apply", "-f", &cm]).success();

    // kubectl read the v3 documents, found `fieldValidation` and asked the server to be strict.
    let gets = requests(&c, "GET");
    assert!(
        gets.iter().any(|p| p.starts_with("/openapi/v3?")),
        "{gets:?}"
    );
    assert!(
        gets.iter()
            .any(|p| p.starts_with("/openapi/v3/apis/apps/v1?hash=")),
        "{gets:?}"
    );
    assert!(
        !gets.iter().any(|p| p.starts_with("/openapi/v2")),
        "{gets:?}"
    );
    let posts = requests(&c, "POST");
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert!(
        posts.iter().all(|p| p.contains("fieldValidation=Strict")),
        "{posts:?}"
    );

    // A misspelt top-level field fails the create ...
    let mut bad = deployment("nginx:1.25");
    bad["metadata"]["name"] = json!("typo");
    let spec = bad.as_object_mut().unwrap().remove("spec").unwrap();
    bad["spek"] = spec;
    let bad_path = c.manifest("bad.json", &bad);
    let err = c.kubectl(&["apply", "-f", &bad_path]).failure();
    assert!(
        err.contains("Error from server (BadRequest): error when creating")
            && err.contains(
                "Deployment in version \"v1\" cannot be handled as a Deployment: \
                 strict decoding error: unknown field \"spek\""
            ),
        "{err}"
    );
    c.kubectl(&["get", "deploy", "typo", "-n", "demo"])
        .failure();

    // ... and a patch of an existing object, with misspelt metadata too.
    let mut cm_bad = configmap("cfg");
    cm_bad["dat"] = json!({"x": "y"});
    cm_bad["metadata"]["lables"] = json!({"a": "b"});
    let cm_bad_path = c.manifest("cm-bad.json", &cm_bad);
    let err = c.kubectl(&["apply", "-f", &cm_bad_path]).failure();
    assert!(
        err.contains("error when patching")
            && err.contains("unknown field \"dat\"")
            && err.contains("unknown field \"metadata.lables\""),
        "{err}"
    );
    let stored = c.json(&["get", "cm", "cfg", "-n", "demo", "-o", "json"]);
    assert!(stored.get("dat").is_none(), "{stored}");

    // Server-side apply reports it in structured-merge-diff's words.
    let err = c
        .kubectl(&["apply", "--server-side", "-f", &bad_path])
        .failure();
    assert!(
        err.contains(
            "failed to create typed patch object (demo/typo; apps/v1, Kind=Deployment): \
             .spek: field not declared in schema"
        ),
        "{err}"
    );

    // `--validate=warn` lets the write through with a warning.
    let mut warned = configmap("warned");
    warned["dat"] = json!({});
    let warned_path = c.manifest("warned.json", &warned);
    let run = c.kubectl(&["apply", "--validate=warn", "-f", &warned_path]);
    assert!(
        run.stderr.contains("Warning: unknown field \"dat\""),
        "{run:?}"
    );
    run.success();
}

/// A chart with a ConfigMap and a Service; `typo` misspells the ConfigMap's `data`.
fn write_typo_chart(dir: &Path, typo: bool) {
    let data = if typo { "dta" } else { "data" };
    let configmap = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ .Release.Name }}}}-cfg\n{data}:\n  greeting: hello\n"
    );
    write_chart(
        dir,
        "tiny",
        &[
            ("templates/configmap.yaml", &configmap),
            (
                "templates/service.yaml",
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}-svc\nspec:\n  selector:\n    app: tiny\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n",
            ),
        ],
    );
}

#[test]
fn helm_install_validates_through_openapi_v3() {
    let c = Cluster::start();
    c.kubectl(&["create", "namespace", "demo"]).success();
    c.sim().clear_audit();
    let good = c.home.path().join("good");
    write_typo_chart(&good, false);
    let out = c
        .helm(&["install", "rel", &good.to_string_lossy(), "-n", "demo"])
        .success();
    assert!(out.contains("STATUS: deployed"), "{out}");
    let gets = requests(&c, "GET");
    assert!(
        gets.iter()
            .any(|p| p.starts_with("/openapi/v3/api/v1?hash=")),
        "{gets:?}"
    );
    let greeting = c
        .kubectl(&[
            "get",
            "cm",
            "rel-cfg",
            "-n",
            "demo",
            "-o",
            "jsonpath={.data.greeting}",
        ])
        .success();
    assert_eq!(greeting, "hello");

    let bad = c.home.path().join("bad");
    write_typo_chart(&bad, true);
    let err = c
        .helm(&["install", "typo", &bad.to_string_lossy(), "-n", "demo"])
        .failure();
    // helm 4 server-side applies with `fieldValidation=Strict`; the server names the field.
    assert!(
        err.contains(
            "failed to create typed patch object (demo/typo-cfg; v1, Kind=ConfigMap): \
             .dta: field not declared in schema"
        ),
        "{err}"
    );
    let patches = requests(&c, "PATCH");
    assert!(
        !patches.is_empty() && patches.iter().all(|p| p.contains("fieldValidation=Strict")),
        "{patches:?}"
    );
    c.kubectl(&["get", "cm", "typo-cfg", "-n", "demo"])
        .failure();
}
