//! The operations files agree with the worker: the Helm chart lints and renders with the real
//! `helm` CLI into a Deployment that sets every environment variable the README documents,
//! probes the worker's endpoints and outlives its shutdown grace; the alert rules and the
//! Grafana dashboard use only metric names the worker exports; docker-compose and the
//! Dockerfile match the binaries and the tools setup: every image is built from a stage the
//! Dockerfile has, every command line and environment variable is one the binary's own parser
//! takes, health checks and start order hold together, mounted files exist, and the demo's
//! chart and event agree.
//!
//! No container runs here: the compose file is read as YAML and its command lines are parsed
//! with the binaries' clap parsers (`worker::config::Cli`, `kube_sim::cli::Args`).
//!
//! The rendered manifests are checked as text (`system_tests::chart`).

use std::collections::BTreeSet;
use std::time::Duration;

use system_tests::chart::{block, env_value, helm, kinds, only, render, scalar, CHART};
use system_tests::compose::{self, dockerfile_stages, mounted_source, strings};
use test_harness::tools::repo_root;

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Environment variables in the README's flag table (`| --flag | ENV | default | meaning |`).
fn readme_env_vars() -> Vec<String> {
    let names: Vec<String> = read("README.md")
        .lines()
        .filter(|l| l.starts_with("| `--"))
        // Optional settings (no default) are left to `extraEnv`.
        .filter(|l| l.split('|').nth(3).map(str::trim) != Some("—"))
        .filter_map(|l| l.split('|').nth(2))
        .map(|cell| cell.trim().trim_matches('`').to_owned())
        .filter(|name| !name.is_empty())
        .collect();
    for expected in [
        "NATS_URL",
        "KEPTN_STREAM",
        "CONSUMER_NAME",
        "MAX_CONCURRENT_TASKS",
        "HTTP_ADDR",
        "LOG_FORMAT",
        "ACK_WAIT",
        "LEASE_TTL",
        "SHUTDOWN_GRACE",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "README's flag table lost {expected}: {names:?}"
        );
    }
    names
}

