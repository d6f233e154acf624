//! The operations files agree with the worker: the Helm chart lints and renders with the real
//! `helm` CLI into a Deployment that sets every environment variable the README documents,
//! probes the worker's endpoints and outlives its shutdown grace; the alert rules and the
//! Grafana dashboard use only metric names the worker exports; docker-compose and the
//! Dockerfile match the binary and the tools setup.
//!
//! The rendered manifests are checked as text (`system_tests::chart`).

use std::collections::BTreeSet;
use std::time::Duration;

use system_tests::chart::{block, env_value, helm, kinds, only, render, scalar, CHART};
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
    let readme_vars = readme_env_vars();
    let compose = read("docker-compose.yml");
    // Environment keys of the helm-service service: `      KEY: value` under `environment:`.
    let env_block = block(&compose, "environment");
    for line in env_block.lines().filter(|l| !l.is_empty()) {
        let key = line.split(':').next().expect("key").trim();
        assert!(
            key == "RUST_LOG" || readme_vars.iter().any(|v| v == key),
            "docker-compose.yml sets {key}, which the worker does not read"
        );
    }
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
