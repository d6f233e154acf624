//! The partitionable proxy in front of a real nats-server: it forwards, a partition stalls
//! connections old and new without closing any, a cut closes and refuses them, and healing
//! brings both back.

use std::time::Duration;

use futures::StreamExt;
use test_harness::proxy::Mode;
use test_harness::{NatsServer, TcpProxy};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Long enough that a forwarded answer on loopback would have come (it takes microseconds),
/// so its absence means the path is broken.
const SILENCE: Duration = Duration::from_millis(500);
const DEADLINE: Duration = Duration::from_secs(10);

/// The first line the server sends on a raw connection through `proxy` (its `INFO`).
async fn first_line(stream: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    Ok(line)
}

/// A request nobody serves: the server's "no responders" answer proves a round trip.
async fn round_trip(client: &async_nats::Client) -> anyhow::Result<()> {
    match client.request("proxy.nobody", "ping".into()).await {
        Err(err) if err.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
        other => anyhow::bail!("expected no responders, got {other:?}"),
    }
}

async fn raw(proxy: &TcpProxy) -> std::io::Result<BufReader<TcpStream>> {
    Ok(BufReader::new(TcpStream::connect(proxy.addr()).await?))
}

#[tokio::test]
async fn a_partition_stalls_old_and_new_connections_until_healed() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let proxy = TcpProxy::to_port(server.port()).await?;
    assert_eq!(proxy.mode(), Mode::Forward);

    let direct = server.connect().await?;
    let mut inbox = direct.subscribe("proxy.test").await?;
    direct.flush().await?;
    let through = NatsServer::connect_options()
        .connect(proxy.nats_url())
        .await?;
    through.publish("proxy.test", "before".into()).await?;
    through.flush().await?;
    let got = tokio::time::timeout(DEADLINE, inbox.next()).await?;
    assert_eq!(got.expect("subscribed").payload, "before");
    assert_eq!(proxy.connections(), 1);
    tokio::time::timeout(DEADLINE, round_trip(&through)).await??;
    let mut old = raw(&proxy).await?;
    assert!(first_line(&mut old).await?.starts_with("INFO "));

    proxy.partition();
    // Nothing closes: the old connection neither ends nor answers a PING...
    old.get_mut()
        .write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
        .await?;
    let answer = tokio::time::timeout(SILENCE, first_line(&mut old)).await;
    assert!(answer.is_err(), "answered through a partition: {answer:?}");
    // ...the client's messages go nowhere, and its requests get no answer...
    through.publish("proxy.test", "during".into()).await?;
    let answered = tokio::time::timeout(SILENCE, round_trip(&through)).await;
    assert!(
        answered.is_err(),
        "a round trip through a partition: {answered:?}"
    );
    let delivered = tokio::time::timeout(SILENCE, inbox.next()).await;
    assert!(
        delivered.is_err(),
        "delivered through a partition: {delivered:?}"
    );
    // ...and a new connection is accepted by the kernel but never greeted.
    let mut new = raw(&proxy).await?;
    let greeting = tokio::time::timeout(SILENCE, first_line(&mut new)).await;
    assert!(
        greeting.is_err(),
        "greeted through a partition: {greeting:?}"
    );
    assert_eq!(
        proxy.connections(),
        2,
        "the partitioned proxy accepted nothing"
    );

    proxy.heal();
    // What was sent meanwhile arrives late, and the new connection is served.
    let got = tokio::time::timeout(DEADLINE, inbox.next()).await?;
    assert_eq!(got.expect("subscribed").payload, "during");
    tokio::time::timeout(DEADLINE, round_trip(&through)).await??;
    assert_eq!(
        tokio::time::timeout(DEADLINE, first_line(&mut old)).await??,
        "PONG\r\n"
    );
    assert!(tokio::time::timeout(DEADLINE, first_line(&mut new))
        .await??
        .starts_with("INFO "));
    Ok(())
}

#[tokio::test]
async fn a_cut_closes_connections_and_refuses_new_ones_until_healed() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let proxy = TcpProxy::to_port(server.port()).await?;
    let mut old = raw(&proxy).await?;
    assert!(first_line(&mut old).await?.starts_with("INFO "));

    proxy.cut();
    let ended = tokio::time::timeout(DEADLINE, first_line(&mut old)).await?;
    assert!(
        matches!(&ended, Ok(line) if line.is_empty()) || ended.is_err(),
        "the connection was closed: {ended:?}"
    );
    let refused = TcpStream::connect(proxy.addr()).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|err| err.kind() == std::io::ErrorKind::ConnectionRefused),
        "{refused:?}"
    );

    proxy.heal();
    // Listening again on the same port (bound anew: poll until it is).
    let end = tokio::time::Instant::now() + DEADLINE;
    let mut again = loop {
        match raw(&proxy).await {
            Ok(stream) => break stream,
            Err(err) if tokio::time::Instant::now() < end => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => return Err(err.into()),
        }
    };
    assert!(first_line(&mut again).await?.starts_with("INFO "));
    Ok(())
}
