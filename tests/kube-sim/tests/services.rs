//! Service cluster IPs: allocated on create from 10.96.0.0/12, unique, `None` kept for
//! headless Services, and kept (not re-allocated) on updates — checked with the real kubectl.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn service(name: &str, port: u16, cluster_ip: Option<&str>) -> serde_json::Value {
    let mut svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": name}, "ports": [{"port": port}]}
    });
    if let Some(ip) = cluster_ip {
        svc["spec"]["clusterIP"] = json!(ip);
    }
    svc
}

fn cluster_ip(c: &Cluster, name: &str) -> String {
    c.kubectl(&["get", "svc", name, "-o", "jsonpath={.spec.clusterIP}"])
        .success()
}

fn in_service_range(ip: &str) -> bool {
    let ip: std::net::Ipv4Addr = ip.parse().unwrap_or_else(|_| panic!("not an IP: {ip:?}"));
    u32::from(ip) >> 20 == u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0)) >> 20
}

#[test]
fn services_get_unique_cluster_ips_kept_on_update() {
    let c = Cluster::start();
    let a = c.manifest("a.json", &service("a", 80, None));
    let b = c.manifest("b.json", &service("b", 80, None));
    let headless = c.manifest("h.json", &service("h", 80, Some("None")));
    c.kubectl(&["apply", "-f", &a]).success();
    c.kubectl(&["apply", "--server-side", "-f", &b]).success();
    c.kubectl(&["apply", "-f", &headless]).success();

    let ip_a = cluster_ip(&c, "a");
    let ip_b = cluster_ip(&c, "b");
    assert!(in_service_range(&ip_a), "{ip_a}");
    assert!(in_service_range(&ip_b), "{ip_b}");
    assert_ne!(ip_a, ip_b);
    let svc_a = c.json(&["get", "svc", "a", "-o", "json"]);
    assert_eq!(svc_a["spec"]["clusterIPs"], json!([ip_a]));
    assert_eq!(cluster_ip(&c, "h"), "None");

    // Updates (client-side apply's patch, server-side apply, replace) keep the address.
    let a2 = c.manifest("a2.json", &service("a", 8080, None));
    c.kubectl(&["apply", "-f", &a2]).success();
    let b2 = c.manifest("b2.json", &service("b", 8080, None));
    c.kubectl(&["apply", "--server-side", "-f", &b2]).success();
    c.kubectl(&["replace", "-f", &a2]).success();
    assert_eq!(cluster_ip(&c, "a"), ip_a);
    assert_eq!(cluster_ip(&c, "b"), ip_b);
    let port = c
        .kubectl(&["get", "svc", "a", "-o", "jsonpath={.spec.ports[0].port}"])
        .success();
    assert_eq!(port, "8080");

    // Changing it is refused; so is taking an address already in use, or one out of range.
    let moved = c.manifest("a3.json", &service("a", 8080, Some("10.96.200.200")));
    let err = c.kubectl(&["replace", "-f", &moved]).failure();
    assert!(err.contains("may not change once set"), "{err}");
    let taken = c.manifest("d.json", &service("d", 80, Some(&ip_a)));
    let err = c.kubectl(&["apply", "-f", &taken]).failure();
    assert!(err.contains("already allocated"), "{err}");
    let outside = c.manifest("e.json", &service("e", 80, Some("192.168.0.1")));
    let err = c.kubectl(&["apply", "-f", &outside]).failure();
    assert!(err.contains("not in the valid range"), "{err}");

    // A requested free address is honoured; a freed address can be reused.
    let fixed = c.manifest("f.json", &service("f", 80, Some("10.96.5.5")));
    c.kubectl(&["apply", "-f", &fixed]).success();
    assert_eq!(cluster_ip(&c, "f"), "10.96.5.5");
    c.kubectl(&["delete", "svc", "a"]).success();
    c.kubectl(&["apply", "-f", &taken]).success();
    assert_eq!(cluster_ip(&c, "d"), ip_a);
}

/// A Deployment `web` of `replicas` pods in `default` behind a Service `web` (a named target
/// port), of `svc_type`.
fn web_with_service(c: &Cluster, replicas: u32, image: &str, svc_type: &str) {
    let deploy = c.manifest(
        "deploy.json",
        &json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image,
                        "ports": [{"name": "http", "containerPort": 8080}]}]},
                },
            },
        }),
    );
    let svc = c.manifest(
        "svc.json",
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "labels": {"tier": "front"}},
            "spec": {"type": svc_type, "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        }),
    );
    c.kubectl(&["apply", "-f", &deploy, "-f", &svc]).success();
}

fn wait_for(c: &Cluster, what: &str, condition: &str) {
    c.kubectl(&["wait", what, &format!("--for={condition}"), "--timeout=30s"])
        .success();
}

