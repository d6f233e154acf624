//! A corpus chart's life cycle as a user runs it, shared by the corpus tests: one release
//! `rel` in namespace `demo`, `helm install --wait`, `upgrade --wait`, `rollback --wait`,
//! `helm test`, `uninstall --wait`, with `kubectl get` of every kind the release holds after
//! each step, and what is left after the uninstall found by listing every kind the server
//! serves.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::Cluster;

/// Flags every helm call of a life cycle takes.
pub const WAIT: &[&str] = &["-n", "demo", "--wait", "--timeout", "60s"];

/// The directory of corpus chart `name` (`tests/kube-sim/charts/<name>`).
pub fn chart(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("charts")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Release `rel` of one chart in namespace `demo` (created by `new`).
pub struct Release<'a> {
    c: &'a Cluster,
    pub chart: String,
    /// Cluster-scoped objects before the install (`kind/name`), which the uninstall must
    /// leave as they were.
    baseline: BTreeSet<String>,
}

impl<'a> Release<'a> {
    /// Creates namespace `demo` and remembers the cluster-scoped objects. `chart` is a corpus
    /// chart name or a directory.
    pub fn new(c: &'a Cluster, chart_name: &str) -> Self {
        c.kubectl(&["create", "namespace", "demo"]).success();
        let chart = if chart_name.contains('/') {
            chart_name.to_string()
        } else {
            chart(chart_name)
        };
        let baseline = cluster_objects(c);
        Self { c, chart, baseline }
    }

    /// `helm <verb> rel <chart> <args> -n demo --wait`, which must succeed and deploy; then
    /// every kind of the release's manifest can be listed.
    fn deploy(&self, verb: &str, args: &[&str]) -> String {
        let mut all = vec![verb, "rel", self.chart.as_str()];
        all.extend_from_slice(args);
        all.extend_from_slice(WAIT);
        let out = self.c.helm(&all).success();
        assert!(out.contains("STATUS: deployed"), "{out}");
        self.get_every_kind();
        out
    }

    pub fn install(&self, args: &[&str]) -> String {
        self.deploy("install", args)
    }

    pub fn upgrade(&self, args: &[&str]) -> String {
        self.deploy("upgrade", args)
    }

    /// `helm upgrade` with `args` and `--wait`, which must fail; returns helm's error.
    pub fn upgrade_fails(&self, args: &[&str]) -> String {
        let mut all = vec!["upgrade", "rel", self.chart.as_str()];
        all.extend_from_slice(args);
        all.extend_from_slice(WAIT);
        self.c.helm(&all).failure()
    }

    /// `helm rollback rel 1 --wait`; the new revision must be deployed.
    pub fn rollback(&self) {
        let mut all = vec!["rollback", "rel", "1"];
        all.extend_from_slice(WAIT);
        self.c.helm(&all).success();
        assert_eq!(self.last_revision()["status"], "deployed");
        self.get_every_kind();
    }

    /// `helm test rel`, which must pass; returns its report.
    pub fn test(&self) -> String {
        self.c
            .helm(&["test", "rel", "-n", "demo", "--timeout", "60s"])
            .success()
    }

    /// The newest entry of `helm history`.
    pub fn last_revision(&self) -> serde_json::Value {
        let history = self
            .c
            .helm(&["history", "rel", "-n", "demo", "-o", "json"])
            .success();
        let history: serde_json::Value = serde_json::from_str(&history).unwrap();
        history.as_array().unwrap().last().unwrap().clone()
    }

    /// `kubectl get` of each kind in the release's manifest finds the release's objects.
    pub fn get_every_kind(&self) {
        let manifest = self
            .c
            .helm(&["get", "manifest", "rel", "-n", "demo"])
            .success();
        let kinds: BTreeSet<&str> = manifest
            .lines()
            .filter_map(|l| l.strip_prefix("kind: "))
            .map(str::trim)
            .collect();
        for kind in kinds {
            let out = self
                .c
                .kubectl(&["get", kind, "-n", "demo", "-o", "name"])
                .success();
            assert!(!out.trim().is_empty(), "kubectl get {kind} found nothing");
        }
    }

    /// `helm uninstall rel --wait`, then what is left: every namespaced object in `demo` and
    /// every cluster-scoped object that was not there before the install (`kind/name`,
    /// sorted).
    pub fn uninstall(&self) -> Vec<String> {
        self.c
            .helm(&[
                "uninstall",
                "rel",
                "-n",
                "demo",
                "--wait",
                "--timeout",
                "60s",
            ])
            .success();
        // The endpoints controllers delete a gone Service's Endpoints and EndpointSlices right
        // after, as on a cluster (on their own thread); wait for them rather than race them.
        let (endpoints, slices, services) = (
            kube_sim::resources::find("", "v1", "endpoints").unwrap(),
            kube_sim::resources::find("discovery.k8s.io", "v1", "endpointslices").unwrap(),
            kube_sim::resources::find("", "v1", "services").unwrap(),
        );
        self.c.wait_for_store(
            "Endpoints and EndpointSlices of deleted Services gone",
            Duration::from_secs(30),
            |store| {
                let all = Default::default();
                let none = Default::default();
                let service_exists = |name: &str| store.get(services, "demo", name).is_ok();
                let (eps, _) = store.list(endpoints, Some("demo"), &all, &none).unwrap();
                let (slices, _) = store.list(slices, Some("demo"), &all, &none).unwrap();
                eps.iter()
                    .all(|ep| service_exists(ep["metadata"]["name"].as_str().unwrap_or_default()))
                    && slices.iter().all(|slice| {
                        service_exists(
                            slice["metadata"]["labels"]["kubernetes.io/service-name"]
                                .as_str()
                                .unwrap_or_default(),
                        )
                    })
            },
        );
        let mut left: Vec<String> = objects(self.c, true)
            .into_iter()
            .chain(
                cluster_objects(self.c)
                    .into_iter()
                    .filter(|o| !self.baseline.contains(o)),
            )
            .collect();
        left.sort();
        left
    }

    /// `uninstall`, which must leave nothing at all behind.
    pub fn uninstall_clean(&self) {
        let left = self.uninstall();
        assert_eq!(
            left,
            Vec::<String>::new(),
            "left behind after helm uninstall"
        );
    }
}

/// Every object of every listable kind the server serves, namespaced ones in `demo` or
/// cluster-scoped ones, as `kubectl get -o name` prints them.
fn objects(c: &Cluster, namespaced: bool) -> Vec<String> {
    let flag = format!("--namespaced={namespaced}");
    let kinds = c
        .kubectl(&["api-resources", "--verbs=list", &flag, "-o", "name"])
        .success();
    let kinds: Vec<&str> = kinds
        .lines()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    assert!(kinds.len() > 5, "api-resources listed only {kinds:?}");
    let joined = kinds.join(",");
    let mut args = vec!["get", joined.as_str(), "-o", "name"];
    if namespaced {
        args.extend_from_slice(&["-n", "demo"]);
    }
    c.kubectl(&args)
        .success()
        .lines()
        .map(str::to_string)
        .collect()
}

fn cluster_objects(c: &Cluster) -> BTreeSet<String> {
    objects(c, false).into_iter().collect()
}