fn duration(text: &str) -> Duration {
    worker::config::parse_duration(text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn chart_lints_clean_also_in_strict_mode() {
    for args in [
        vec!["lint", CHART],
        vec!["lint", "--strict", CHART],
        vec![
            "lint",
            "--strict",
            CHART,
            "--set",
            "replicaCount=1,rbac.create=false,serviceMonitor.enabled=true",
        ],
    ] {
        let (ok, stdout, stderr) = helm(&args);
        assert!(ok, "helm {args:?} failed:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("0 chart(s) failed"),
            "helm {args:?}:\n{stdout}"
        );
    }
}

#[test]
fn default_values_render_a_complete_worker_deployment() {
    let rendered = render(&[]);
    let deployment = only(&rendered, "Deployment");

    for name in readme_env_vars() {
        let value = env_value(&deployment, &name)
            .unwrap_or_else(|| panic!("Deployment does not set {name}:\n{deployment}"));
        assert!(!value.is_empty(), "{name} is empty");
    }
    assert_eq!(
        env_value(&deployment, "LOG_FORMAT").as_deref(),
        Some("json")
    );
    assert_eq!(
        env_value(&deployment, "HTTP_ADDR").as_deref(),
        Some("0.0.0.0:8080")
    );
    for name in ["ACK_WAIT", "LEASE_TTL", "SHUTDOWN_GRACE", "LEDGER_TTL"] {
        duration(&env_value(&deployment, name).expect("set"));
    }

    let liveness = block(&deployment, "livenessProbe");
    assert!(liveness.contains("path: /healthz\n"), "{liveness}");
    assert!(liveness.contains("port: http\n"), "{liveness}");
    let readiness = block(&deployment, "readinessProbe");
    assert!(readiness.contains("path: /readyz\n"), "{readiness}");
    assert!(readiness.contains("port: http\n"), "{readiness}");
    let ports = block(&deployment, "ports");
    assert!(
        ports.contains("- name: http\n") && ports.contains("containerPort: 8080\n"),
        "{ports}"
    );

    let grace = duration(&env_value(&deployment, "SHUTDOWN_GRACE").expect("set"));
    let termination: u64 = scalar(&deployment, "terminationGracePeriodSeconds")
        .expect("terminationGracePeriodSeconds is set")
        .parse()
        .expect("a number of seconds");
    assert!(
        Duration::from_secs(termination) > grace,
        "terminationGracePeriodSeconds {termination} must exceed SHUTDOWN_GRACE {grace:?}"
    );

    assert_eq!(scalar(&deployment, "replicas").as_deref(), Some("2"));
    assert_eq!(scalar(&deployment, "runAsNonRoot").as_deref(), Some("true"));
    assert_eq!(
        scalar(&deployment, "readOnlyRootFilesystem").as_deref(),
        Some("true")
    );
    assert_eq!(
        scalar(&deployment, "allowPrivilegeEscalation").as_deref(),
        Some("false")
    );
    let capabilities = block(&deployment, "capabilities");
    assert!(
        capabilities.contains("drop:\n") && capabilities.contains("- ALL\n"),
        "{capabilities}"
    );
    assert!(deployment.contains("mountPath: /tmp\n"), "{deployment}");
    assert!(
        deployment.contains("prometheus.io/scrape: \"true\"")
            && deployment.contains("prometheus.io/port: \"8080\""),
        "{deployment}"
    );
    for label in [
        "app.kubernetes.io/name: helm-service",
        "app.kubernetes.io/instance: hs",
        "app.kubernetes.io/version:",
        "app.kubernetes.io/managed-by: Helm",
    ] {
        assert!(deployment.contains(label), "missing label {label}");
    }

    let service = only(&rendered, "Service");
    assert!(
        service.contains("- name: http\n") && service.contains("port: 8080\n"),
        "{service}"
    );

    let kinds = kinds(&rendered);
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    assert!(
        !kinds.iter().any(|k| k == "ServiceMonitor"),
        "ServiceMonitor is off by default"
    );
    let role = only(&rendered, "ClusterRole");
    for needed in [
        "namespaces",
        "deployments",
        "services",
        "configmaps",
        "secrets",
        "serviceaccounts",
        "networking.istio.io",
        "virtualservices",
        "destinationrules",
    ] {
        assert!(role.contains(needed), "ClusterRole lacks {needed}:\n{role}");
    }
    let pdb = only(&rendered, "PodDisruptionBudget");
    assert_eq!(scalar(&pdb, "minAvailable").as_deref(), Some("1"));
}

#[test]
fn the_default_memory_limit_budgets_a_helm_process_per_task() {
    let defaults = system_tests::chart::memory_defaults();
    let setting = |name: &str| defaults.env(name).unwrap_or_else(|| panic!("{name} unset"));
    let concurrency: usize = setting("MAX_CONCURRENT_TASKS").parse().expect("a number");
    let helm_memory_limit =
        worker::config::parse_bytes(setting("HELM_MEMORY_LIMIT")).unwrap_or_else(|e| panic!("{e}"));
    // The worker's budget is the container's own limit, whatever it is set to.
    let budget: String = defaults
        .deployment
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "- name: MEMORY_BUDGET")
        .skip(1)
        .take_while(|l| !l.starts_with("- name:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        budget.contains("resourceFieldRef:\n")
            && budget.contains("containerName: helm-service\n")
            && budget.contains("resource: limits.memory\n"),
        "MEMORY_BUDGET must come from the container's memory limit:\n{budget}"
    );
    let slots =
        worker::memory::helm_slots(Some(defaults.limit_bytes), helm_memory_limit, concurrency);
    assert_eq!(
        (slots.slots, slots.over_budget),
        (concurrency, false),
        "a limit of {} bytes holds {} helm processes, not the {concurrency} of the default concurrency",
        defaults.limit_bytes,
        slots.slots
    );
    assert!(defaults.request_bytes <= defaults.limit_bytes);
    // Without a memory limit, nothing to budget by: no MEMORY_BUDGET (the worker then reads
    // its cgroup, which has no limit either).
    let unlimited = only(&render(&["--set", "resources.limits=null"]), "Deployment");
    assert!(!unlimited.contains("MEMORY_BUDGET"), "{unlimited}");
}

#[test]
fn single_replica_without_rbac_with_service_monitor() {
    let rendered = render(&[
        "--set",
        "replicaCount=1,rbac.create=false,serviceMonitor.enabled=true",
    ]);
    let kinds = kinds(&rendered);
    for absent in ["PodDisruptionBudget", "ClusterRole", "ClusterRoleBinding"] {
        assert!(
            !kinds.iter().any(|k| k == absent),
            "{absent} rendered: {kinds:?}"
        );
    }
    let deployment = only(&rendered, "Deployment");
    assert_eq!(scalar(&deployment, "replicas").as_deref(), Some("1"));
    let monitor = only(&rendered, "ServiceMonitor");
    assert!(
        monitor.contains("apiVersion: monitoring.coreos.com/v1"),
        "{monitor}"
    );
    assert!(
        monitor.contains("- port: http") && monitor.contains("path: /metrics"),
        "{monitor}"
    );
}

#[test]
fn termination_grace_follows_the_shutdown_grace_and_bad_durations_fail() {
    let deployment = only(&render(&["--set", "shutdownGrace=2m"]), "Deployment");
    assert_eq!(
        env_value(&deployment, "SHUTDOWN_GRACE").as_deref(),
        Some("2m")
    );
    assert_eq!(
        scalar(&deployment, "terminationGracePeriodSeconds").as_deref(),
        Some("130")
    );

    let (ok, _, stderr) = helm(&["template", "hs", CHART, "--set", "ackWait=30x"]);
    assert!(!ok, "ackWait=30x must not render");
    assert!(stderr.contains("ackWait"), "{stderr}");
}

/// The metric names registered in worker/src/metrics.rs: its `"helm_service_..."` literals,
/// and those of the trace exporter's counters it registers (`telemetry/export.rs`).
fn exported_metrics() -> BTreeSet<String> {
    let source = read("worker/src/metrics.rs") + &read("worker/src/telemetry/export.rs");
    let names: BTreeSet<String> = source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|literal| literal.starts_with("helm_service_"))
        .map(str::to_owned)
        .collect();
    assert!(
        names.len() >= 10,
        "found too few metric names in metrics.rs: {names:?}"
    );
    names
}

/// Every `helm_service_[a-z0-9_]+` token in `text`.
fn metric_tokens(text: &str) -> BTreeSet<String> {
    text.match_indices("helm_service_")
        .map(|(start, _)| {
            text[start..]
                .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// The tokens of `file` that are not exported metrics (histogram series suffixes allowed).
fn unknown_metrics(file: &str, text: &str, exported: &BTreeSet<String>) -> Vec<String> {
    let tokens = metric_tokens(text);
    assert!(!tokens.is_empty(), "{file} uses no helm_service_ metric");
    tokens
        .into_iter()
        .filter(|token| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| token.strip_suffix(suffix))
                .unwrap_or(token);
            !exported.contains(token) && !exported.contains(base)
        })
        .map(|token| format!("{file}: {token}"))
        .collect()
}

#[test]
fn alerts_and_dashboard_use_only_exported_metrics() {
    let exported = exported_metrics();
    let alerts = read("ops/monitoring/alerts.yaml");
    let dashboard_text = read("ops/monitoring/dashboard.json");

    let mut unknown = unknown_metrics("alerts.yaml", &alerts, &exported);
    unknown.extend(unknown_metrics(
        "dashboard.json",
        &dashboard_text,
        &exported,
    ));
    // The README documents metrics for operators: they must exist too.
    unknown.extend(unknown_metrics("README.md", &read("README.md"), &exported));
    assert!(
        unknown.is_empty(),
        "metric names the worker does not export: {unknown:?}\nexported: {exported:?}"
    );

    // Every alert tells the operator what it means and what to do.
    let count = |needle: &str| {
        alerts
            .lines()
            .filter(|l| l.trim().starts_with(needle))
            .count()
    };
    let rules = count("- alert:");
    assert!(rules >= 7, "expected at least 7 alerts, found {rules}");
    assert_eq!(count("summary:"), rules, "every alert needs a summary");
    assert_eq!(
        count("description:"),
        rules,
        "every alert needs a description"
    );
    assert!(alerts.starts_with('#') || alerts.starts_with("groups:"));
    assert!(alerts.lines().any(|l| l == "groups:"));

    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard_text).expect("dashboard.json is JSON");
    assert!(dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    let panels = dashboard["panels"].as_array().expect("panels");
    let exprs: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    for metric in [
        "helm_service_events_received_total",
        "helm_service_events_finished_total",
        "helm_service_event_duration_seconds_bucket",
        "helm_service_tasks_in_flight",
        "helm_service_pool_capacity",
        "helm_service_consumer_pending",
        "helm_service_consumer_ack_pending",
        "helm_service_dead_letters_total",
        "helm_service_redeliveries_total",
        "helm_service_duplicates_suppressed_total",
        "helm_service_lease_waits_total",
        "helm_service_lease_wait_seconds_bucket",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "no dashboard panel queries {metric}"
        );
    }
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate panel id"
        );
    }
}

