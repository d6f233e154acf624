//! kube-sim driven by the real kubectl 1.34 (`.tools/bin/kubectl`, installed by
//! `ops/setup.sh`). Each test starts its own in-process kube-sim on a free loopback port and
//! talks to it only through kubectl with the kubeconfig kube-sim wrote.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

#[test]
fn version_prints_server_version() {
    let c = Cluster::start();
    let out = c.kubectl(&["version"]).success();
    assert!(out.contains("Server Version: v1.34.0"), "{out}");
    let v = c.json(&["version", "-o", "json"]);
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.34.0");
    assert_eq!(v["serverVersion"]["minor"], "34");
}

#[test]
fn discovery_is_legacy_json_and_complete() {
    let c = Cluster::start();
    let out = c.kubectl(&["api-resources"]).success();
    let line = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing from:\n{out}"))
            .to_string()
    };
    assert!(line("deployments").contains("apps/v1"));
    assert!(line("deployments").contains("deploy"));
    assert!(line("virtualservices").contains("networking.istio.io/v1beta1"));
    assert!(line("destinationrules").contains("dr"));
    assert!(line("namespaces").contains("false"));
    assert!(line("configmaps").contains("true"));

    let groups = c.json(&["get", "--raw", "/apis"]);
    assert_eq!(groups["kind"], "APIGroupList");
    let istio = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "networking.istio.io")
        .expect("istio group");
    assert_eq!(istio["versions"].as_array().unwrap().len(), 2);
    let v1alpha3 = c.json(&["get", "--raw", "/apis/networking.istio.io/v1alpha3"]);
    assert_eq!(v1alpha3["kind"], "APIResourceList");
    assert_eq!(c.json(&["get", "--raw", "/api"])["versions"][0], "v1");
    assert_eq!(c.kubectl(&["get", "--raw", "/readyz"]).success(), "ok");

    // No OpenAPI v2 (v3 is served, see tests/openapi.rs): a NotFound Status.
    let err = c.kubectl(&["get", "--raw", "/openapi/v2"]).failure();
    assert!(err.contains("NotFound"), "{err}");
}

