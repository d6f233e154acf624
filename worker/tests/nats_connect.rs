//! Reaching NATS the way the binary does (`--nats-url` parsed by the CLI, resolved, connected)
//! against real nats-server processes.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use test_harness::nats::NatsServer;
use test_harness::wait::wait_until;
use worker::config::{Cli, Command};
use worker::metrics::Metrics;
use worker::nats::connect::{ConnectionEvents, NatsArgs};

fn run_flags(args: &[&str]) -> NatsArgs {
    let mut argv = vec!["helm-service", "run"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv).expect("flags parse").command {
        Command::Run(config) => config.nats,
        _ => unreachable!(),
    }
}

/// The server a client is connected to, by port.
fn connected_port(client: &async_nats::Client) -> Option<u16> {
    (client.connection_state() == async_nats::connection::State::Connected)
        .then(|| client.server_info().port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_list_of_two_servers_connects_and_fails_over() -> anyhow::Result<()> {
    let mut first = NatsServer::start().await?;
    let mut second = NatsServer::start().await?;
    // Before the fix, this list failed with "NATS server URL is invalid: invalid port number".
    let list = format!("{},{}", first.url(), second.url());
    let nats = run_flags(&["--nats-url", &list]).resolve()?;
    assert_eq!(nats.servers(), list);

    let client = nats
        .connect_worker(
            "seed-list-test",
            Arc::new(ConnectionEvents::default()),
            Metrics::new().nats_credential_reload_failures,
        )
        .await?;
    let port = wait_until(
        "the client to connect",
        Duration::from_secs(15),
        Duration::from_millis(20),
        || async { connected_port(&client) },
    )
    .await?;
    assert!(port == first.port() || port == second.port(), "{port}");
    async_nats::jetstream::new(client.clone())
        .query_account()
        .await?;

    // The server it uses goes away: the client moves to the other one of the list.
    let (gone, other) = if port == first.port() {
        (&mut first, second.port())
    } else {
        (&mut second, first.port())
    };
    gone.kill().await?;
    wait_until(
        "the client to reconnect to the other server",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async { (connected_port(&client) == Some(other)).then_some(()) },
    )
    .await?;
    async_nats::jetstream::new(client.clone())
        .query_account()
        .await?;

    // A list whose first server is down from the start connects to the next, first time.
    let alive = if port == first.port() {
        second.url()
    } else {
        first.url()
    };
    let dead = format!("nats://127.0.0.1:{}", test_harness::free_port());
    let nats = run_flags(&["--nats-url", &format!("{dead},{alive}")]).resolve()?;
    let client = nats.connect("seed-list-test").await?;
    assert_eq!(connected_port(&client), Some(other));
    Ok(())
}

#[tokio::test]
async fn no_server_of_the_list_up_is_unreachable_not_refused() {
    let list = format!(
        "nats://127.0.0.1:{},nats://127.0.0.1:{}",
        test_harness::free_port(),
        test_harness::free_port()
    );
    let err = run_flags(&["--nats-url", &list])
        .resolve()
        .unwrap()
        .connect("seed-list-test")
        .await
        .unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach NATS at {list}")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_nats_is_reachable_waits_for_it() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let proxy = test_harness::TcpProxy::to_port(server.port()).await?;
    proxy.cut();
    let events = Arc::new(ConnectionEvents::default());
    // Unreachable is not an error: the client connects in the background.
    let client = run_flags(&["--nats-url", &proxy.nats_url()])
        .resolve()?
        .connect_worker(
            "waiting-test",
            events.clone(),
            Metrics::new().nats_credential_reload_failures,
        )
        .await?;
    assert_eq!(connected_port(&client), None);
    let last = wait_until(
        "the client to report why it is not connected",
        Duration::from_secs(15),
        Duration::from_millis(20),
        || async { events.last_error() },
    )
    .await?;
    assert!(!last.is_empty());
    proxy.heal();
    wait_until(
        "the client to connect once NATS is reachable",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { connected_port(&client) },
    )
    .await?;
    assert_eq!(events.last_error(), None, "cleared once connected");
    Ok(())
}