#[test]
fn compose_and_dockerfile_match_the_worker() {
    let compose = read("docker-compose.yml");
    // The worker's environment (the first block); that the worker reads every key is checked
    // by `compose_builds_dockerfile_targets_and_runs_commands_the_binaries_take`.
    let env_block = block(&compose, "environment");
    let grace = duration(
        scalar(&env_block, "SHUTDOWN_GRACE")
            .expect("compose sets SHUTDOWN_GRACE")
            .as_str(),
    );
    let stop = duration(
        scalar(&compose, "stop_grace_period")
            .expect("compose sets stop_grace_period")
            .as_str(),
    );
    assert!(
        stop > grace,
        "stop_grace_period {stop:?} must exceed SHUTDOWN_GRACE {grace:?}"
    );
    assert!(compose.contains("dockerfile: ops/Dockerfile"));
    assert!(compose.contains("NATS_URL: nats://nats:4222"));

    let dockerfile = read("ops/Dockerfile");
    let worker_manifest = read("worker/Cargo.toml");
    assert!(
        worker_manifest.contains("name = \"helm-service\""),
        "the Dockerfile builds package and binary helm-service"
    );
    for needle in [
        "cargo build --release -p helm-service --locked",
        "target/release/helm-service",
        "RUN ops/setup.sh",
        "/src/.tools/bin/helm /usr/local/bin/helm",
        "USER 65532:65532",
        "EXPOSE 8080",
        "ENTRYPOINT [\"/usr/local/bin/helm-service\"]",
        "CMD [\"run\"]",
    ] {
        assert!(dockerfile.contains(needle), "ops/Dockerfile lacks {needle}");
    }
    // setup.sh installs into <repo>/.tools/bin, which the tools stage copies from.
    assert!(read("ops/setup.sh").contains("BIN=\"$TOOLS/bin\""));
    let ignore = read(".dockerignore");
    for excluded in ["target", ".tools", ".git"] {
        assert!(
            ignore.lines().any(|l| l.trim() == excluded),
            ".dockerignore must exclude {excluded}"
        );
    }
}

