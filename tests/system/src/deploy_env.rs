//! A world for the deployment tests: nats-server, an in-process kube-sim (it serves
//! Istio's networking kinds, as a cluster with Istio does), the real helm in an isolated home, and the
//! production `helm-service` binary pointed at all of them.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube_sim::{Config as SimConfig, KubeSim};
use serde_json::Value;

use crate::env::TestEnv;
use crate::events::Replies;
use crate::worker_process::{WorkerProcess, WorkerSpec};

/// Upper bound of one helm or `helm-service charts` invocation in a test.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The pinned helm installed by `ops/setup.sh` (Helm 4).
pub fn helm_bin() -> PathBuf {
    pinned_helm("helm")
}

/// A pinned helm installed by `ops/setup.sh`: `helm` (Helm 4) or `helm3` (Helm 3).
pub fn pinned_helm(name: &str) -> PathBuf {
    let path = workspace_root().join(".tools/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run ops/setup.sh",
        path.display()
    );
    path
}

/// `target/<profile>/helm-service`: tests run from `target/<profile>/deps`, benchmark
/// binaries from `target/<profile>`.
pub fn helm_service_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable directory");
    let profile_dir = if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>")
    } else {
        dir
    };
    let binary = profile_dir.join("helm-service");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p helm-service` (ops/test.sh does)",
        binary.display()
    );
    binary
}

/// The example chart of the project (ops/examples/charts/hello).
pub fn example_chart() -> PathBuf {
    workspace_root().join("ops/examples/charts/hello")
}

/// A test image for the `helm test` worlds to tell kube-sim to fail (`failing_job_images`).
pub const BROKEN_CHECK: &str = "ghcr.io/example/broken-check:1";

/// A `helm test` pod for the example chart (`templates/test.yaml`, see
/// [`example_chart_with`]), its image from the values (`testImage`).
pub const TEST_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: {{ .Values.keptn.service }}-test
  annotations:
    "helm.sh/hook": test
spec:
  restartPolicy: Never
  containers:
    - name: check
      image: {{ .Values.testImage | default "ghcr.io/example/hello-check:1" | quote }}
      args: ["--url", "http://{{ .Values.keptn.service }}/healthz"]
"#;

/// The traffic layer the workers of a test world route with (`--traffic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    Istio,
    GatewayApi,
    Service,
}

/// The Gateway (`namespace`, `name`) the `gateway-api` workers attach their HTTPRoutes to.
pub const TEST_GATEWAY: (&str, &str) = ("gateways", "public");

impl Traffic {
    pub const ALL: [Traffic; 3] = [Traffic::Istio, Traffic::GatewayApi, Traffic::Service];

    /// The value of `--traffic`.
    pub fn flag(self) -> &'static str {
        match self {
            Traffic::Istio => "istio",
            Traffic::GatewayApi => "gateway-api",
            Traffic::Service => "service",
        }
    }

    /// The worker's flags for this layer (none for Istio, the default).
    pub fn worker_args(self) -> Vec<String> {
        match self {
            Traffic::Istio => Vec::new(),
            Traffic::GatewayApi => vec![
                "--traffic".into(),
                self.flag().into(),
                "--gateway".into(),
                format!("{}/{}", TEST_GATEWAY.0, TEST_GATEWAY.1),
            ],
            Traffic::Service => vec!["--traffic".into(), self.flag().into()],
        }
    }
}

pub struct DeployEnv {
    pub env: TestEnv,
    pub sim: KubeSim,
    pub client: kube::Client,
    /// HOME, caches and config of helm (worker and test share it).
    pub helm_home: PathBuf,
    /// The traffic layer of the workers [`DeployEnv::worker_spec`] makes.
    pub traffic: Traffic,
}

impl DeployEnv {
    /// A world whose workers route with Istio (the default layer).
    pub async fn start(sim_config: SimConfig) -> anyhow::Result<DeployEnv> {
        Self::start_with(sim_config, Traffic::Istio).await
    }

