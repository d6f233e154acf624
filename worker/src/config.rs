//! Command-line and environment configuration.
//!
//! Every flag has an environment fallback so the same binary runs unchanged under
//! docker-compose, a Helm chart or a developer shell.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::deploy::ownership::{NamespacePattern, NamespacePolicy};
use crate::deploy::settings::{Deadlines, DeploySettings, PerStage, StageDeadlines, Traffic};
use crate::deploy::traffic::{GatewayRef, TrafficLayer};
use crate::deploy::uris::Ingress;
use crate::nats::connect::NatsArgs;
use crate::nats::topology::{
    Limit, StorageLimits, DEFAULT_CONSUMER, DEFAULT_KEPTN_STREAM, DEFAULT_STATE_PREFIX,
};

/// Default of `--scaling-max-replicas`: a remediation action is a nudge, not an autoscaler;
/// services that run more replicas set their own bound.
pub const DEFAULT_SCALING_MAX_REPLICAS: u32 = 50;

/// Keptn helm-service: deploys, releases and rolls back Helm charts driven by Keptn
/// CloudEvents on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "helm-service", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker: consume Keptn events from JetStream and answer them.
    Run(Box<RunConfig>),
    /// Publish one Keptn event (a CloudEvent JSON file) and print the replies to it:
    /// a quick way to try a deployment by hand or check a running installation.
    Send(SendConfig),
    /// Manage the charts helm-service deploys: push a chart for a service, list charts.
    Charts(crate::charts::cli::ChartsArgs),
    /// What the workers are doing: per release the holder, the event in progress and its
    /// step, the events waiting; the consumer's counts; the dead letters.
    Status(crate::operator::status::StatusArgs),
    /// One service in one stage: its release record, inventory entry and Helm revisions.
    Releases(crate::operator::releases::ReleasesArgs),
    /// What the worker could not process: list, show, and replay once the cause is fixed.
    DeadLetters(crate::operator::dead_letters::DeadLettersArgs),
}

/// Settings of `helm-service send`.
#[derive(Debug, Clone, Args)]
pub struct SendConfig {
    #[command(flatten)]
    pub nats: NatsArgs,

    /// The event to publish: a structured-mode CloudEvent JSON file (`-` for stdin).
    #[arg(long)]
    pub file: String,

    /// How long to wait for the `.finished` reply (0s: do not wait).
    #[arg(long, default_value = "60s", value_parser = parse_duration_or_zero)]
    pub wait: Duration,
}

fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    if text
        .trim_start_matches('0')
        .trim_end_matches(['s', 'm', 'h', 'd'])
        .is_empty()
    {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Settings of `helm-service run`.
#[derive(Debug, Clone, Args)]
pub struct RunConfig {
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Name of the JetStream stream holding Keptn events (subjects `sh.keptn.>`);
    /// created when absent.
    #[arg(long, env = "KEPTN_STREAM", default_value = DEFAULT_KEPTN_STREAM)]
    pub stream: String,

    /// Name of the durable pull consumer shared by all replicas.
    #[arg(
        long = "consumer",
        env = "CONSUMER_NAME",
        default_value = DEFAULT_CONSUMER
    )]
    pub consumer: String,

    /// Tasks one replica runs at the same time; the replica pulls only as many
    /// messages as it has free slots. An event waiting for a busy release lends its
    /// slot to other releases meanwhile; a replica holds at most five events per slot.
    #[arg(long, env = "MAX_CONCURRENT_TASKS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,

    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// How long JetStream waits for an ack before redelivering a message. Long tasks
    /// stay alive through in-progress acks sent every third of this.
    #[arg(long, env = "ACK_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub ack_wait: Duration,

    /// Time after which the holder of a release that stopped writing its record (a
    /// crashed replica) is taken over; a live holder rewrites it every third of this.
    #[arg(long, env = "LEASE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub lease_ttl: Duration,

    /// A replica keeps (parks) a release after finishing an event on it; its next
    /// event on the same release within this time starts without a write to the
    /// release record. Another replica that wants a parked release asks for it over
    /// NATS and gets it at once; a crashed replica's parked releases are taken over
    /// after --lease-ttl. At most a third of --lease-ttl; 0 turns parking off.
    #[arg(long, env = "RELEASE_LINGER", default_value = "2s", value_parser = parse_duration_or_zero)]
    pub release_linger: Duration,

    /// How long SIGTERM waits for in-flight tasks before handing them back for
    /// redelivery.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "25s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Largest event accepted; larger messages go to the dead-letter stream.
    #[arg(long, env = "MAX_EVENT_BYTES", default_value_t = 512 * 1024)]
    pub max_event_bytes: usize,

    /// How long a release record (event progress and the memory of the last 64
    /// events completed on the release, for recognising duplicates) is kept after
    /// its last change.
    // The flag and variable keep the name they were deployed with.
    #[arg(long = "ledger-ttl", env = "LEDGER_TTL", default_value = "7d", value_parser = parse_duration)]
    pub release_record_ttl: Duration,

    /// Deliveries of one event after which a task failing for transient reasons
    /// (NATS unavailable, lease lost) is given up: answered errored and dead-lettered.
    #[arg(long, env = "MAX_DELIVERIES", default_value_t = 20)]
    pub max_deliveries: u32,

    /// Prefix of the JetStream bucket and stream this service owns (`-releases`,
    /// `-dlq`), so two installations can share one NATS account.
    #[arg(long, env = "STATE_PREFIX", default_value = DEFAULT_STATE_PREFIX)]
    pub state_prefix: String,

    /// Test hook, not for production: the process kills itself (SIGKILL) right after the
    /// named step of a task is recorded, so tests can prove a redelivery resumes there.
    #[arg(long, env = "HELM_SERVICE_TEST_CRASH_AFTER_STEP", hide = true)]
    pub test_crash_after_step: Option<String>,

    #[command(flatten)]
    pub charts: crate::charts::config::ChartStoreConfig,

    #[command(flatten)]
    pub deploy: DeployConfig,

    #[command(flatten)]
    pub limits: StorageLimitsConfig,

    #[command(flatten)]
    pub memory: MemoryConfig,

    #[command(flatten)]
    pub progress: crate::progress::ProgressConfig,
}

/// The pod's memory: the worker and the helm processes it starts share one limit (see the
/// `memory` module for how the budget is counted).
#[derive(Debug, Clone, Args)]
pub struct MemoryConfig {
    /// Memory the worker and its helm processes may use together; it bounds how many helm
    /// processes run at once. Unset: the limit of the worker's cgroup (a container's memory
    /// limit), or no bound beyond --concurrency without one. Takes bytes or a size.
    #[arg(long, env = "MEMORY_BUDGET", value_parser = parse_bytes)]
    pub memory_budget: Option<u64>,

    /// GOMEMLIMIT of every helm process: helm's Go garbage collector works harder rather
    /// than grow its heap past it (a soft limit: a chart that needs more still deploys,
    /// slower). With helm's code, what each helm process counts for in the budget.
    #[arg(long, env = "HELM_MEMORY_LIMIT", default_value = "32MiB", value_parser = parse_bytes)]
    pub helm_memory_limit: u64,
}

/// Size and age limits of the streams and buckets the worker creates, so none grows without
/// bound. Byte sizes take `KiB`, `MiB`, `GiB` (or `KB`, `MB`, `GB`); durations `d`, `h`, ...
/// JetStream reserves each size limit up front, so the defaults together (about 2.8 GiB) fit
/// a small NATS server's file store (the NATS chart's default volume is 10 GiB).
#[derive(Debug, Clone, Args)]
pub struct StorageLimitsConfig {
    /// Age limit of the Keptn stream, applied only when the worker creates it (a Keptn
    /// control plane owns its own).
    #[arg(long, env = "KEPTN_STREAM_MAX_AGE", default_value = "14d", value_parser = parse_duration)]
    pub keptn_stream_max_age: Duration,

    /// Size limit of the Keptn stream, applied only when the worker creates it; the oldest
    /// events go first.
    #[arg(long, env = "KEPTN_STREAM_MAX_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub keptn_stream_max_bytes: u64,

    /// How long dead letters are kept.
    #[arg(long, env = "DEAD_LETTER_MAX_AGE", default_value = "30d", value_parser = parse_duration)]
    pub dead_letter_max_age: Duration,

    /// Size limit of the dead-letter stream; the oldest dead letters go first.
    #[arg(long, env = "DEAD_LETTER_MAX_BYTES", default_value = "512MiB", value_parser = parse_bytes)]
    pub dead_letter_max_bytes: u64,

