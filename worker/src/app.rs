//! Wiring: connect, bind, build, serve until signalled, and shut down in order
//! ([`run`] reads as that sequence).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::charts::ChartStoreKind;
use crate::config::RunConfig;
use crate::deploy::inventory::Inventory;
use crate::handler::action::ActionHandler;
use crate::handler::delete::ServiceDeleteHandler;
use crate::handler::deployment::DeploymentHandler;
use crate::handler::platform::Platform;
use crate::handler::release::{ReleaseHandler, RollbackHandler};
use crate::handler::Registry;
use crate::helm::{Helm, HelmConfig};
use crate::http::{self, Health};
use crate::memory::{self, Budget};
use crate::metrics::Metrics;
use crate::nats::connect::ConnectionEvents;
use crate::nats::publisher::Publisher;
use crate::nats::topology::{self, StorageLimits, Topology, TopologyConfig};
use crate::pipeline::dead_letter::DeadLetters;
use crate::pipeline::intake::TaskKind;
use crate::pipeline::lease::ReleaseLeases;
use crate::pipeline::processor::{Processor, ProcessorConfig};
use crate::pipeline::scheduler::Scheduler;

/// How long a reply publish may keep retrying before the message is handed back.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(30);
/// Extra time after the grace period for cancelled tasks to hand their messages back.
const HAND_BACK_TIME: Duration = Duration::from_secs(5);

/// Which task handlers a worker runs.
pub enum Handlers {
    /// The Helm handlers, built from the run configuration (helm, cluster, chart store).
    Production,
    /// A fixed registry: tests and benchmarks with their own handlers.
    Given(Registry),
}

impl From<Registry> for Handlers {
    fn from(registry: Registry) -> Self {
        Handlers::Given(registry)
    }
}

/// Runs the worker until `shutdown` fires, then drains in-flight tasks within the
/// grace period. Tests and benchmarks call this in-process with their own registry.
///
/// In order: connect and bind, build the parts, serve until signalled, drain, hand
/// back what did not finish, free parked releases, close the connection. Every
/// shutdown step is bounded, since NATS may be gone already.
pub async fn run(
    config: RunConfig,
    handlers: impl Into<Handlers>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let handlers = handlers.into();
    config.validate().map_err(anyhow::Error::msg)?;
    let metrics = Metrics::new();
    let connection = Connection::open(&config, &metrics).await?;
    let topology_config = topology_config(&config);
    let Some(topology) = bind_with_retry(&connection.js, &topology_config, &shutdown).await else {
        connection.stop_http().await;
        return Ok(());
    };
    let worker = Worker::build(
        &config,
        handlers,
        &connection,
        topology,
        &topology_config,
        &metrics,
    )
    .await?;

    let stopping = worker.serve(&shutdown).await;
    if !stopping.drain(config.shutdown_grace).await {
        stopping.hand_back_unfinished(config.shutdown_grace).await;
    }
    stopping.free_parked().await;
    stopping.stop_polling();
    connection.close().await;
    info!("stopped");
    Ok(())
}

/// The NATS connection and the HTTP endpoints (metrics, health): up before anything
/// is bound, down last.
struct Connection {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    health: Arc<Health>,
    http_stop: CancellationToken,
    http_task: JoinHandle<std::io::Result<()>>,
}

impl Connection {
    /// Connects to NATS (retrying until it is reachable) and starts serving HTTP.
    async fn open(config: &RunConfig, metrics: &Metrics) -> anyhow::Result<Connection> {
        let nats = config.nats.resolve()?;
        let events = Arc::new(ConnectionEvents::default());
        let client = nats
            .connect_worker(
                "helm-service",
                events.clone(),
                metrics.nats_credential_reload_failures.clone(),
            )
            .await?;
        info!(servers = %nats.servers(), "NATS client started");
        let health = Arc::new(Health::new(client.clone(), events));
        let http_stop = CancellationToken::new();
        let http_server = http::serve(
            config.http_addr,
            metrics.clone(),
            health.clone(),
            http_stop.clone(),
        )
        .await?;
        let http_task = tokio::spawn(http_server);
        let js = async_nats::jetstream::new(client.clone());
        Ok(Connection {
            client,
            js,
            health,
            http_stop,
            http_task,
        })
    }

    /// Flushes what is still buffered for NATS, then stops serving HTTP. Bounded: with
    /// NATS gone a flush waits for a reconnection that may never come.
    async fn close(self) {
        match tokio::time::timeout(HAND_BACK_TIME, self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(error = %err, "could not flush NATS connection"),
            Err(_) => warn!("could not flush NATS connection in time: NATS unreachable"),
        }
        self.stop_http().await;
    }

    async fn stop_http(self) {
        self.http_stop.cancel();
        let _ = self.http_task.await;
    }
}