#[test]
fn namespace_has_server_metadata() {
    let c = Cluster::start();
    assert!(c
        .kubectl(&["create", "namespace", "demo"])
        .success()
        .contains("namespace/demo created"));
    let ns = c.json(&["get", "ns", "demo", "-o", "json"]);
    let meta = &ns["metadata"];
    assert_eq!(meta["uid"].as_str().unwrap().len(), 36, "{ns}");
    assert!(meta["resourceVersion"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());
    assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(ns["status"]["phase"], "Active");
    let names = c.kubectl(&["get", "ns", "-o", "name"]).success();
    for n in [
        "namespace/default",
        "namespace/kube-system",
        "namespace/demo",
    ] {
        assert!(names.lines().any(|l| l == n), "{n} not in {names}");
    }
    let err = c.kubectl(&["create", "namespace", "demo"]).failure();
    assert!(
        err.contains("Error from server (AlreadyExists): namespaces \"demo\" already exists"),
        "{err}"
    );
}

#[test]
fn configmap_lifecycle() {
    let c = Cluster::start();
    c.kubectl(&["create", "namespace", "demo"]).success();
    c.kubectl(&[
        "create",
        "configmap",
        "cm",
        "--from-literal=a=b",
        "-n",
        "demo",
    ])
    .success();
    let a = c
        .kubectl(&["get", "cm", "cm", "-n", "demo", "-o", "jsonpath={.data.a}"])
        .success();
    assert_eq!(a, "b");

    c.kubectl(&["label", "cm", "cm", "team=blue", "-n", "demo"])
        .success();
    let blue = c
        .kubectl(&["get", "cm", "-l", "team=blue", "-n", "demo", "-o", "name"])
        .success();
    assert_eq!(blue.trim(), "configmap/cm");
    let red = c.kubectl(&["get", "cm", "-l", "team=red", "-n", "demo", "-o", "name"]);
    assert!(red.ok);
    assert_eq!(red.stdout.trim(), "");
    for (selector, found) in [
        ("team in (red,blue)", true),
        ("team notin (blue)", false),
        ("!team", false),
        ("team", true),
        ("team!=blue", false),
    ] {
        let out = c
            .kubectl(&["get", "cm", "-l", selector, "-n", "demo", "-o", "name"])
            .success();
        assert_eq!(out.contains("configmap/cm"), found, "selector {selector}");
    }
    let by_field = c
        .kubectl(&[
            "get",
            "cm",
            "-A",
            "--field-selector",
            "metadata.name=cm",
            "-o",
            "name",
        ])
        .success();
    assert_eq!(by_field.trim(), "configmap/cm");
    let bad = c
        .kubectl(&["get", "cm", "-n", "demo", "--field-selector", "data.a=b"])
        .failure();
    assert!(bad.contains("field label not supported: data.a"), "{bad}");

    let rv_before = c
        .kubectl(&[
            "get",
            "cm",
            "cm",
            "-n",
            "demo",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .success();
    c.kubectl(&[
        "patch",
        "cm",
        "cm",
        "-n",
        "demo",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"a":"c"}}"#,
    ])
    .success();
    let cm = c.json(&["get", "cm", "cm", "-n", "demo", "-o", "json"]);
    assert_eq!(cm["data"]["a"], "c");
    assert_ne!(
        cm["metadata"]["resourceVersion"].as_str().unwrap(),
        rv_before
    );
    assert_eq!(cm["metadata"]["labels"]["team"], "blue");

    c.kubectl(&[
        "patch", "cm", "cm", "-n", "demo", "--type", "json", "-p",
        r#"[{"op":"test","path":"/data/a","value":"c"},{"op":"replace","path":"/data/a","value":"d"},{"op":"add","path":"/data/z","value":"1"}]"#,
    ])
    .success();
    let cm = c.json(&["get", "cm", "cm", "-n", "demo", "-o", "json"]);
    assert_eq!(cm["data"], serde_json::json!({"a": "d", "z": "1"}));
    let failed = c
        .kubectl(&[
            "patch",
            "cm",
            "cm",
            "-n",
            "demo",
            "--type",
            "json",
            "-p",
            r#"[{"op":"test","path":"/data/a","value":"nope"}]"#,
        ])
        .failure();
    // kubectl prints 422 Invalid Status bodies as "The request is invalid: <message>".
    assert!(
        failed.contains("The request is invalid")
            && failed.contains("testing value \"/data/a\" failed"),
        "{failed}"
    );

    let deleted = c.kubectl(&["delete", "cm", "cm", "-n", "demo"]).success();
    assert!(deleted.contains("configmap \"cm\" deleted"), "{deleted}");
    let err = c.kubectl(&["get", "cm", "cm", "-n", "demo"]).failure();
    assert!(
        err.contains("Error from server (NotFound): configmaps \"cm\" not found"),
        "{err}"
    );
}

#[test]
fn errors_match_the_real_server() {
    let c = Cluster::start();
    let err = c
        .kubectl(&["create", "configmap", "cm", "-n", "nowhere"])
        .failure();
    // kubectl wraps this one: "error: failed to create configmap: namespaces ... not found".
    assert!(
        err.contains("failed to create configmap: namespaces \"nowhere\" not found"),
        "{err}"
    );
    let err = c.kubectl(&["get", "deploy", "missing"]).failure();
    assert!(
        err.contains("Error from server (NotFound): deployments.apps \"missing\" not found"),
        "{err}"
    );
    c.kubectl(&["create", "configmap", "cm", "--from-literal=a=b"])
        .success();
    let err = c
        .kubectl(&["create", "configmap", "cm", "--from-literal=a=b"])
        .failure();
    assert!(
        err.contains("failed to create configmap: configmaps \"cm\" already exists"),
        "{err}"
    );

    // Optimistic concurrency: replacing with a stale resourceVersion is a Conflict.
    let mut cm = c.json(&["get", "cm", "cm", "-o", "json"]);
    c.kubectl(&["label", "cm", "cm", "x=y"]).success();
    cm["data"]["a"] = serde_json::json!("stale");
    let path = c.manifest("stale.json", &cm);
    let err = c.kubectl(&["replace", "-f", &path]).failure();
    assert!(
        err.contains("Error from server (Conflict)")
            && err.contains("the object has been modified"),
        "{err}"
    );
    // Without a resourceVersion the replace is unconditional.
    cm["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let path = c.manifest("fresh.json", &cm);
    c.kubectl(&["replace", "-f", &path]).success();
    let data = c
        .kubectl(&["get", "cm", "cm", "-o", "jsonpath={.data.a}"])
        .success();
    assert_eq!(data, "stale");

    // Server-side apply into a namespace that does not exist fails as a create would.
    let dep = c.manifest("ssa.json", &deployment("nginx:1.25"));
    let err = c
        .kubectl(&["apply", "--server-side", "-n", "demo", "-f", &dep])
        .failure();
    assert!(
        err.contains("Error from server (NotFound): namespaces \"demo\" not found"),
        "{err}"
    );
}

#[test]
fn secret_sent_as_protobuf_is_stored_as_base64() {
    let c = Cluster::start();
    c.kubectl(&[
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=a=b",
        "--type=Opaque",
    ])
    .success();
    c.kubectl(&["create", "serviceaccount", "robot"]).success();
    let s = c.json(&["get", "secret", "s", "-o", "json"]);
    assert_eq!(s["data"]["a"], "Yg==");
    assert_eq!(s["type"], "Opaque");
    let opaque = c
        .kubectl(&[
            "get",
            "secrets",
            "--field-selector",
            "type=Opaque",
            "-o",
            "name",
        ])
        .success();
    assert_eq!(opaque.trim(), "secret/s");
    let sa = c
        .kubectl(&["get", "sa", "robot", "-o", "jsonpath={.metadata.namespace}"])
        .success();
    assert_eq!(sa, "default");
}

#[test]
fn apply_creates_then_strategic_merge_patches_a_deployment() {
    let c = Cluster::start();
    c.kubectl(&["create", "namespace", "demo"]).success();
    let first = c.manifest("dep1.json", &deployment("nginx:1.25"));
    let out = c.kubectl(&["apply", "-f", &first]).success();
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let d = c.json(&["get", "deploy", "web", "-n", "demo", "-o", "json"]);
    assert_eq!(d["metadata"]["generation"], 1);
    assert!(
        d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .unwrap()
            .contains("nginx:1.25")
    );

    let mut changed = deployment("nginx:1.26");
    changed["spec"]["template"]["spec"]["containers"][0]["env"] =
        serde_json::json!([{"name": "MODE", "value": "blue"}]);
    let second = c.manifest("dep2.json", &changed);
    let out = c.kubectl(&["apply", "-f", &second]).success();
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let d = c.json(&["get", "deploy", "web", "-n", "demo", "-o", "json"]);
    let containers = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["name"], "web");
    assert_eq!(containers[0]["image"], "nginx:1.26");
    assert_eq!(containers[0]["ports"][0]["containerPort"], 80);
    assert_eq!(containers[0]["env"][0]["value"], "blue");
    assert_eq!(containers[1]["name"], "side");
    assert_eq!(containers.as_array().unwrap().len(), 2);
    assert_eq!(d["metadata"]["generation"], 2);

    let out = c.kubectl(&["apply", "-f", &second]).success();
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");

    // Removing a container from the manifest removes it from the object.
    let mut fewer = changed.clone();
    fewer["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .pop();
    let third = c.manifest("dep3.json", &fewer);
    c.kubectl(&["apply", "-f", &third]).success();
    let names = c
        .kubectl(&[
            "get",
            "deploy",
            "web",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name}",
        ])
        .success();
    assert_eq!(names, "web");
}

#[test]
fn istio_objects_share_storage_across_versions_and_apply_with_merge_patch() {
    let c = Cluster::start();
    let vs = |host: &str| {
        serde_json::json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": "web"}}]}]}
        })
    };
    let first = c.manifest("vs1.json", &vs("a.example.com"));
    c.kubectl(&["apply", "-f", &first]).success();
    let second = c.manifest("vs2.json", &vs("b.example.com"));
    let out = c.kubectl(&["apply", "-f", &second]).success();
    assert!(out.contains("configured"), "{out}");
    let got = c.json(&[
        "get",
        "virtualservices.v1beta1.networking.istio.io",
        "web",
        "-o",
        "json",
    ]);
    assert_eq!(got["apiVersion"], "networking.istio.io/v1beta1");
    assert_eq!(got["spec"]["hosts"][0], "b.example.com");
    assert_eq!(got["metadata"]["generation"], 2);
    let err = c
        .kubectl(&[
            "patch",
            "vs",
            "web",
            "--type",
            "strategic",
            "-p",
            r#"{"spec":{"hosts":["c"]}}"#,
        ])
        .failure();
    // The server's 415, as kubectl words it for a custom resource.
    assert!(
        err.contains("application/strategic-merge-patch+json is not supported by networking.istio.io/v1beta1, Kind=VirtualService"),
        "{err}"
    );
}