    /// Size limit of the release-record bucket (records also expire after --ledger-ttl).
    /// When it is full, taking a release fails and events are handed back, never lost.
    #[arg(long, env = "RELEASE_RECORDS_MAX_BYTES", default_value = "256MiB", value_parser = parse_bytes)]
    pub release_records_max_bytes: u64,

    /// Size limit of the inventory bucket (what is deployed, per service and stage).
    #[arg(long, env = "INVENTORY_MAX_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub inventory_max_bytes: u64,

    /// Size limit of the chart bucket (with --chart-store nats).
    #[arg(long, env = "CHART_BUCKET_MAX_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub chart_bucket_max_bytes: u64,

    /// JetStream replicas of every stream and bucket the worker creates: 1 on a single
    /// server, 3 on a three-server cluster (each copy reserves the size limits on its server).
    /// Applied to the worker's own streams and buckets on every start; the Keptn stream gets
    /// it only when the worker creates it.
    #[arg(long, env = "JETSTREAM_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: u8,
}

impl StorageLimitsConfig {
    /// The limits; release records expire `release_record_ttl` (`--ledger-ttl`) after their
    /// last change. Everything gets `--replicas`.
    pub fn limits(&self, release_record_ttl: Duration) -> StorageLimits {
        let limit = |max_age, max_bytes| {
            Limit::new(max_age, max_bytes).with_replicas(usize::from(self.replicas))
        };
        StorageLimits {
            keptn_stream: limit(self.keptn_stream_max_age, self.keptn_stream_max_bytes),
            dead_letters: limit(self.dead_letter_max_age, self.dead_letter_max_bytes),
            release_records: limit(release_record_ttl, self.release_records_max_bytes),
            inventory: limit(Duration::ZERO, self.inventory_max_bytes),
            chart_bucket: limit(Duration::ZERO, self.chart_bucket_max_bytes),
        }
    }
}

/// Settings of the deployment tasks: where Helm and the cluster are, how long Helm calls and
/// rollouts may take, how URIs and the generated routing are shaped. Resolved into
/// [`DeploySettings`] by [`DeployConfig::settings`].
#[derive(Debug, Clone, Args)]
pub struct DeployConfig {
    /// The helm binary (Helm 4, or Helm 3.14 and newer).
    #[arg(long, env = "HELM_BIN", default_value = "helm")]
    pub helm_bin: PathBuf,

    #[command(flatten)]
    pub cluster: crate::cluster::ClusterArgs,

    /// Longest one helm call (upgrade, rollback, uninstall, ...) may take before it is
    /// killed; waiting for pods is not part of it (see --rollout-timeout).
    #[arg(long, env = "HELM_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub helm_timeout: Duration,

    /// Longest a deployment's pods may take to become ready before the deployment is
    /// failed and the release rolled back to its last good revision.
    #[arg(long, env = "ROLLOUT_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub rollout_timeout: Duration,

    /// Per-stage --helm-timeout, as STAGE=DURATION (repeat the flag, or comma-separate
    /// in the environment), e.g. `production=15m`.
    #[arg(long, env = "STAGE_HELM_TIMEOUTS", value_delimiter = ',', value_parser = parse_stage_duration)]
    pub stage_helm_timeout: Vec<(String, Duration)>,

    /// Per-stage --rollout-timeout, as STAGE=DURATION, e.g. `dev=1m,production=30m`.
    #[arg(long, env = "STAGE_ROLLOUT_TIMEOUTS", value_delimiter = ',', value_parser = parse_stage_duration)]
    pub stage_rollout_timeout: Vec<(String, Duration)>,

    /// How long a new pod may stay in a state that does not fix itself (ErrImagePull,
    /// ImagePullBackOff, InvalidImageName, CreateContainerConfigError, CrashLoopBackOff after
    /// 3 restarts, Unschedulable) before the deployment is failed and the release restored,
    /// instead of waiting out --rollout-timeout; `0` turns it off.
    #[arg(long, env = "FAIL_FAST_AFTER", default_value = "60s", value_parser = parse_duration_or_zero)]
    pub fail_fast_after: Duration,

    /// Per-stage --fail-fast-after, as STAGE=DURATION (`0` off), e.g. `production=3m`.
    #[arg(long, env = "STAGE_FAIL_FAST_AFTER", value_delimiter = ',', value_parser = parse_stage_duration_or_zero)]
    pub stage_fail_fast_after: Vec<(String, Duration)>,