    /// A world whose workers route with `traffic`; the cluster serves the Gateway API for
    /// `gateway-api`, as a cluster with it installed does.
    pub async fn start_with(
        mut sim_config: SimConfig,
        traffic: Traffic,
    ) -> anyhow::Result<DeployEnv> {
        if traffic == Traffic::GatewayApi {
            sim_config.gateway_api = true;
        }
        let env = TestEnv::start().await?;
        let sim = KubeSim::start(sim_config).await?;
        let kubeconfig = kube::config::Kubeconfig::read_from(sim.kubeconfig_path())?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        let client = kube::Client::try_from(config)?;
        let helm_home = env.dir.path().join("helm-home");
        std::fs::create_dir_all(&helm_home)?;
        Ok(DeployEnv {
            env,
            sim,
            client,
            helm_home,
            traffic,
        })
    }

    /// Environment of helm processes: isolated from the user's home.
    pub fn helm_env(&self) -> Vec<(String, String)> {
        let home = self.helm_home.display().to_string();
        vec![
            ("HOME".into(), home.clone()),
            ("HELM_CACHE_HOME".into(), format!("{home}/cache")),
            ("HELM_CONFIG_HOME".into(), format!("{home}/config")),
            ("HELM_DATA_HOME".into(), format!("{home}/data")),
        ]
    }

    /// A production worker spec using this world's helm (Helm 4) and cluster.
    pub fn worker_spec(&self) -> WorkerSpec {
        self.worker_spec_with_helm(&helm_bin())
    }

    /// A production worker spec using the helm binary `helm` and this world's cluster.
    pub fn worker_spec_with_helm(&self, helm: &Path) -> WorkerSpec {
        let mut spec = WorkerSpec::new(helm_service_bin(), &self.env.nats.url());
        spec.ack_wait = "10s";
        spec.extra_args = vec![
            "--helm-bin".into(),
            helm.display().to_string(),
            "--kubeconfig".into(),
            self.sim.kubeconfig_path().display().to_string(),
            "--rollout-timeout".into(),
            "30s".into(),
        ];
        spec.extra_args.extend(self.traffic.worker_args());
        spec.env = self.helm_env();
        spec
    }

    pub async fn start_worker(
        &self,
        spec: WorkerSpec,
        name: &str,
    ) -> anyhow::Result<WorkerProcess> {
        WorkerProcess::start(spec, self.env.dir.path(), name).await
    }

