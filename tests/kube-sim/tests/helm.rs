//! helm 4 against kube-sim: install (server-side apply of each manifest plus the release
//! Secret), list, get manifest and uninstall of a chart written by the test; `--wait` with
//! rollback on failure; and helm 3 mode (`--server-side=false`, strategic merge patches).

mod common;

use std::path::Path;

use common::*;

/// A chart with a ConfigMap and a Service (no workloads: nothing would make them ready).
fn write_tiny_chart(dir: &Path) {
    write_chart(
        dir,
        "tiny",
        &[
            (
                "templates/configmap.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cfg\ndata:\n  greeting: {{ .Values.greeting | default \"hello\" }}\n",
            ),
            ("templates/service.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}-svc\nspec:\n  selector:\n    app: tiny\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n"),
        ],
    );
}

#[test]
fn helm_install_list_get_uninstall() {
    let c = Cluster::start();
    c.kubectl(&["create", "namespace", "demo"]).success();
    let chart = c.home.path().join("tiny");
    write_tiny_chart(&chart);
    let chart = chart.to_string_lossy().into_owned();

    let out = c.helm(&["install", "rel", &chart, "-n", "demo"]).success();
    assert!(out.contains("STATUS: deployed"), "{out}");
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
    let cm = c.json(&[
        "get",
        "cm",
        "rel-cfg",
        "-n",
        "demo",
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    assert_eq!(cm["metadata"]["managedFields"][0]["manager"], "helm");
    assert_eq!(cm["metadata"]["managedFields"][0]["operation"], "Apply");
    let port = c
        .kubectl(&[
            "get",
            "svc",
            "rel-svc",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.ports[0].port}",
        ])
        .success();
    assert_eq!(port, "80");

    let list = c.helm(&["list", "-n", "demo", "-o", "json"]).success();
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["name"], "rel");
    assert_eq!(list[0]["status"], "deployed");
    assert_eq!(list[0]["chart"], "tiny-0.1.0");

    let manifest = c.helm(&["get", "manifest", "rel", "-n", "demo"]).success();
    assert!(
        manifest.contains("name: rel-cfg") && manifest.contains("name: rel-svc"),
        "{manifest}"
    );

    let out = c.helm(&["uninstall", "rel", "-n", "demo"]).success();
    assert!(out.contains("release \"rel\" uninstalled"), "{out}");
    let left = c
        .kubectl(&["get", "cm,svc,secrets", "-n", "demo", "-o", "name"])
        .success();
    assert_eq!(left.trim(), "", "left behind: {left}");
    assert_eq!(c.helm(&["list", "-n", "demo", "-q"]).success().trim(), "");
}

/// A chart with a Deployment (image from values) and a Service, for `--wait`.
fn write_web_chart(dir: &Path) {
    write_chart(
        dir,
        "web",
        &[
            (
                "templates/deployment.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}-web\nspec:\n  replicas: 2\n  progressDeadlineSeconds: 2\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: web\n        image: {{ .Values.image | default \"nginx:1\" }}\n",
            ),
            (
                "templates/service.yaml",
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}-svc\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n",
            ),
        ],
    );
}