    /// Template of the public URI reported for a deployment. Variables:
    /// ${INGRESS_PROTOCOL}, ${SERVICE}, ${PROJECT}, ${STAGE}, ${INGRESS_HOSTNAME_SUFFIX},
    /// ${INGRESS_PORT}.
    #[arg(long, env = "HOSTNAME_TEMPLATE", default_value = Ingress::DEFAULT_TEMPLATE)]
    pub hostname_template: String,

    /// Protocol of public URIs.
    #[arg(long, env = "INGRESS_PROTOCOL", default_value = "http")]
    pub ingress_protocol: String,

    /// Domain suffix of public host names.
    #[arg(
        long,
        env = "INGRESS_HOSTNAME_SUFFIX",
        default_value = "svc.cluster.local"
    )]
    pub ingress_hostname_suffix: String,

    /// Port of public URIs.
    #[arg(long, env = "INGRESS_PORT", default_value_t = 80)]
    pub ingress_port: u16,

    /// Istio gateway the generated VirtualServices bind to (besides `mesh`).
    #[arg(
        long,
        env = "ISTIO_GATEWAY",
        default_value = "public-gateway.istio-system"
    )]
    pub istio_gateway: String,

    /// How traffic reaches services and how blue/green moves it: `istio` (VirtualService
    /// and DestinationRules), `gateway-api` (an HTTPRoute attached to --gateway) or `service`
    /// (no mesh: the chart's Service selects the canary's or the primary's pods).
    #[arg(long, env = "TRAFFIC", default_value = "istio", value_parser = TrafficLayer::parse)]
    pub traffic: TrafficLayer,

    /// Per-stage --traffic, as STAGE=LAYER, e.g. `dev=service,production=istio`.
    #[arg(long, env = "STAGE_TRAFFIC", value_delimiter = ',', value_parser = parse_stage_traffic)]
    pub stage_traffic: Vec<(String, TrafficLayer)>,

    /// Run the chart's tests (`helm test`) after a deployment's rollout: failing tests end
    /// the deployment `fail`, with the end of the failed test pod's log, and restore the
    /// release's last good revision.
    #[arg(long, env = "HELM_TEST")]
    pub helm_test: bool,

    /// Per-stage --helm-test, as STAGE=true|false, e.g. `production=true`.
    #[arg(long, env = "STAGE_HELM_TEST", value_delimiter = ',', value_parser = parse_stage_bool)]
    pub stage_helm_test: Vec<(String, bool)>,

    /// Roll `direct` and `user_managed` services back too: `rollback.triggered` and a
    /// `release.triggered` with result fail put the user release back to the revision before
    /// the current deployment's (`helm rollback`). Off: they change nothing, as in the
    /// reference.
    #[arg(long, env = "ROLLBACK_NON_BLUEGREEN")]
    pub rollback_non_bluegreen: bool,

    /// The Gateway the `gateway-api` layer's HTTPRoutes attach to, as NAMESPACE/NAME.
    #[arg(long, env = "GATEWAY", value_parser = GatewayRef::parse)]
    pub gateway: Option<GatewayRef>,

    /// Most replicas the scaling remediation action may set, however often it is asked to
    /// add more (a replica count already above it is left as it is).
    #[arg(
        long,
        env = "SCALING_MAX_REPLICAS",
        default_value_t = DEFAULT_SCALING_MAX_REPLICAS,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub scaling_max_replicas: u32,

    /// Namespaces never deployed to, besides the always protected `kube-*`, `default` and
    /// the worker's own: names, or prefixes ending in `*`, comma separated.
    #[arg(long, env = "PROTECTED_NAMESPACES", value_delimiter = ',',
          default_value = "istio-system", value_parser = NamespacePattern::parse)]
    pub protected_namespaces: Vec<NamespacePattern>,

    /// Existing namespaces without helm-service's ownership labels (`keptn.sh/project`,
    /// `keptn.sh/stage`) that it may deploy into, labelling them: names, or prefixes ending
    /// in `*` (`*` for any), comma separated. By default only namespaces it created are used.
    #[arg(long, env = "ADOPT_NAMESPACES", value_delimiter = ',', value_parser = NamespacePattern::parse)]
    pub adopt_namespaces: Vec<NamespacePattern>,

    /// The namespace the worker runs in, which it never deploys to (in a pod: from the
    /// downward API, else the service account's namespace file).
    #[arg(long, env = "POD_NAMESPACE")]
    pub own_namespace: Option<String>,
}