    /// `helm-service charts push` of a chart directory or archive.
    pub fn push_chart(&self, target: (&str, &str, &str), chart: &Path) -> anyhow::Result<String> {
        let (project, stage, service) = target;
        let out = run(std::process::Command::new(helm_service_bin())
            .args(["charts", "--nats-url", &self.env.nats.url(), "push"])
            .args(["--project", project, "--stage", stage, "--service", service])
            .arg(chart))?;
        anyhow::ensure!(
            out.status.success(),
            "charts push failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs helm against the cluster; returns stdout, failing on a non-zero exit. On a
    /// blocking thread: kube-sim answers helm from this test's own runtime.
    pub async fn helm(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = std::process::Command::new(helm_bin());
        command
            .args(args)
            .arg("--kubeconfig")
            .arg(self.sim.kubeconfig_path())
            .envs(self.helm_env());
        let out = tokio::task::spawn_blocking(move || run(&mut command)).await??;
        anyhow::ensure!(
            out.status.success(),
            "helm {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `helm history -o json` as (revision, status) pairs.
    pub async fn helm_history(
        &self,
        release: &str,
        namespace: &str,
    ) -> anyhow::Result<Vec<(u64, String)>> {
        self.helm_history_field(release, namespace, "status").await
    }

    /// `helm history -o json` as (revision, `field`) pairs, e.g. `description`.
    async fn helm_history_field(
        &self,
        release: &str,
        namespace: &str,
        field: &str,
    ) -> anyhow::Result<Vec<(u64, String)>> {
        let text = self
            .helm(&["history", release, "-n", namespace, "-o", "json"])
            .await?;
        let entries: Vec<Value> = serde_json::from_str(&text)?;
        Ok(entries
            .iter()
            .map(|e| {
                (
                    e["revision"].as_u64().unwrap_or_default(),
                    e[field].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect())
    }

    pub async fn deployment(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Option<Deployment>> {
        Ok(
            Api::<Deployment>::namespaced(self.client.clone(), namespace)
                .get_opt(name)
                .await?,
        )
    }

    /// An Istio object (`VirtualService`, `DestinationRule`) as JSON.
    pub async fn istio(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Option<Value>> {
        self.object(("networking.istio.io", "v1beta1", kind), namespace, name)
            .await
    }

    /// A Gateway API object (`HTTPRoute`, `Gateway`) as JSON; `None` also when the
    /// cluster does not serve the Gateway API.
    pub async fn gateway_api(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Option<Value>> {
        self.object(("gateway.networking.k8s.io", "v1", kind), namespace, name)
            .await
    }

    /// A namespaced object of `(group, version, kind)` as JSON; `None` when it or its kind
    /// does not exist.
    pub async fn object(
        &self,
        (group, version, kind): (&str, &str, &str),
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Option<Value>> {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let resource = ApiResource::from_gvk(&gvk);
        let api = Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, &resource);
        Ok(api
            .get_opt(name)
            .await?
            .map(|object| serde_json::to_value(object).unwrap_or_default()))
    }
}

/// Worker flags that shrink the size limits of the streams and buckets it creates. JetStream
/// reserves each stream's maximum size on disk when the stream is made, so the defaults
/// (10 GiB for the Keptn stream, 5 GiB for charts, ...) do not fit a test's nats-server on a
/// machine with little free disk; tests whose subject is not storage pass these.
pub fn small_storage_limits() -> Vec<String> {
    [
        ("--keptn-stream-max-bytes", "256MiB"),
        ("--dead-letter-max-bytes", "64MiB"),
        ("--release-records-max-bytes", "64MiB"),
        ("--inventory-max-bytes", "16MiB"),
        ("--chart-bucket-max-bytes", "256MiB"),
    ]
    .into_iter()
    .flat_map(|(flag, size)| [flag.to_owned(), size.to_owned()])
    .collect()
}

/// Runs a command to completion with [`TOOL_TIMEOUT`], killing it when it overruns.
fn run(command: &mut std::process::Command) -> anyhow::Result<Output> {
    test_harness::process::run_with_timeout(command, TOOL_TIMEOUT)
}

/// The configuration commit (`gitcommitid`) of the deployment events the tests send; a
/// deployment reports it as `deployment.gitCommit`.
pub const CONFIG_COMMIT: &str = "521747298a3790fde1710f3aa2d03b55020575aa";

/// A deployment.triggered event for `service` in project `shop`, stage `dev`, of
/// configuration commit [`CONFIG_COMMIT`].
pub fn deployment_event(id: &str, service: &str, strategy: &str, values: Value) -> Value {
    serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "shipyard-controller",
        "type": "sh.keptn.event.deployment.triggered",
        "datacontenttype": "application/json",
        "shkeptncontext": "a3e5f16d-8888-4720-82c7-6995062905c1",
        "gitcommitid": CONFIG_COMMIT,
        "data": {
            "project": "shop", "stage": "dev", "service": service,
            "configurationChange": {"values": values},
            "deployment": {"deploymentstrategy": strategy, "deploymentURIsLocal": ["http://from-event:1"]}
        }
    })
}

/// A `sh.keptn.event.<task>` event for `service` in project `shop`, stage `dev`, with
/// `data` merged into the common fields.
pub fn task_event(id: &str, event_type: &str, service: &str, data: Value) -> Value {
    let mut event = serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "shipyard-controller",
        "type": event_type,
        "datacontenttype": "application/json",
        "shkeptncontext": "a3e5f16d-8888-4720-82c7-6995062905c1",
        "data": {"project": "shop", "stage": "dev", "service": service}
    });
    if let (Some(target), Value::Object(extra)) = (event["data"].as_object_mut(), data) {
        target.extend(extra);
    }
    event
}

/// A release.triggered event after a deployment with `strategy` evaluated as `result`.
pub fn release_event(id: &str, service: &str, strategy: &str, result: &str) -> Value {
    task_event(
        id,
        "sh.keptn.event.release.triggered",
        service,
        serde_json::json!({"result": result, "deployment": {"deploymentstrategy": strategy}}),
    )
}

/// A rollback.triggered event.
pub fn rollback_event(id: &str, service: &str) -> Value {
    task_event(
        id,
        "sh.keptn.event.rollback.triggered",
        service,
        serde_json::json!({}),
    )
}

/// An action.triggered event running `action` with `value`.
pub fn action_event(id: &str, service: &str, action: &str, value: Value) -> Value {
    task_event(
        id,
        "sh.keptn.event.action.triggered",
        service,
        serde_json::json!({
            "action": {"name": "remediation", "action": action, "value": value},
            "problem": {"problemTitle": "Response time degradation"}
        }),
    )
}

impl DeployEnv {
    /// The start of many tests: the example chart pushed as service `hello` of `shop` in
    /// stage `dev`, a production worker, and deployment `d1` of it with `strategy`, which
    /// must succeed. Waits up to `deadline` for it.
    pub async fn with_hello_deployed(
        sim_config: SimConfig,
        strategy: &str,
        deadline: Duration,
    ) -> anyhow::Result<(DeployEnv, WorkerProcess)> {
        let env = DeployEnv::start(sim_config).await?;
        env.push_chart(("shop", "dev", "hello"), &example_chart())?;
        let worker = env.start_worker(env.worker_spec(), "worker").await?;
        let deployed = env
            .deploy(
                &deployment_event("d1", "hello", strategy, serde_json::json!({})),
                deadline,
            )
            .await?;
        assert_eq!(deployed["data"]["status"], "succeeded", "{deployed:#}");
        Ok((env, worker))
    }

    /// Publishes `event` and returns its one `.finished` reply (asserting one `.started`).
    pub async fn deploy(&self, event: &Value, deadline: Duration) -> anyhow::Result<Value> {
        crate::events::publish(&self.env.js, event).await?;
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        let (finished, replies) = self.sole_finished(&id, deadline).await?;
        anyhow::ensure!(
            replies.of(&id, "started").len() == 1,
            "one started for {id}"
        );
        Ok(finished)
    }

    /// Puts raw bytes where the chart of `service` (shop/dev) is read from, bypassing
    /// `charts push`'s checks: how a broken or hostile archive reaches the worker.
    pub async fn put_raw_chart(&self, service: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        let store = match self.env.js.get_object_store("helm-service-charts").await {
            Ok(store) => store,
            Err(_) => {
                self.env
                    .js
                    .create_object_store(async_nats::jetstream::object_store::Config {
                        bucket: "helm-service-charts".into(),
                        ..Default::default()
                    })
                    .await?
            }
        };
        let mut reader: &[u8] = &bytes;
        store
            .put(
                format!("shop/dev/{service}/helm/{service}.tgz").as_str(),
                &mut reader,
            )
            .await?;
        Ok(())
    }
}

/// The image of a Deployment's first container.
pub fn image_of(deployment: &Deployment) -> String {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// Copies the example chart to `dir/<name>` and adds `extra` template files.
pub fn example_chart_with(dir: &Path, extra: &[(&str, &str)]) -> anyhow::Result<PathBuf> {
    let target = dir.join("hello");
    std::fs::create_dir_all(target.join("templates"))?;
    let source = example_chart();
    for file in [
        "Chart.yaml",
        "values.yaml",
        "values.schema.json",
        "templates/deployment.yaml",
        "templates/service.yaml",
    ] {
        std::fs::copy(source.join(file), target.join(file))?;
    }
    for (path, content) in extra {
        std::fs::write(target.join(path), content)?;
    }
    Ok(target)
}

impl DeployEnv {
    /// `(image, spec.replicas)` of Deployment `name` (absent replicas count as 1, the API
    /// server's default); an error when the Deployment does not exist.
    pub async fn image_and_replicas(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<(String, i32)> {
        let deployment = self
            .deployment(namespace, name)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no Deployment {name} in namespace {namespace}"))?;
        let replicas = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        Ok((image_of(&deployment), replicas))
    }

    /// The hosts of `service`'s VirtualService routes (in project `shop`, stage `dev`)
    /// with their weights: `[("hello-canary.shop-dev.svc.cluster.local", 100), ...]`.
    pub async fn routes(&self, service: &str) -> anyhow::Result<Vec<(String, u64)>> {
        let vs = self
            .istio("VirtualService", "shop-dev", service)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no VirtualService {service}"))?;
        Ok(vs["spec"]["http"][0]["route"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["destination"]["host"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    // Istio's default for a single destination is all traffic.
                    r["weight"].as_u64().unwrap_or(100),
                )
            })
            .collect())
    }

    /// `(canary, primary)` shares of `service`'s traffic (project `shop`, stage `dev`) as
    /// the world's traffic layer routes it: the VirtualService's weights (`istio`), the
    /// HTTPRoute's backend weights (`gateway-api`), or whose pods the Service selects, all
    /// or nothing (`service`). Also checks that no other layer's routing object exists.
    pub async fn blue_green_weights(&self, service: &str) -> anyhow::Result<(u64, u64)> {
        let (virtual_service, http_route) = self.routing_objects(service).await?;
        let expected = (
            self.traffic == Traffic::Istio,
            self.traffic == Traffic::GatewayApi,
        );
        anyhow::ensure!(
            (virtual_service, http_route) == expected,
            "routing objects of {service} with {:?}: VirtualService {virtual_service}, HTTPRoute {http_route}",
            self.traffic
        );
        match self.traffic {
            Traffic::Istio => self.virtual_service_weights(service).await,
            Traffic::GatewayApi => self.http_route_weights(service).await,
            Traffic::Service => self.service_selection(service).await,
        }
    }

    /// Whether `service` has a VirtualService and an HTTPRoute in `shop-dev`.
    pub async fn routing_objects(&self, service: &str) -> anyhow::Result<(bool, bool)> {
        Ok((
            self.istio("VirtualService", "shop-dev", service)
                .await?
                .is_some(),
            self.gateway_api("HTTPRoute", "shop-dev", service)
                .await?
                .is_some(),
        ))
    }

    /// `(canary, primary)` backend weights of the HTTPRoute of `service`.
    pub async fn http_route_weights(&self, service: &str) -> anyhow::Result<(u64, u64)> {
        let route = self
            .gateway_api("HTTPRoute", "shop-dev", service)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no HTTPRoute {service}"))?;
        let (namespace, name) = TEST_GATEWAY;
        anyhow::ensure!(
            route["spec"]["parentRefs"][0]["namespace"] == namespace
                && route["spec"]["parentRefs"][0]["name"] == name,
            "HTTPRoute {service} is not attached to {namespace}/{name}: {route:#}"
        );
        let backends = route["spec"]["rules"][0]["backendRefs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let weight_of = |suffix: &str| {
            let name = format!("{service}-{suffix}");
            backends
                .iter()
                .find(|b| b["name"] == name.as_str())
                .map_or(0, |b| b["weight"].as_u64().unwrap_or(1))
        };
        Ok((weight_of("canary"), weight_of("primary")))
    }

    /// `(100, 0)` when the Service `service` selects the canary's pods (`app: <service>`),
    /// `(0, 100)` when the primary's (`app: <service>-primary`).
    pub async fn service_selection(&self, service: &str) -> anyhow::Result<(u64, u64)> {
        let object = self
            .object(("", "v1", "Service"), "shop-dev", service)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no Service {service}"))?;
        let app = object["spec"]["selector"]["app"]
            .as_str()
            .unwrap_or_default();
        if app == service {
            Ok((100, 0))
        } else if app == format!("{service}-primary") {
            Ok((0, 100))
        } else {
            anyhow::bail!("Service {service} selects neither canary nor primary: {object:#}")
        }
    }

    /// `(canary, primary)` weights of the blue/green VirtualService of `service`
    /// (project `shop`, stage `dev`); a host without a route counts 0.
    pub async fn virtual_service_weights(&self, service: &str) -> anyhow::Result<(u64, u64)> {
        let routes = self.routes(service).await?;
        let weight_of = |suffix: &str| {
            let host = format!("{service}-{suffix}.shop-dev.svc.cluster.local");
            routes
                .iter()
                .find(|(h, _)| *h == host)
                .map_or(0, |(_, w)| *w)
        };
        Ok((weight_of("canary"), weight_of("primary")))
    }

    /// `helm history -o json` as (revision, description) pairs.
    pub async fn helm_descriptions(
        &self,
        release: &str,
        namespace: &str,
    ) -> anyhow::Result<Vec<(u64, String)>> {
        self.helm_history_field(release, namespace, "description")
            .await
    }

    /// Names of the Helm releases in `namespace`, in whatever state (Helm 4 has no `--all`).
    pub async fn helm_releases(&self, namespace: &str) -> anyhow::Result<Vec<String>> {
        let states = ["--deployed", "--failed", "--pending", "--uninstalling"];
        let mut args = vec!["list", "-n", namespace, "-o", "json"];
        args.extend(states);
        let text = self.helm(&args).await?;
        let entries: Vec<Value> = serde_json::from_str(&text)?;
        Ok(entries
            .iter()
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect())
    }
}

/// Helm operations the worker ran so far: `helm_service_helm_operation_seconds_count`
/// summed over every operation and outcome on its `/metrics`.
pub async fn helm_operations(worker: &WorkerProcess) -> anyhow::Result<f64> {
    let text = worker.metrics().await?;
    Ok(text
        .lines()
        .filter(|line| line.starts_with("helm_service_helm_operation_seconds_count"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}

/// A deployment.triggered event like [`deployment_event`], for `stage` of project `shop`.
pub fn deployment_event_in(
    stage: &str,
    id: &str,
    service: &str,
    strategy: &str,
    values: Value,
) -> Value {
    let mut event = deployment_event(id, service, strategy, values);
    event["data"]["stage"] = stage.into();
    event
}

/// A `sh.keptn.event.service.delete.finished` event (the control plane's report that
/// `service` was deleted from project `shop`) for `stage`, or for every stage with `None`.
pub fn service_delete_event(id: &str, service: &str, stage: Option<&str>) -> Value {
    let mut event = task_event(
        id,
        "sh.keptn.event.service.delete.finished",
        service,
        serde_json::json!({"status": "succeeded", "result": "pass"}),
    );
    match stage {
        Some(stage) => event["data"]["stage"] = stage.into(),
        None => {
            if let Some(data) = event["data"].as_object_mut() {
                data.remove("stage");
            }
        }
    }
    event
}

impl DeployEnv {
    /// Publishes a report event (`service.delete.finished`, which gets no `.started`) and
    /// returns helm-service's one reply to it.
    pub async fn run_report(&self, event: &Value, deadline: Duration) -> anyhow::Result<Value> {
        crate::events::publish(&self.env.js, event).await?;
        // A reply carries the triggeredid of the report, or its id when it has none.
        let id = event["triggeredid"]
            .as_str()
            .or_else(|| event["id"].as_str())
            .unwrap_or_default()
            .to_owned();
        let (finished, replies) = self.sole_finished(&id, deadline).await?;
        anyhow::ensure!(
            replies.of(&id, "started").is_empty(),
            "no started for the report {id}: {replies:#?}"
        );
        Ok(finished)
    }

    /// Waits until every event of `ids` has its `.finished` reply; fails unless each has
    /// exactly one, succeeded. Returns all replies seen.
    pub async fn all_succeeded(
        &self,
        ids: &[String],
        deadline: Duration,
    ) -> anyhow::Result<Replies> {
        let replies = self
            .env
            .wait_replies(deadline, |r| {
                ids.iter().all(|id| !r.of(id, "finished").is_empty())
            })
            .await?;
        for id in ids {
            let finished = replies.of(id, "finished");
            anyhow::ensure!(finished.len() == 1, "one reply for {id}: {finished:#?}");
            anyhow::ensure!(
                finished[0]["data"]["status"] == "succeeded",
                "{id} did not succeed: {:#}",
                finished[0]
            );
        }
        Ok(replies)
    }

    /// Waits for the `.finished` reply to `id` and returns it with all replies seen;
    /// fails unless there is exactly one (however often the event was delivered).
    pub async fn sole_finished(
        &self,
        id: &str,
        deadline: Duration,
    ) -> anyhow::Result<(Value, Replies)> {
        let replies = self
            .env
            .wait_replies(deadline, |r| !r.of(id, "finished").is_empty())
            .await?;
        let finished = replies.of(id, "finished");
        anyhow::ensure!(finished.len() == 1, "one reply for {id}: {finished:#?}");
        let finished = finished[0].clone();
        Ok((finished, replies))
    }

    /// `(namespace, release)` of every Helm release in the cluster, whatever its status
    /// (Helm 4 has no `--all`: the status filters add up).
    pub async fn helm_releases_everywhere(&self) -> anyhow::Result<Vec<(String, String)>> {
        let text = self
            .helm(&[
                "list",
                "-A",
                "--deployed",
                "--failed",
                "--pending",
                "--uninstalling",
                "-o",
                "json",
            ])
            .await?;
        let entries: Vec<Value> = serde_json::from_str(&text)?;
        let mut releases: Vec<(String, String)> = entries
            .iter()
            .map(|e| {
                (
                    e["namespace"].as_str().unwrap_or_default().to_owned(),
                    e["name"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        releases.sort();
        Ok(releases)
    }

    /// The keys of helm-service's inventory (`project.stage.service`), sorted.
    pub async fn inventory_keys(&self) -> anyhow::Result<Vec<String>> {
        use futures::TryStreamExt;
        let store = self.env.js.get_key_value("helm-service-inventory").await?;
        let mut keys: Vec<String> = store.keys().await?.try_collect().await?;
        keys.sort();
        Ok(keys)
    }
}

impl DeployEnv {
    /// Leaves `release` (namespace `shop-dev`) `pending-upgrade`, as a helm killed in the
    /// middle of an upgrade does: a `helm upgrade` of the example chart with `set` is made
    /// to hang on Deployment requests (kube-sim latency fault), killed once Helm has written
    /// its pending revision, and the fault is cleared. Returns that revision.
    pub async fn leave_pending_upgrade(&self, release: &str, set: &str) -> anyhow::Result<u64> {
        let namespace = "shop-dev";
        let next = self
            .helm_history(release, namespace)
            .await?
            .last()
            .map_or(1, |(revision, _)| revision + 1);
        self.sim.faults().set(kube_sim::FaultConfig {
            latency: Duration::from_secs(2),
            latency_path: Some("/deployments".into()),
            ..kube_sim::FaultConfig::default()
        });
        let packaged = self.env.dir.path().join(format!("pending-{release}"));
        std::fs::create_dir_all(&packaged)?;
        self.helm(&[
            "package",
            &example_chart().display().to_string(),
            "-d",
            &packaged.display().to_string(),
        ])
        .await?;
        let chart = packaged.join("hello-0.1.0.tgz");
        let mut crashing = tokio::process::Command::new(helm_bin())
            .args(["upgrade", "--install", release])
            .arg(&chart)
            .args(["-n", namespace, "--set", set])
            .arg("--kubeconfig")
            .arg(self.sim.kubeconfig_path())
            .envs(self.helm_env())
            .kill_on_drop(true)
            .spawn()?;
        let secrets =
            Api::<k8s_openapi::api::core::v1::Secret>::namespaced(self.client.clone(), namespace);
        let secret_name = format!("sh.helm.release.v1.{release}.v{next}");
        let pending = async {
            loop {
                if let Some(secret) = secrets.get_opt(&secret_name).await? {
                    let labels = secret.metadata.labels.unwrap_or_default();
                    if labels.get("status").map(String::as_str) == Some("pending-upgrade") {
                        return anyhow::Ok(());
                    }
                }
                // Polling Helm's record: Helm offers nothing to wait on.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let waited = tokio::time::timeout(Duration::from_secs(30), pending).await;
        crashing.start_kill()?;
        crashing.wait().await?;
        self.sim.faults().set(kube_sim::FaultConfig::default());
        waited??;
        Ok(next)
    }
}