#[test]
fn helm_wait_follows_deployment_readiness() {
    let c = Cluster::start_with(kube_sim::Config {
        rollout_delay: std::time::Duration::from_millis(100),
        never_ready_images: vec!["broken".into()],
        ..kube_sim::Config::default()
    });
    c.kubectl(&["create", "namespace", "demo"]).success();
    let chart = c.home.path().join("web");
    write_web_chart(&chart);
    let chart = chart.to_string_lossy().into_owned();
    let base = ["-n", "demo", "--wait", "--timeout", "10s"];

    let mut args = vec!["install", "rel", &chart];
    args.extend(base);
    let out = c.helm(&args).success();
    assert!(out.contains("STATUS: deployed"), "{out}");
    let ready = c
        .kubectl(&[
            "get",
            "deploy",
            "rel-web",
            "-n",
            "demo",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ])
        .success();
    assert_eq!(ready, "2");

    let mut args = vec![
        "upgrade",
        "--install",
        "rel",
        &chart,
        "--set",
        "image=registry.example/broken:2",
        "--rollback-on-failure",
    ];
    args.extend(base);
    let err = c.helm(&args).failure();
    assert!(
        err.to_lowercase().contains("progress") || err.contains("context deadline"),
        "{err}"
    );
    // --rollback-on-failure puts revision 1's template back (a third revision).
    let history = c
        .helm(&["history", "rel", "-n", "demo", "-o", "json"])
        .success();
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["revision"], 3, "{history}");
    assert_eq!(last["status"], "deployed", "{history}");
    let image = c
        .kubectl(&[
            "get",
            "deploy",
            "rel-web",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .success();
    assert_eq!(image, "nginx:1");
}

/// Helm 3 mode (`--server-side=false`): install creates, upgrade sends strategic merge
/// patches computed by a client-side three-way merge, rollback patches revision 1 back.
#[test]
fn helm_client_side_install_upgrade_history_rollback() {
    install_upgrade_history_rollback(false);
}

/// Helm 4's default mode (server-side apply) through the same life cycle.
#[test]
fn helm_server_side_install_upgrade_history_rollback() {
    install_upgrade_history_rollback(true);
}

fn install_upgrade_history_rollback(server_side: bool) {
    let mode = format!("--server-side={server_side}");
    let c = Cluster::start();
    c.kubectl(&["create", "namespace", "demo"]).success();
    let chart = c.home.path().join("web");
    write_web_chart(&chart);
    let chart = chart.to_string_lossy().into_owned();
    let image = |c: &Cluster| {
        c.kubectl(&[
            "get",
            "deploy",
            "rel-web",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .success()
    };
    let values = |c: &Cluster| -> serde_json::Value {
        let out = c
            .helm(&["get", "values", "rel", "-n", "demo", "-o", "json"])
            .success();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };

    let out = c
        .helm(&["install", "rel", &chart, "-n", "demo", &mode])
        .success();
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert_eq!(image(&c), "nginx:1");
    let dep = c.json(&[
        "get",
        "deploy",
        "rel-web",
        "-n",
        "demo",
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    let applied_by_helm = dep["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["manager"] == "helm" && m["operation"] == "Apply");
    assert_eq!(applied_by_helm, server_side, "{dep:#}");
    let ip = c
        .kubectl(&[
            "get",
            "svc",
            "rel-svc",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .success();
    assert!(ip.starts_with("10."), "{ip}");

    let out = c
        .helm(&[
            "upgrade",
            "rel",
            &chart,
            "-n",
            "demo",
            &mode,
            "--set",
            "image=nginx:2",
        ])
        .success();
    assert!(out.contains("REVISION: 2"), "{out}");
    assert_eq!(image(&c), "nginx:2");
    assert_eq!(values(&c), serde_json::json!({"image": "nginx:2"}));

    let history = c
        .helm(&["history", "rel", "-n", "demo", "-o", "json"])
        .success();
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    let revisions: Vec<_> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["revision"].as_i64().unwrap(), h["status"].clone()))
        .collect();
    assert_eq!(
        revisions,
        vec![(1, "superseded".into()), (2, "deployed".into())],
        "{history}"
    );

    c.helm(&["rollback", "rel", "1", "-n", "demo"]).success();
    assert_eq!(image(&c), "nginx:1");
    let history = c
        .helm(&["history", "rel", "-n", "demo", "-o", "json"])
        .success();
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["revision"], 3, "{history}");
    assert_eq!(last["status"], "deployed", "{history}");
    // Revision 1 had no user-supplied values (helm prints `null`).
    let v = values(&c);
    assert!(v.get("image").is_none(), "{v}");
    // The Service kept its address through the patches.
    let ip_after = c
        .kubectl(&[
            "get",
            "svc",
            "rel-svc",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .success();
    assert_eq!(ip_after, ip);

    let list = c.helm(&["list", "-A", "-o", "json"]).success();
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "rel");
    assert_eq!(list[0]["namespace"], "demo");
    assert_eq!(list[0]["revision"], "3");
    assert_eq!(list[0]["status"], "deployed");
}