#[test]
fn endpoints_and_slices_follow_the_ready_pods_of_a_service() {
    let c = Cluster::start();
    web_with_service(&c, 2, "registry.example/web:1", "ClusterIP");
    c.kubectl(&["rollout", "status", "deploy/web", "--timeout=30s"])
        .success();
    wait_for(
        &c,
        "endpoints/web",
        "jsonpath={.subsets[0].addresses[1].targetRef.kind}=Pod",
    );
    let ep = c.json(&["get", "endpoints", "web", "-o", "json"]);
    let subset = &ep["subsets"][0];
    assert_eq!(
        subset["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    assert_eq!(ep["metadata"]["labels"]["tier"], "front", "{ep:#}");
    let pod_ips = c
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ])
        .success();
    let mut want: Vec<&str> = pod_ips.split_whitespace().collect();
    want.sort();
    let mut got: Vec<&str> = subset["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["ip"].as_str().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, want);

    let slices = c.json(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "json",
    ]);
    let items = slices["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{slices:#}");
    let slice = &items[0];
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["ports"][0]["port"], 8080);
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
    let endpoints = slice["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2, "{slice:#}");
    assert!(
        endpoints.iter().all(|e| e["conditions"]["ready"] == true),
        "{slice:#}"
    );

    // Scaled to nothing: no addresses; deleted: the Endpoints and the slice go too.
    c.kubectl(&["scale", "deploy/web", "--replicas=0"])
        .success();
    let endpoints = kube_sim::resources::find("", "v1", "endpoints").unwrap();
    c.wait_for_store("the Endpoints emptied", Duration::from_secs(30), |store| {
        store
            .get(endpoints, "default", "web")
            .is_ok_and(|ep| ep.get("subsets").is_none())
    });
    c.kubectl(&["delete", "svc", "web"]).success();
    wait_for(&c, "endpoints/web", "delete");
    let left = c
        .kubectl(&["get", "endpointslices", "-o", "name"])
        .success();
    assert_eq!(left.trim(), "", "the slice is owned by the Service");
}

#[test]
fn pods_that_are_not_ready_are_listed_as_not_ready() {
    let c = Cluster::start_with(kube_sim::Config {
        never_ready_images: vec!["web:stuck".into()],
        ..kube_sim::Config::default()
    });
    web_with_service(&c, 1, "registry.example/web:stuck", "ClusterIP");
    wait_for(
        &c,
        "endpoints/web",
        "jsonpath={.subsets[0].notReadyAddresses[0].targetRef.kind}=Pod",
    );
    let ep = c.json(&["get", "endpoints", "web", "-o", "json"]);
    assert!(ep["subsets"][0].get("addresses").is_none(), "{ep:#}");
    let slice = c.json(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "json",
    ]);
    assert_eq!(
        slice["items"][0]["endpoints"][0]["conditions"]["ready"], false,
        "{slice:#}"
    );
}

#[test]
fn load_balancers_get_an_address_after_the_delay_unless_pending() {
    let delay = Duration::from_millis(1500);
    let c = Cluster::start_with(kube_sim::Config {
        load_balancer_delay: delay,
        pending_load_balancers: vec!["internal".into()],
        ..kube_sim::Config::default()
    });
    let services = kube_sim::resources::find("", "v1", "services").unwrap();
    let rev = c.sim().store().revision();
    let mut pending = service("internal-lb", 80, None);
    pending["spec"]["type"] = json!("LoadBalancer");
    let mut public = service("public-lb", 80, None);
    public["spec"]["type"] = json!("LoadBalancer");
    let pending = c.manifest("pending.json", &pending);
    let public = c.manifest("public.json", &public);
    c.kubectl(&["apply", "-f", &pending, "-f", &public])
        .success();
    wait_for(
        &c,
        "svc/public-lb",
        "jsonpath={.status.loadBalancer.ingress[0].ipMode}=VIP",
    );
    let writes = c
        .sim()
        .store()
        .writes_since(services, Some("default"), rev)
        .unwrap();
    let mut of_public = writes
        .iter()
        .filter(|(_, s)| s["metadata"]["name"] == "public-lb");
    let created = of_public.next().unwrap().0;
    let addressed = of_public
        .find(|(_, s)| s["status"]["loadBalancer"]["ingress"].is_array())
        .unwrap()
        .0;
    assert!(
        addressed - created >= delay,
        "addressed after {:?}, before the delay",
        addressed - created
    );
    let ip = c
        .kubectl(&[
            "get",
            "svc",
            "public-lb",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ])
        .success();
    assert!(ip.starts_with("172.18.255."), "{ip}");
    // Created together with it and past the same delay, the pending one has no address.
    let pending = c.json(&["get", "svc", "internal-lb", "-o", "json"]);
    assert_eq!(
        pending["status"],
        json!({"loadBalancer": {}}),
        "{pending:#}"
    );
    // Back to ClusterIP: the address goes.
    c.kubectl(&[
        "patch",
        "svc",
        "public-lb",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ])
    .success();
    c.wait_for_store("the address released", Duration::from_secs(30), |store| {
        store
            .get(services, "default", "public-lb")
            .is_ok_and(|svc| svc["status"] == json!({"loadBalancer": {}}))
    });
}