/// `None` for zero (a setting turned off).
fn non_zero(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

/// Where a pod's service account token says the pod runs.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

fn parse_stage_duration(text: &str) -> Result<(String, Duration), String> {
    stage_and(text, parse_duration)
}

fn parse_stage_duration_or_zero(text: &str) -> Result<(String, Duration), String> {
    stage_and(text, parse_duration_or_zero)
}

fn parse_stage_traffic(text: &str) -> Result<(String, TrafficLayer), String> {
    stage_and(text, TrafficLayer::parse)
}

fn parse_stage_bool(text: &str) -> Result<(String, bool), String> {
    stage_and(text, |value| match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("{other:?}: expected true or false")),
    })
}

/// `STAGE=VALUE`, the value read by `parse`.
fn stage_and<T>(text: &str, parse: fn(&str) -> Result<T, String>) -> Result<(String, T), String> {
    let (stage, duration) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected STAGE=VALUE, e.g. production=15m"))?;
    let stage = stage.trim();
    contracts::names::validate_keptn_name(contracts::names::NameKind::Stage, stage)
        .map_err(|err| format!("{text:?}: stage {stage:?}: {err}"))?;
    Ok((stage.to_owned(), parse(duration)?))
}

impl DeployConfig {
    /// The resolved settings the handlers read.
    pub fn settings(&self) -> DeploySettings {
        DeploySettings::new(
            Ingress {
                hostname_template: self.hostname_template.clone(),
                protocol: self.ingress_protocol.clone(),
                hostname_suffix: self.ingress_hostname_suffix.clone(),
                port: self.ingress_port,
                gateway: self.istio_gateway.clone(),
            },
            Deadlines {
                helm: self.helm_timeout,
                rollout: self.rollout_timeout,
                fail_fast_after: non_zero(self.fail_fast_after),
            },
            StageDeadlines {
                helm: self.stage_helm_timeout.iter().cloned().collect(),
                rollout: self.stage_rollout_timeout.iter().cloned().collect(),
                fail_fast_after: self
                    .stage_fail_fast_after
                    .iter()
                    .map(|(stage, after)| (stage.clone(), non_zero(*after)))
                    .collect(),
            },
            self.scaling_max_replicas,
        )
        .with_traffic(self.traffic())
        .with_helm_test(PerStage {
            default: self.helm_test,
            stage: self.stage_helm_test.iter().cloned().collect(),
        })
        .with_rollback_non_blue_green(self.rollback_non_bluegreen)
    }

    /// `--traffic`, `--stage-traffic` and `--gateway`.
    pub fn traffic(&self) -> Traffic {
        Traffic {
            layer: PerStage {
                default: self.traffic,
                stage: self.stage_traffic.iter().cloned().collect(),
            },
            gateway: self.gateway.clone(),
        }
    }

    /// Where tasks may deploy: `--protected-namespaces`, `--adopt-namespaces`, and the
    /// worker's own namespace (`--own-namespace`, else the pod's service account's).
    pub fn namespace_policy(&self) -> NamespacePolicy {
        let own = self.own_namespace.clone().or_else(|| {
            std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
                .ok()
                .map(|text| text.trim().to_owned())
                .filter(|namespace| !namespace.is_empty())
        });
        NamespacePolicy {
            protected: self.protected_namespaces.clone(),
            adopt: self.adopt_namespaces.clone(),
            own,
        }
    }
}

/// The whole number a quantity starts with and the unit after it (`"30s"`: `(30, "s")`);
/// `None` when it does not start with a number that fits a `u64`.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit))
}

/// Parses a byte size: a whole number, alone or followed by `B`, `KiB`/`MiB`/`GiB`/`TiB`
/// (powers of 1024) or `KB`/`MB`/`GB`/`TB` (powers of 1000).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (value, unit) = number_and_unit(text)
        .ok_or_else(|| format!("invalid size {text:?}: expected e.g. 1048576, 512MiB, 1GiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "invalid size unit in {text:?}: use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
            ))
        }
    };
    match value.checked_mul(factor) {
        Some(0) => Err(format!("size {text:?} must be greater than zero")),
        Some(bytes) => Ok(bytes),
        None => Err(format!("size {text:?} is too large")),
    }
}