fn topology_config(config: &RunConfig) -> TopologyConfig {
    TopologyConfig {
        stream: config.stream.clone(),
        consumer: config.consumer.clone(),
        ack_wait: config.ack_wait,
        state_prefix: config.state_prefix.clone(),
        limits: config.limits.limits(config.release_record_ttl),
    }
}

/// The bound worker, ready to pull: the scheduler and what its tasks share.
struct Worker {
    scheduler: Scheduler,
    stopping: Stopping,
}

impl Worker {
    /// Builds the handlers, the release leases and the processor, and marks the
    /// replica bound.
    async fn build(
        config: &RunConfig,
        handlers: Handlers,
        connection: &Connection,
        topology: Topology,
        topology_config: &TopologyConfig,
        metrics: &Metrics,
    ) -> anyhow::Result<Worker> {
        let Topology {
            consumer,
            release_records,
        } = topology;
        let registry = match handlers {
            Handlers::Given(registry) => registry,
            Handlers::Production => {
                production_handlers(config, &topology_config.limits, &connection.js, metrics)
                    .await?
            }
        };
        connection.health.bound.store(true, Ordering::SeqCst);
        info!(stream = %config.stream, consumer = %config.consumer, concurrency = config.concurrency, "bound; processing events");

        let leases = ReleaseLeases::new(release_records, config.lease_ttl, replica_identity())
            .with_parking(connection.client.clone(), config.release_linger)
            .await
            .context("setting up release parking")?;
        let publisher = Publisher::new(connection.js.clone(), PUBLISH_DEADLINE);
        let processor = Arc::new(Processor {
            config: ProcessorConfig {
                stream: config.stream.clone(),
                ack_wait: config.ack_wait,
                max_event_bytes: config.max_event_bytes,
                max_deliveries: config.max_deliveries,
                crash_after_step: config.test_crash_after_step.clone(),
                progress_interval: config.progress.enabled.then_some(config.progress.interval),
            },
            leases: leases.clone(),
            dead_letters: DeadLetters::new(
                publisher.clone(),
                topology_config.dead_letter_subject_prefix(),
            ),
            publisher,
            registry,
            metrics: metrics.clone(),
        });

        let poller = tokio::spawn(poll_consumer_state(consumer.clone(), metrics.clone()));
        let tasks = TaskTracker::new();
        let scheduler = Scheduler::new(
            consumer,
            processor,
            config.concurrency as usize,
            tasks.clone(),
        );
        Ok(Worker {
            scheduler,
            stopping: Stopping {
                tasks,
                hard_stop: CancellationToken::new(),
                leases,
                poller,
                health: connection.health.clone(),
            },
        })
    }

    /// Pulls and processes events until `shutdown` fires; in-flight tasks go on.
    async fn serve(self, shutdown: &CancellationToken) -> Stopping {
        let Worker {
            scheduler,
            stopping,
        } = self;
        scheduler
            .run(shutdown.clone(), stopping.hard_stop.clone())
            .await;
        stopping
    }
}

/// A worker that pulls no more: what its shutdown steps need.
struct Stopping {
    tasks: TaskTracker,
    /// Tells tasks the grace period is over: they hand their messages back.
    hard_stop: CancellationToken,
    leases: ReleaseLeases,
    poller: JoinHandle<()>,
    health: Arc<Health>,
}

impl Stopping {
    /// Lets in-flight tasks finish within the grace period; whether they all did.
    async fn drain(&self, grace: Duration) -> bool {
        self.health.accepting.store(false, Ordering::SeqCst);
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }

    /// Stops the tasks still running and waits (bounded) for them to hand their
    /// messages back for redelivery.
    async fn hand_back_unfinished(&self, grace: Duration) {
        warn!(grace = ?grace, "grace period over: handing unfinished tasks back for redelivery");
        self.hard_stop.cancel();
        if tokio::time::timeout(HAND_BACK_TIME, self.tasks.wait())
            .await
            .is_err()
        {
            warn!("some tasks did not stop in time; JetStream redelivers them after the ack wait");
        }
    }

    /// Frees parked releases now rather than after --lease-ttl for other replicas;
    /// bounded, because NATS may be gone already (then they are taken over after the TTL).
    async fn free_parked(&self) {
        if tokio::time::timeout(HAND_BACK_TIME, self.leases.free_all_parked())
            .await
            .is_err()
        {
            warn!("could not free the parked releases in time; other replicas take them over after --lease-ttl");
        }
    }

    fn stop_polling(&self) {
        self.poller.abort();
    }
}

