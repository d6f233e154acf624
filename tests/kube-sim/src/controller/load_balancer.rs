//! The cloud provider's service controller: a Service of `type: LoadBalancer` gets
//! `status.loadBalancer.ingress` (an address from 172.18.255.0/24, as kind's cloud provider
//! hands out) `load_balancer_delay` after kube-sim first sees it; one whose name contains an
//! entry of `pending_load_balancers` never does (`EXTERNAL-IP` stays `<pending>`, as on a
//! cluster without a load-balancer implementation). A Service changed to another type loses
//! its address.

use std::time::Instant;

use serde_json::{json, Value};

use super::*;

/// The address of a Service's load balancer: stable for its namespace and name.
fn address(ns: &str, name: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in ns.bytes().chain([b'/']).chain(name.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("172.18.255.{}", h % 250 + 2)
}

impl Controller {
    /// Reconciles one Service's load balancer; returns when its address is due.
    pub(super) fn sync_load_balancer(
        &mut self,
        store: &Store,
        name: &ObjectName,
        now: Instant,
    ) -> Option<Instant> {
        let service = res("", "services");
        let svc = store.get(service, &name.0, &name.1).ok()?;
        let has_address = svc
            .pointer("/status/loadBalancer/ingress")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        if s(&svc, "/spec/type") != "LoadBalancer" {
            self.lb_requested.remove(uid(&svc));
            if has_address {
                write_status(store, service, &svc, json!({"loadBalancer": {}}));
            }
            return None;
        }
        let never = self
            .settings
            .pending_load_balancers
            .iter()
            .any(|n| name.1.contains(n.as_str()));
        if never || has_address {
            return None;
        }
        let since = *self
            .lb_requested
            .entry(uid(&svc).to_string())
            .or_insert(now);
        let due = since + self.settings.load_balancer_delay;
        if now < due {
            return Some(due);
        }
        let ingress = json!([{"ip": address(&name.0, &name.1), "ipMode": "VIP"}]);
        write_status(
            store,
            service,
            &svc,
            json!({"loadBalancer": {"ingress": ingress}}),
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_stable_and_in_range() {
        assert_eq!(address("demo", "web"), address("demo", "web"));
        assert_ne!(address("demo", "web"), address("demo", "api"));
        let ip: std::net::Ipv4Addr = address("a", "b").parse().unwrap();
        assert_eq!(ip.octets()[..3], [172, 18, 255]);
    }
}