/// Parses `250ms`, `30s`, `5m`, `2h`, `7d` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (value, unit) = number_and_unit(text).ok_or_else(|| {
        format!("invalid duration {text:?}: expected e.g. 500ms, 30s, 5m, 2h, 7d")
    })?;
    let duration = match unit {
        "ms" => Duration::from_millis(value),
        "" | "s" => Duration::from_secs(value),
        "m" => Duration::from_secs(value * 60),
        "h" => Duration::from_secs(value * 3600),
        "d" => Duration::from_secs(value * 86_400),
        _ => {
            return Err(format!(
                "invalid duration unit in {text:?}: use ms, s, m, h or d"
            ))
        }
    };
    if duration.is_zero() {
        return Err(format!("duration {text:?} must be greater than zero"));
    }
    Ok(duration)
}

impl RunConfig {
    /// Checks relations between settings that clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.ack_wait < Duration::from_millis(300) {
            return Err("--ack-wait must be at least 300ms".into());
        }
        if self.lease_ttl < Duration::from_millis(300) {
            return Err("--lease-ttl must be at least 300ms".into());
        }
        for (flag, name) in [
            ("--stream", &self.stream),
            ("--consumer", &self.consumer),
            ("--state-prefix", &self.state_prefix),
        ] {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err(format!(
                    "{flag} {name:?} is invalid: use letters, digits, '-' and '_' only"
                ));
            }
        }
        self.deploy.traffic().check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("2 GB"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("10B"), Ok(10));
        assert!(parse_bytes("0MiB").is_err());
        assert!(parse_bytes("1 PiB").is_err());
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn defaults_and_env_names_match_the_contract() {
        let cli = Cli::try_parse_from(["helm-service", "run"]).unwrap();
        let Command::Run(config) = cli.command else {
            panic!("run")
        };
        assert_eq!(config.stream, "keptn");
        assert_eq!(config.consumer, "helm-service");
        assert_eq!(config.http_addr.to_string(), "0.0.0.0:8080");
        assert!(config.validate().is_ok());
    }

    #[test]
    fn memory_settings_take_sizes_and_bare_bytes() {
        let cli = Cli::try_parse_from(["helm-service", "run"]).unwrap();
        let Command::Run(config) = cli.command else {
            panic!("run")
        };
        assert_eq!(config.memory.memory_budget, None);
        assert_eq!(config.memory.helm_memory_limit, 32 << 20);
        // The chart passes the container's limit in bytes (the downward API's form).
        let cli = Cli::try_parse_from([
            "helm-service",
            "run",
            "--memory-budget",
            "402653184",
            "--helm-memory-limit",
            "48MiB",
        ])
        .unwrap();
        let Command::Run(config) = cli.command else {
            panic!("run")
        };
        assert_eq!(config.memory.memory_budget, Some(384 << 20));
        assert_eq!(config.memory.helm_memory_limit, 48 << 20);
    }

    #[test]
    fn replicas_apply_to_everything_the_worker_creates() {
        let limits = |args: &[&str]| {
            let mut argv = vec!["helm-service", "run"];
            argv.extend_from_slice(args);
            let Command::Run(config) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("run")
            };
            config.limits.limits(config.release_record_ttl)
        };
        let all = |limits: StorageLimits| {
            [
                limits.keptn_stream,
                limits.dead_letters,
                limits.release_records,
                limits.inventory,
                limits.chart_bucket,
            ]
            .map(|limit| limit.replicas)
        };
        assert_eq!(all(limits(&[])), [1; 5]);
        assert_eq!(all(limits(&["--replicas", "3"])), [3; 5]);
        assert!(Cli::try_parse_from(["helm-service", "run", "--replicas", "0"]).is_err());
        assert!(Cli::try_parse_from(["helm-service", "run", "--replicas", "7"]).is_err());
    }

    #[test]
    fn release_record_ttl_keeps_its_deployed_flag() {
        let cli = Cli::try_parse_from(["helm-service", "run", "--ledger-ttl", "1h"]).unwrap();
        let Command::Run(config) = cli.command else {
            panic!("run")
        };
        assert_eq!(config.release_record_ttl, Duration::from_secs(3600));
    }

    #[test]
    fn bad_names_are_refused() {
        let cli = Cli::try_parse_from(["helm-service", "run", "--stream", "a.b"]).unwrap();
        let Command::Run(config) = cli.command else {
            panic!("run")
        };
        assert!(config.validate().unwrap_err().contains("--stream"));
    }

    /// The deployment flags alone.
    #[derive(Parser)]
    struct DeployCli {
        #[command(flatten)]
        deploy: DeployConfig,
    }

    #[test]
    fn stage_overrides_win_over_defaults() {
        let cli = DeployCli::try_parse_from([
            "x",
            "--rollout-timeout",
            "2m",
            "--stage-rollout-timeout",
            "dev=30s,production=30m",
            "--stage-helm-timeout",
            "production=10m",
            "--stage-fail-fast-after",
            "production=0,dev=5s",
        ])
        .unwrap();
        let settings = cli.deploy.settings();
        assert_eq!(
            settings.deadlines("dev"),
            Deadlines {
                helm: Duration::from_secs(300),
                rollout: Duration::from_secs(30),
                fail_fast_after: Some(Duration::from_secs(5)),
            }
        );
        assert_eq!(
            settings.deadlines("production"),
            Deadlines {
                helm: Duration::from_secs(600),
                rollout: Duration::from_secs(1800),
                fail_fast_after: None,
            }
        );
        assert_eq!(
            settings.deadlines("staging"),
            Deadlines {
                helm: Duration::from_secs(300),
                rollout: Duration::from_secs(120),
                fail_fast_after: Some(Duration::from_secs(60)),
            }
        );
        let off = DeployCli::try_parse_from(["x", "--fail-fast-after", "0"]).unwrap();
        assert_eq!(off.deploy.settings().deadlines("dev").fail_fast_after, None);
    }

    #[test]
    fn traffic_layers_per_stage_and_the_gateway_they_need() {
        let cli = DeployCli::try_parse_from([
            "x",
            "--traffic",
            "service",
            "--stage-traffic",
            "production=gateway-api",
            "--gateway",
            "gateways/public",
        ])
        .unwrap();
        let settings = cli.deploy.settings();
        assert_eq!(settings.traffic("dev"), TrafficLayer::Service);
        assert_eq!(settings.traffic("production"), TrafficLayer::GatewayApi);
        assert_eq!(settings.gateway().unwrap().to_string(), "gateways/public");
        assert!(cli.deploy.traffic().check().is_ok());
        let default = DeployCli::try_parse_from(["x"]).unwrap();
        assert!(!default.deploy.settings().helm_test("dev"));
        let gated =
            DeployCli::try_parse_from(["x", "--stage-helm-test", "production=true,dev=false"])
                .unwrap();
        assert!(gated.deploy.settings().helm_test("production"));
        assert!(!gated.deploy.settings().helm_test("dev"));
        let everywhere = DeployCli::try_parse_from(["x", "--helm-test"]).unwrap();
        assert!(everywhere.deploy.settings().helm_test("staging"));
        assert!(DeployCli::try_parse_from(["x", "--stage-helm-test", "dev=yes"]).is_err());
        assert_eq!(
            default.deploy.settings().traffic("dev"),
            TrafficLayer::Istio
        );
        // gateway-api anywhere without a Gateway is refused at start.
        let without =
            DeployCli::try_parse_from(["x", "--stage-traffic", "dev=gateway-api"]).unwrap();
        assert!(without
            .deploy
            .traffic()
            .check()
            .unwrap_err()
            .contains("--gateway"));
        for bad in [
            ["--traffic", "linkerd"],
            ["--stage-traffic", "dev=nginx"],
            ["--gateway", "public"],
            ["--gateway", "gateways/Public\""],
        ] {
            assert!(
                DeployCli::try_parse_from(["x", bad[0], bad[1]]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_stage_overrides_are_refused() {
        assert!(DeployCli::try_parse_from(["x", "--stage-rollout-timeout", "dev"]).is_err());
        assert!(DeployCli::try_parse_from(["x", "--stage-rollout-timeout", "Dev=1m"]).is_err());
        assert!(DeployCli::try_parse_from(["x", "--stage-rollout-timeout", "dev=soon"]).is_err());
    }
}