/// The container's environment variables whose value is a path below a mounted Secret, each
/// with the Secret and key mounted there: (variable, path, secret name, key).
fn secret_files(deployment: &str) -> Vec<(String, String, String, String)> {
    let lines: Vec<&str> = deployment.lines().map(str::trim).collect();
    let mut found = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix("- name: ") else {
            continue;
        };
        let Some(path) = lines
            .get(index + 1)
            .and_then(|next| next.strip_prefix("value: "))
            .map(|value| value.trim_matches('"'))
            .filter(|value| value.starts_with("/etc/helm-service/secrets/"))
        else {
            continue;
        };
        // The mount: `- name: <volume>` then `mountPath: <dir>` then `readOnly: true`.
        let (dir, file) = path.rsplit_once('/').expect("a file below a directory");
        let mount = lines
            .iter()
            .position(|l| *l == format!("mountPath: {dir}"))
            .unwrap_or_else(|| panic!("{name}: nothing mounted at {dir}:\n{deployment}"));
        assert_eq!(
            lines[mount + 1],
            "readOnly: true",
            "{name}: {dir} read-only"
        );
        let volume = lines[mount - 1]
            .strip_prefix("- name: ")
            .expect("the mount's volume");
        // The volume: `- name: <volume>`, `secret:`, `secretName:`, ..., `- key:`, `path:`.
        let start = lines
            .iter()
            .enumerate()
            .position(|(i, l)| *l == format!("- name: {volume}") && lines[i + 1] == "secret:")
            .unwrap_or_else(|| panic!("{name}: no Secret volume {volume}:\n{deployment}"));
        let secret = lines[start + 2]
            .strip_prefix("secretName: ")
            .expect("secretName")
            .to_owned();
        let item = lines[start..]
            .iter()
            .position(|l| l.starts_with("- key: "))
            .map(|offset| start + offset)
            .expect("an item");
        assert_eq!(lines[item + 1], format!("path: {file}"), "{name}: the file");
        let key = lines[item].trim_start_matches("- key: ").to_owned();
        found.push((name.to_owned(), path.to_owned(), secret, key));
    }
    found
}