/// The Helm task handlers and what they share. Fails when helm or the chart store is
/// unusable: better to refuse to start than to answer every event with an error.
async fn production_handlers(
    config: &RunConfig,
    limits: &StorageLimits,
    js: &async_nats::jetstream::Context,
    metrics: &Metrics,
) -> anyhow::Result<Registry> {
    let deploy = &config.deploy;
    let helm_slots = helm_slots(config, metrics);
    let helm = Helm::detect(HelmConfig {
        bin: deploy.helm_bin.clone(),
        kubeconfig: deploy.cluster.kubeconfig.clone(),
        kube_context: deploy.cluster.kube_context.clone(),
        timeout: deploy.helm_timeout,
        go_memory_limit: Some(config.memory.helm_memory_limit),
        max_processes: Some(helm_slots),
        ..HelmConfig::default()
    })
    .await
    .context("checking helm (--helm-bin)")?
    .with_observer(Arc::new(metrics.clone()));
    info!(helm = %helm.version(), "using helm");
    let cluster =
        deploy.cluster.connect().await.context(
            "loading the Kubernetes client configuration (--kubeconfig, --kube-context)",
        )?;
    let charts = config
        .charts
        .open(js)
        .await
        .context("opening the chart store (--chart-store)")?;
    info!(store = %charts.describe(), "chart store");
    if config.charts.chart_store == ChartStoreKind::Nats {
        let stream = format!("OBJ_{}", config.charts.chart_bucket);
        topology::enforce_limits(js, &stream, limits.chart_bucket)
            .await
            .map_err(anyhow::Error::msg)
            .context("limiting the chart bucket (--chart-bucket-max-bytes)")?;
    }
    let inventory = Inventory::open(
        js,
        &topology::StateNames(&config.state_prefix).inventory_bucket(),
        limits.inventory,
    )
    .await
    .context("opening the inventory bucket")?;
    let platform = Arc::new(Platform {
        helm,
        cluster,
        charts,
        chart_limits: config.charts.limits(),
        inventory,
        settings: deploy.settings(),
        namespaces: deploy.namespace_policy(),
        use_commit_id: config.charts.use_commit_id,
        metrics: metrics.clone(),
    });
    Ok(Registry::new()
        .with(
            TaskKind::Deployment,
            DeploymentHandler::new(platform.clone()),
        )
        .with(TaskKind::Release, ReleaseHandler::new(platform.clone()))
        .with(TaskKind::Rollback, RollbackHandler::new(platform.clone()))
        .with(TaskKind::Action, ActionHandler::new(platform.clone()))
        .with(TaskKind::ServiceDelete, ServiceDeleteHandler::new(platform)))
}

/// How many helm processes run at once: what the memory budget holds (see `memory`), at
/// most --concurrency. Logged, and on `/metrics`.
fn helm_slots(config: &RunConfig, metrics: &Metrics) -> usize {
    let budget = Budget::find(config.memory.memory_budget);
    let limit = config.memory.helm_memory_limit;
    let slots = memory::helm_slots(budget.map(|b| b.bytes), limit, config.concurrency as usize);
    let mib = |bytes: u64| bytes >> 20;
    match budget {
        Some(budget) if slots.over_budget => warn!(
            budget_mib = mib(budget.bytes),
            source = budget.source.as_str(),
            needs_mib = mib(memory::WORKER_RESERVE + memory::per_helm(limit)),
            "the memory budget holds the worker but not one helm process beside it; running one at a time anyway"
        ),
        Some(budget) => info!(
            budget_mib = mib(budget.bytes),
            source = budget.source.as_str(),
            helm_memory_limit_mib = mib(limit),
            helm_slots = slots.slots,
            "memory budget"
        ),
        None => info!(
            helm_memory_limit_mib = mib(limit),
            helm_slots = slots.slots,
            "no memory budget (--memory-budget, cgroup limit): helm processes bounded by --concurrency only"
        ),
    }
    metrics.helm_slots.set(slots.slots as i64);
    slots.slots
}

/// Binds the JetStream objects, retrying while NATS is unreachable. `None` when
/// shutdown came first.
async fn bind_with_retry(
    js: &async_nats::jetstream::Context,
    config: &TopologyConfig,
    shutdown: &CancellationToken,
) -> Option<Topology> {
    let mut delay = Duration::from_millis(100);
    loop {
        match topology::bind(js, config).await {
            Ok(topology) => return Some(topology),
            Err(err) => warn!(error = %err, retry_in = ?delay, "binding JetStream failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {},
            () = shutdown.cancelled() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Keeps the consumer gauges current for dashboards and autoscalers.
async fn poll_consumer_state(
    mut consumer: crate::pipeline::scheduler::PullConsumer,
    metrics: Metrics,
) {
    let mut interval = tokio::time::interval(Duration::from_secs(5));
    loop {
        interval.tick().await;
        match consumer.info().await {
            Ok(info) => {
                metrics.consumer_pending.set(info.num_pending as i64);
                metrics
                    .consumer_ack_pending
                    .set(info.num_ack_pending as i64);
            }
            Err(err) => warn!(error = %err, "reading consumer state failed"),
        }
    }
}

/// `host/pid`, written into leases so an operator can see who holds one.
fn replica_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host}/{}", std::process::id())
}
