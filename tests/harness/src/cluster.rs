//! A JetStream cluster of real nats-servers on loopback: each with its own server name, client
//! port, store and route port, all routed to each other under one cluster name. Any server can
//! be killed (SIGKILL) and restarted on the same ports and store, or restarted gracefully, the
//! way a cluster loses and regains members.

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use async_nats::jetstream;
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::nats::{NatsServer, ServerConfig};
use crate::process::free_port;
use crate::wait::wait_until_ok;

/// Name of the harness's clusters (`cluster { name }`).
pub const CLUSTER_NAME: &str = "helm-service-test";

/// How long [`NatsCluster::wait_healthy`] waits by default: elections take a few seconds.
pub const HEALTHY_DEADLINE: Duration = Duration::from_secs(60);

/// Servers `n0`, `n1`, ... routed to each other; stopped when dropped.
#[derive(Debug)]
pub struct NatsCluster {
    servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` servers at once (a JetStream cluster elects its meta leader only once a
    /// majority is up) and waits until each serves JetStream.
    pub async fn start(size: usize) -> anyhow::Result<NatsCluster> {
        Self::start_with(size, "").await
    }

    /// Like [`start`](Self::start), with `extra` in every server's configuration.
    pub async fn start_with(size: usize, extra: &str) -> anyhow::Result<NatsCluster> {
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|port| format!("nats-route://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut servers = Vec::new();
        for (index, route_port) in route_ports.iter().enumerate() {
            let config = format!(
                "server_name: n{index}\ncluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{route_port}\n  routes: [{routes}]\n}}\n{extra}"
            );
            servers.push(NatsServer::prepare(
                free_port(),
                ServerConfig {
                    extra: config,
                    ..ServerConfig::default()
                },
            )?);
        }
        futures::future::try_join_all(servers.iter_mut().map(NatsServer::spawn_until_ready))
            .await
            .context("starting the cluster")?;
        Ok(NatsCluster { servers })
    }

    /// The seed list: every server's URL, comma separated.
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    pub fn servers(&self) -> &[NatsServer] {
        &self.servers
    }

    /// Server `index` (`n<index>`).
    pub fn server(&mut self, index: usize) -> &mut NatsServer {
        &mut self.servers[index]
    }

    /// The index of the server named `name` (`n<index>`).
    pub fn index_of(&self, name: &str) -> anyhow::Result<usize> {
        name.strip_prefix('n')
            .and_then(|index| index.parse().ok())
            .filter(|index| *index < self.servers.len())
            .ok_or_else(|| anyhow!("no server {name:?} in the cluster"))
    }

    /// A client to the whole seed list, reconnecting quickly to whichever server is up.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        let urls: Vec<String> = self.servers.iter().map(NatsServer::url).collect();
        NatsServer::connect_options()
            .connect(urls.as_slice())
            .await
            .context("connecting to the cluster")
    }

    pub async fn jetstream(&self) -> anyhow::Result<jetstream::Context> {
        Ok(jetstream::new(self.connect().await?))
    }

    /// The name of the server leading `stream`'s replicas.
    pub async fn stream_leader(js: &jetstream::Context, stream: &str) -> anyhow::Result<String> {
        let mut handle = js.get_stream(stream).await?;
        let info = handle.info().await?;
        info.cluster
            .as_ref()
            .and_then(|cluster| cluster.leader.clone())
            .filter(|leader| !leader.is_empty())
            .ok_or_else(|| anyhow!("stream {stream} has no leader"))
    }

    /// Waits until every running server says its JetStream is healthy (its monitoring
    /// `/healthz`: caught up with the meta group and every stream and consumer it holds, what
    /// the NATS Helm chart's probes ask) and every stream of the account, and every durable
    /// consumer, has a leader and current replicas: then any one server may go without losing
    /// a quorum.
    pub async fn wait_healthy(
        &mut self,
        js: &jetstream::Context,
        deadline: Duration,
    ) -> anyhow::Result<()> {
        let monitors: Vec<String> = self
            .servers
            .iter_mut()
            .filter_map(|server| server.is_running().then(|| server.monitor_url()))
            .collect();
        wait_until_ok(
            "every server healthy, every stream and consumer with a leader and current replicas",
            deadline,
            Duration::from_millis(100),
            || async {
                for monitor in &monitors {
                    let (status, body) = http_get(monitor, "/healthz").await?;
                    anyhow::ensure!(status == 200, "{monitor}/healthz: {status} {body}");
                }
                all_current(js).await
            },
        )
        .await
    }
}

/// A minimal HTTP/1.0 GET of `path` at `base` (`http://127.0.0.1:<port>`): status and body.
async fn http_get(base: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let addr = base.trim_start_matches("http://");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| anyhow!("not an HTTP response: {response:?}"))?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        Ok::<_, anyhow::Error>((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| anyhow!("GET {base}{path} timed out"))?
}

async fn all_current(js: &jetstream::Context) -> anyhow::Result<()> {
    let streams: Vec<jetstream::stream::Info> = js.streams().try_collect().await?;
    for info in streams {
        let name = &info.config.name;
        check_group(&format!("stream {name}"), info.cluster.as_ref())?;
        let stream = js.get_stream(name).await?;
        let mut consumers = stream.consumers();
        while let Some(consumer) = consumers.next().await {
            let consumer = consumer?;
            // Ordered consumers of readers are in memory, R1: nothing to wait for.
            if consumer.config.durable_name.is_none() {
                continue;
            }
            check_group(
                &format!("consumer {} of {name}", consumer.name),
                consumer.cluster.as_ref(),
            )?;
        }
    }
    Ok(())
}

fn check_group(what: &str, cluster: Option<&jetstream::stream::ClusterInfo>) -> anyhow::Result<()> {
    let cluster = cluster.ok_or_else(|| anyhow!("{what}: no cluster information"))?;
    if cluster.leader.as_deref().is_none_or(str::is_empty) {
        anyhow::bail!("{what}: no leader");
    }
    if let Some(peer) = cluster.replicas.iter().find(|peer| !peer.current) {
        anyhow::bail!("{what}: replica {} is not current", peer.name);
    }
    Ok(())
}
