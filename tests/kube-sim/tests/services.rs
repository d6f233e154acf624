//! Service cluster IPs: allocated on create from 10.96.0.0/12, unique, `None` kept for
//! headless Services, and kept (not re-allocated) on updates — checked with the real kubectl.

mod common;

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