#[test]
fn nats_credentials_and_tls_come_from_secrets_mounted_as_files() {
    let deployment = only(
        &render(&[
            "--set",
            "nats.auth.user=helm,nats.auth.passwordSecret.name=nats-password,\
             nats.tls.caSecret.name=nats-ca,nats.tls.clientSecret.name=nats-client,\
             nats.urlSecret.name=nats-url,\
             charts.resourceServiceTokenSecret.name=keptn-api-token,\
             charts.resourceServiceCaSecret.name=keptn-ca",
        ]),
        "Deployment",
    );
    let files = secret_files(&deployment);
    let by_env = |env: &str| {
        files
            .iter()
            .find(|(name, ..)| name == env)
            .map(|(_, _, secret, key)| (secret.as_str(), key.as_str()))
    };
    assert_eq!(
        by_env("NATS_PASSWORD_FILE"),
        Some(("nats-password", "password"))
    );
    assert_eq!(by_env("NATS_CA"), Some(("nats-ca", "ca.crt")));
    assert_eq!(by_env("NATS_CERT"), Some(("nats-client", "tls.crt")));
    assert_eq!(by_env("NATS_KEY"), Some(("nats-client", "tls.key")));
    assert_eq!(
        by_env("RESOURCE_SERVICE_TOKEN_FILE"),
        Some(("keptn-api-token", "token"))
    );
    assert_eq!(by_env("RESOURCE_SERVICE_CA"), Some(("keptn-ca", "ca.crt")));
    assert_eq!(env_value(&deployment, "NATS_USER").as_deref(), Some("helm"));
    // The URL from its Secret, not as a value.
    assert_eq!(env_value(&deployment, "NATS_URL"), None);
    let url: String = deployment
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "- name: NATS_URL")
        .skip(1)
        .take(4)
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        url, "valueFrom:\nsecretKeyRef:\nname: nats-url\nkey: url\n",
        "{deployment}"
    );
    // The worker accepts what the chart sets: every flag combination parses.
    let mut args = vec!["helm-service".to_owned(), "run".to_owned()];
    for (name, path, ..) in &files {
        let flag = match name.as_str() {
            "NATS_PASSWORD_FILE" => "--nats-password-file",
            "NATS_CA" => "--nats-ca",
            "NATS_CERT" => "--nats-cert",
            "NATS_KEY" => "--nats-key",
            "RESOURCE_SERVICE_TOKEN_FILE" => "--resource-service-token-file",
            "RESOURCE_SERVICE_CA" => "--resource-service-ca",
            other => panic!("unexpected {other}"),
        };
        args.extend([flag.to_owned(), path.clone()]);
    }
    args.extend(["--nats-user".to_owned(), "helm".to_owned()]);
    use clap::Parser as _;
    worker::config::Cli::try_parse_from(&args).expect("the worker takes the chart's settings");

    // By default nothing is mounted and the URL is a value.
    let defaults = only(&render(&[]), "Deployment");
    assert!(secret_files(&defaults).is_empty());
    assert!(!defaults.contains("/etc/helm-service/secrets/"));
    assert_eq!(
        env_value(&defaults, "NATS_URL").as_deref(),
        Some("nats://nats:4222")
    );
}

#[test]
fn an_https_collector_takes_its_ca_and_client_certificate_from_secrets_mounted_as_files() {
    let deployment = only(
        &render(&[
            "--set",
            "tracing.otlpEndpoint=https://collector.observability:4317,\
             tracing.tls.caSecret.name=otlp-ca,tracing.tls.clientSecret.name=otlp-client",
        ]),
        "Deployment",
    );
    let files = secret_files(&deployment);
    let by_env = |env: &str| {
        files
            .iter()
            .find(|(name, ..)| name == env)
            .map(|(_, path, secret, key)| (path.clone(), secret.as_str(), key.as_str()))
    };
    let (ca, ..) = by_env("OTEL_EXPORTER_OTLP_CERTIFICATE").expect("the CA");
    assert_eq!(
        by_env("OTEL_EXPORTER_OTLP_CERTIFICATE").map(|(_, s, k)| (s, k)),
        Some(("otlp-ca", "ca.crt"))
    );
    let (cert, secret, key) = by_env("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE").expect("cert");
    assert_eq!((secret, key), ("otlp-client", "tls.crt"));
    let (private_key, secret, key) = by_env("OTEL_EXPORTER_OTLP_CLIENT_KEY").expect("key");
    assert_eq!((secret, key), ("otlp-client", "tls.key"));
    // The worker reads what the chart sets as the files of an https:// endpoint.
    let env: Vec<(String, String)> = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_SERVICE_NAME",
    ]
    .into_iter()
    .map(|name| (name.to_owned(), env_value(&deployment, name).expect(name)))
    .chain(
        files
            .iter()
            .map(|(name, path, ..)| (name.clone(), path.clone())),
    )
    .collect();
    let export = worker::telemetry::traces::trace_export(|name| {
        env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    })
    .expect("the worker takes the chart's settings")
    .expect("traces on");
    let tls = export.tls.expect("TLS");
    assert_eq!(tls.ca.map(|f| f.path), Some(ca.into()));
    let (client_cert, client_key) = tls.client.expect("mutual TLS");
    assert_eq!(
        (client_cert.path, client_key.path),
        (cert.into(), private_key.into())
    );
}

