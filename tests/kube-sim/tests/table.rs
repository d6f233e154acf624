//! Table answers (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`): what the real
//! kubectl prints by default and with `-o wide`, per kind, for custom resources from their
//! CRD's printer columns, and in `kubectl get -w`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// The header and rows `kubectl get` printed, split on runs of spaces.
fn table(c: &Cluster, args: &[&str]) -> Vec<Vec<String>> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    c.kubectl(&all)
        .success()
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

#[test]
fn kubectl_get_prints_the_real_columns_of_workloads_and_services() {
    let c = Cluster::start_with(kube_sim::Config {
        pending_load_balancers: vec!["internal".into()],
        ..kube_sim::Config::default()
    });
    let web = c.manifest("web.json", &deployment("registry.example/web:1"));
    c.kubectl(&["create", "namespace", "demo"]).success();
    c.kubectl(&["apply", "-f", &web]).success();
    c.kubectl(&[
        "rollout",
        "status",
        "deploy/web",
        "-n",
        "demo",
        "--timeout=30s",
    ])
    .success();
    let svc = c.manifest(
        "svc.json",
        &json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "internal", "namespace": "demo"},
                "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                         "ports": [{"port": 80, "targetPort": 80}]}}),
    );
    c.kubectl(&["apply", "-f", &svc]).success();

    let deploy = table(&c, &["deploy", "-n", "demo"]);
    assert_eq!(
        deploy[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert_eq!(deploy[1][..4], ["web", "1/1", "1", "1"]);

    let pods = table(&c, &["pods", "-n", "demo", "-o", "wide"]);
    assert_eq!(
        pods[0],
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ]
    );
    assert_eq!(pods[1][1..4], ["2/2", "Running", "0"], "{pods:?}");
    assert!(pods[1][5].starts_with("10.244."), "{pods:?}");

    let services = table(&c, &["svc", "-n", "demo"]);
    assert_eq!(
        services[0],
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert_eq!(services[1][..2], ["internal", "LoadBalancer"]);
    assert_eq!(services[1][3..5], ["<pending>", "80/TCP"], "{services:?}");

    let eps = kube_sim::resources::find("", "v1", "endpoints").unwrap();
    c.wait_for_store("endpoints", Duration::from_secs(30), |s| {
        s.get(eps, "demo", "internal")
            .is_ok_and(|e| e["subsets"][0]["addresses"].is_array())
    });
    let endpoints = table(&c, &["endpoints", "-n", "demo"]);
    assert_eq!(endpoints[0], ["NAME", "ENDPOINTS", "AGE"]);
    assert!(endpoints[1][1].ends_with(":80"), "{endpoints:?}");

    // One object, and kinds with their own wording.
    let one = table(&c, &["deploy", "web", "-n", "demo"]);
    assert_eq!(one.len(), 2, "{one:?}");
    assert_eq!(table(&c, &["ns", "demo"])[1][..2], ["demo", "Active"]);
    let nodes = table(&c, &["nodes"]);
    assert_eq!(nodes[0], ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    assert_eq!(nodes[1][1..3], ["Ready", "control-plane"]);
    let classes = table(&c, &["sc"]);
    assert_eq!(
        classes[1][..3],
        ["standard (default)", "kube-sim.io/hostpath", "Delete"]
    );
}

#[test]
fn custom_resources_print_their_crd_columns_and_watches_print_rows() {
    let c = Cluster::start_with(kube_sim::Config {
        gateway_api: true,
        ..kube_sim::Config::default()
    });
    let class = c.manifest(
        "gc.json",
        &json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                "metadata": {"name": "sim"}, "spec": {"controllerName": "example.com/gw"}}),
    );
    c.kubectl(&["apply", "-f", &class]).success();
    let classes = table(&c, &["gatewayclasses"]);
    assert_eq!(classes[0], ["NAME", "CONTROLLER", "ACCEPTED", "AGE"]);
    assert_eq!(classes[1][..2], ["sim", "example.com/gw"]);

    c.kubectl(&["create", "configmap", "one"]).success();
    let w = Streaming::spawn(c.kubectl_command(&["get", "cm", "-n", "default", "-w"]));
    assert_eq!(
        w.next_line("header", Duration::from_secs(20))
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "DATA", "AGE"]
    );
    let first = w.next_line("the first ConfigMap", Duration::from_secs(20));
    assert_eq!(
        first.split_whitespace().take(2).collect::<Vec<_>>(),
        ["one", "0"]
    );
    c.kubectl(&[
        "create",
        "configmap",
        "two",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ])
    .success();
    let row = w.next_line("the new ConfigMap", Duration::from_secs(20));
    assert_eq!(
        row.split_whitespace().take(2).collect::<Vec<_>>(),
        ["two", "2"]
    );
}