#[test]
fn deleting_a_namespace_removes_its_objects() {
    let c = Cluster::start();
    c.kubectl(&["create", "namespace", "demo"]).success();
    c.kubectl(&["create", "configmap", "cm", "-n", "demo"])
        .success();
    let dep = c.manifest("dep.json", &deployment("nginx:1.25"));
    c.kubectl(&["apply", "-f", &dep]).success();
    c.kubectl(&["create", "configmap", "keep", "-n", "default"])
        .success();
    let out = c.kubectl(&["delete", "ns", "demo"]).success();
    assert!(out.contains("namespace \"demo\" deleted"), "{out}");
    let err = c.kubectl(&["get", "ns", "demo"]).failure();
    assert!(err.contains("namespaces \"demo\" not found"), "{err}");
    let all = c
        .kubectl(&["get", "cm,deploy", "-A", "-o", "name"])
        .success();
    assert_eq!(all.trim(), "configmap/keep");
}

#[test]
fn binary_serves_and_writes_its_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["--listen", "127.0.0.1:0", "--kubeconfig-out"])
        .arg(&kubeconfig)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kube-sim");
    // The "listening" log line is written after the kubeconfig: wait for it, not for time.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = stderr.read_line(&mut line).unwrap();
        assert!(n > 0, "kube-sim exited before listening");
        if line.contains("kube-sim listening") {
            break;
        }
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&kubeconfig).unwrap()).unwrap();
    assert_eq!(config["current-context"], "kube-sim");
    let server = config["clusters"][0]["cluster"]["server"].as_str().unwrap();
    assert!(server.starts_with("http://127.0.0.1:"), "{server}");

    let mut cmd = Command::new(kubectl_path());
    cmd.arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args(["get", "ns", "default", "-o", "name"])
        .env_remove("KUBECONFIG")
        .env("HOME", dir.path());
    let out = run_with_timeout(cmd, KUBECTL_TIMEOUT);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "namespace/default"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "kube-sim exited with {status}");
}