#[test]
fn nats_credentials_are_one_kind_and_complete() {
    for (values, expected) in [
        (
            "nats.auth.tokenSecret.name=a,nats.auth.nkeySecret.name=b",
            "give one of",
        ),
        (
            "nats.auth.credsSecret.name=a,nats.auth.user=u,nats.auth.passwordSecret.name=p",
            "give one of",
        ),
        ("nats.auth.user=u", "needs nats.auth.passwordSecret"),
        ("nats.auth.passwordSecret.name=p", "needs nats.auth.user"),
        ("nats.replicas=0", "replicas"),
    ] {
        let (ok, _, stderr) = helm(&["template", "hs", CHART, "--set", values]);
        assert!(!ok, "{values} must not render");
        assert!(stderr.contains(expected), "{values}: {stderr}");
    }
}

#[test]
fn the_nats_cluster_example_renders_a_seed_list_with_three_replicas() {
    let example = "ops/examples/values-nats-cluster-r3.yaml";
    let (ok, stdout, stderr) = helm(&["lint", "--strict", CHART, "-f", example]);
    assert!(ok, "{stdout}\n{stderr}");
    let deployment = only(&render(&["-f", example]), "Deployment");
    assert_eq!(
        env_value(&deployment, "JETSTREAM_REPLICAS").as_deref(),
        Some("3")
    );
    assert_eq!(
        env_value(&deployment, "NATS_TLS_REQUIRED").as_deref(),
        Some("true")
    );
    let url = env_value(&deployment, "NATS_URL").expect("the seed list");
    let seeds = worker::nats::seeds::SeedList::parse(&url).expect("the worker parses it");
    assert_eq!(seeds.servers().len(), 3, "{url}");
    let files = secret_files(&deployment);
    let envs: Vec<&str> = files.iter().map(|(name, ..)| name.as_str()).collect();
    assert_eq!(envs, ["NATS_CREDS", "NATS_CA"]);
}

/// Every environment variable the helm-service binary reads, over all its subcommands.
fn worker_env_vars() -> BTreeSet<String> {
    fn collect(command: &clap::Command, into: &mut BTreeSet<String>) {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                into.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            collect(sub, into);
        }
    }
    use clap::CommandFactory as _;
    let mut vars = BTreeSet::new();
    collect(&worker::config::Cli::command(), &mut vars);
    vars
}

/// `command` as the helm-service binary parses it.
fn worker_command(args: &[String]) -> worker::config::Cli {
    use clap::Parser as _;
    worker::config::Cli::try_parse_from(
        std::iter::once("helm-service".to_owned()).chain(args.iter().cloned()),
    )
    .unwrap_or_else(|e| panic!("helm-service does not take {args:?}:\n{e}"))
}

/// `command` as the kube-sim binary parses it.
fn kube_sim_command(args: &[String]) -> kube_sim::cli::Args {
    use clap::Parser as _;
    kube_sim::cli::Args::try_parse_from(
        std::iter::once("kube-sim".to_owned()).chain(args.iter().cloned()),
    )
    .unwrap_or_else(|e| panic!("kube-sim does not take {args:?}:\n{e}"))
}

#[test]
fn compose_builds_dockerfile_targets_and_runs_commands_the_binaries_take() {
    let compose = compose::load();
    let services = compose["services"].as_object().expect("services");
    let declared_volumes: BTreeSet<&str> = compose["volumes"]
        .as_object()
        .map(|v| v.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let worker_vars = worker_env_vars();
    let mut seen_targets = BTreeSet::new();
    for (name, service) in services {
        let image = service["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no image"));
        // Images of our own are built here, never pulled (nothing publishes them).
        let target = if service["build"].is_null() {
            assert!(
                !image.ends_with(":dev"),
                "{name}: {image} is ours but not built"
            );
            None
        } else {
            let build = &service["build"];
            assert_eq!(
                build["context"], ".",
                "{name}: builds from the repository root"
            );
            let dockerfile = build["dockerfile"].as_str().expect("build.dockerfile");
            let stages = dockerfile_stages(&read(dockerfile));
            let target = build["target"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: build.target"));
            assert!(
                stages.contains(target),
                "{name}: {dockerfile} has no stage {target}: {stages:?}"
            );
            seen_targets.insert((target.to_owned(), image.to_owned()));
            Some(target)
        };
        // Nothing here authenticates (NATS, kube-sim, the metrics port): published ports are
        // bound to the host's loopback only.
        for port in service["ports"].as_array().into_iter().flatten() {
            let port = port.as_str().unwrap_or_default();
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name}: port {port:?} is published on every interface"
            );
        }
        let command = strings(&service["command"], &format!("{name}.command"));
        match target {
            Some("runtime") => {
                worker_command(&command);
                let env = service["environment"].as_object();
                for key in env.into_iter().flat_map(|env| env.keys()) {
                    assert!(
                        key == "RUST_LOG" || worker_vars.contains(key),
                        "{name} sets {key}, which helm-service does not read"
                    );
                }
            }
            Some("kube-sim") => {
                kube_sim_command(&command)
                    .config()
                    .expect("kube-sim takes its settings");
            }
            Some(other) => panic!("{name}: no check for target {other}"),
            None => {}
        }
        if let Some(test) = service.get("healthcheck").map(|h| &h["test"]) {
            let test = strings(test, &format!("{name}.healthcheck.test"));
            assert_eq!(test[0], "CMD", "{name}: exec-form health check");
            if test[1] == "helm-service" {
                assert_eq!(
                    target,
                    Some("runtime"),
                    "{name}: helm-service is in the runtime image"
                );
                worker_command(&test[2..]);
            }
        }
        for (dependency, condition) in service["depends_on"].as_object().into_iter().flatten() {
            let other = services
                .get(dependency)
                .unwrap_or_else(|| panic!("{name} depends on unknown {dependency}"));
            match condition["condition"].as_str() {
                Some("service_started") => {}
                Some("service_healthy") => assert!(
                    other.get("healthcheck").is_some(),
                    "{name} waits for {dependency} to be healthy, which has no health check"
                ),
                Some("service_completed_successfully") => assert_eq!(
                    other["restart"], "no",
                    "{name} waits for {dependency} to complete: it must be one-shot"
                ),
                condition => panic!("{name}: depends_on {dependency}: condition {condition:?}"),
            }
        }
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let volume = volume.as_str().expect("short volume syntax");
            let source = volume.split(':').next().expect("a source");
            match source.strip_prefix("./") {
                Some(relative) => assert!(
                    repo_root().join(relative).exists(),
                    "{name} mounts {source}, which does not exist"
                ),
                None => assert!(
                    declared_volumes.contains(source),
                    "{name} mounts volume {source}, not declared"
                ),
            }
        }
    }
    // One image per target, each target under one name.
    let images: BTreeSet<&str> = seen_targets
        .iter()
        .map(|(_, image)| image.as_str())
        .collect();
    assert_eq!(images.len(), seen_targets.len(), "{seen_targets:?}");
    assert!(seen_targets.iter().any(|(target, _)| target == "kube-sim"));
    assert!(seen_targets.iter().any(|(target, _)| target == "runtime"));
}

#[test]
fn compose_points_the_worker_at_kube_sim_and_the_demo_deploys_the_example() {
    let compose = compose::load();
    let services = &compose["services"];
    // kube-sim listens where the worker's kubeconfig says, and is healthy once it has
    // written its own kubeconfig (which it does once it listens).
    let sim = &services["kube-sim"];
    let sim_args = kube_sim_command(&strings(&sim["command"], "kube-sim.command"));
    assert_eq!(
        strings(&sim["healthcheck"]["test"], "kube-sim.healthcheck.test"),
        [
            "CMD",
            "test",
            "-s",
            &sim_args.kubeconfig_out.display().to_string()
        ]
    );
    let worker = &services["helm-service"];
    let kubeconfig = worker["environment"]["KUBECONFIG"]
        .as_str()
        .expect("KUBECONFIG");
    let source = mounted_source(worker, kubeconfig).expect("the kubeconfig is mounted");
    let mounted: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&source).expect("the kubeconfig file"))
            .expect("a YAML kubeconfig");
    let server = format!("http://kube-sim:{}", sim_args.listen.port());
    assert_eq!(
        mounted,
        kube_sim::kubeconfig::kubeconfig(&server, &[]),
        "{} must be what kube-sim writes for itself, at {server}",
        source.display()
    );
    for dependency in ["nats", "kube-sim"] {
        assert_eq!(
            worker["depends_on"][dependency]["condition"],
            "service_healthy"
        );
    }
    // The worker is healthy once the consumer exists, so the demo's event is delivered.
    let health = strings(
        &worker["healthcheck"]["test"],
        "helm-service.healthcheck.test",
    );
    assert!(matches!(
        worker_command(&health[2..]).command,
        worker::config::Command::Status(_)
    ));

    // The demo pushes the example chart for the service the example event deploys, then
    // sends that event once the worker is healthy.
    let chart = &services["demo-chart"];
    let worker::config::Command::Charts(charts) =
        worker_command(&strings(&chart["command"], "demo-chart.command")).command
    else {
        panic!("demo-chart runs `charts`");
    };
    let worker::charts::cli::ChartsCommand::Push {
        project,
        stage,
        service,
        path,
    } = charts.command
    else {
        panic!("demo-chart runs `charts push`");
    };
    let chart_dir =
        mounted_source(chart, &path.display().to_string()).expect("the chart is mounted");
    assert!(
        chart_dir.join("Chart.yaml").exists(),
        "{}",
        chart_dir.display()
    );
    let sender = &services["demo-event"];
    let worker::config::Command::Send(send) =
        worker_command(&strings(&sender["command"], "demo-event.command")).command
    else {
        panic!("demo-event runs `send`");
    };
    assert!(
        send.wait > Duration::ZERO,
        "the demo waits for the finished reply"
    );
    let event_file = mounted_source(sender, &send.file).expect("the event is mounted");
    let event: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&event_file).expect("the event file"))
            .expect("JSON");
    assert_eq!(event["type"], "sh.keptn.event.deployment.triggered");
    assert_eq!(
        (
            &event["data"]["project"],
            &event["data"]["stage"],
            &event["data"]["service"]
        ),
        (
            &serde_json::json!(project),
            &serde_json::json!(stage),
            &serde_json::json!(service)
        )
    );
    assert_eq!(
        sender["depends_on"]["demo-chart"]["condition"],
        "service_completed_successfully"
    );
    assert_eq!(
        sender["depends_on"]["helm-service"]["condition"],
        "service_healthy"
    );
}

/// The stage `name` of a Dockerfile: its lines from its `FROM` to the next.
fn stage<'a>(dockerfile: &'a str, name: &str) -> Vec<&'a str> {
    let mut lines = dockerfile.lines().skip_while(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        !(words.first() == Some(&"FROM") && words.last() == Some(&name))
    });
    let from = lines.next().unwrap_or_else(|| panic!("no stage {name}"));
    std::iter::once(from)
        .chain(lines.take_while(|line| !line.starts_with("FROM ")))
        .collect()
}

/// The exec-form list of an instruction (`ENTRYPOINT [...]`, `CMD [...]`) of a stage.
fn instruction(stage: &[&str], keyword: &str) -> Vec<String> {
    let line = stage
        .iter()
        .find_map(|line| line.strip_prefix(&format!("{keyword} ")))
        .unwrap_or_else(|| panic!("no {keyword} in {stage:?}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{keyword} {line}: {e}"))
}

#[test]
fn each_image_target_runs_its_binary_with_arguments_it_takes() {
    let dockerfile = read("ops/Dockerfile");
    let stages = dockerfile_stages(&dockerfile);
    // The runtime image is the default target: the last stage.
    let last = dockerfile
        .lines()
        .rev()
        .find(|l| l.starts_with("FROM "))
        .expect("a stage");
    assert!(last.ends_with(" AS runtime"), "{last}");

    let runtime = stage(&dockerfile, "runtime");
    assert_eq!(
        instruction(&runtime, "ENTRYPOINT"),
        ["/usr/local/bin/helm-service"]
    );
    worker_command(&instruction(&runtime, "CMD"));

    assert!(stages.contains("kube-sim-build"), "{stages:?}");
    let build = stage(&dockerfile, "kube-sim-build").join("\n");
    assert!(
        build.contains("cargo build --release -p kube-sim --bin kube-sim --locked"),
        "{build}"
    );
    assert!(
        build.contains("install -D -m 0755 target/release/kube-sim /out/kube-sim"),
        "{build}"
    );
    let sim = stage(&dockerfile, "kube-sim");
    assert!(sim.contains(&"COPY --from=kube-sim-build /out/kube-sim /usr/local/bin/kube-sim"));
    assert!(
        sim.contains(&"USER 65532:65532"),
        "kube-sim runs as non-root too"
    );
    assert_eq!(instruction(&sim, "ENTRYPOINT"), ["/usr/local/bin/kube-sim"]);
    let args = kube_sim_command(&instruction(&sim, "CMD"));
    assert!(sim.contains(&format!("EXPOSE {}", args.listen.port()).as_str()));
    assert!(
        !args.listen.ip().is_loopback(),
        "reachable from the other containers"
    );
    // kube-sim's sources are in the build context.
    assert!(!read(".dockerignore").lines().any(|l| l.trim() == "tests"));
    assert!(repo_root().join("tests/kube-sim/Cargo.toml").exists());
}
