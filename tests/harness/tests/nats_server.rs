//! The harness against a real nats-server: JetStream data survives kill -9 and a restart on
//! the same port and store dir, and the stream readers see what was published.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use serde_json::json;
use test_harness::{collect_stream_json, stream_json, stream_messages, NatsServer};

async fn create_stream(js: &jetstream::Context, name: &str, subjects: &str) {
    js.create_stream(stream::Config {
        name: name.to_string(),
        subjects: vec![subjects.to_string()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn publish_json(js: &jetstream::Context, subject: &str, value: serde_json::Value) {
    js.publish(subject.to_string(), value.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test]
async fn message_survives_kill_and_restart_on_same_port_and_store() {
    let mut server = NatsServer::start().await.unwrap();
    let (port, url, store) = (
        server.port(),
        server.url(),
        server.store_dir().to_path_buf(),
    );
    assert_eq!(url, format!("nats://127.0.0.1:{port}"));
    let js = server.jetstream().await.unwrap();
    create_stream(&js, "durable", "durable.>").await;
    publish_json(&js, "durable.a", json!({"n": 1})).await;
    publish_json(&js, "durable.b", json!({"n": 2})).await;

    server.kill().await.unwrap();
    assert!(!server.is_running());
    assert!(server.pid().is_none());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "nothing listens after kill"
    );

    server.restart().await.unwrap();
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_eq!(server.url(), url);
    assert_eq!(server.store_dir(), store);

    // The client from before the crash reconnects to the same URL by itself.
    publish_json(&js, "durable.c", json!({"n": 3})).await;

    let fresh = server.jetstream().await.unwrap();
    let values = stream_json(&fresh, "durable", ">").await.unwrap();
    assert_eq!(
        values,
        vec![json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]
    );

    // Graceful stop and a second restart keep the data as well.
    server.stop().await.unwrap();
    server.restart().await.unwrap();
    assert_eq!(server.port(), port);
    let fresh = server.jetstream().await.unwrap();
    let messages = stream_messages(&fresh, "durable", "durable.a")
        .await
        .unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0, "durable.a");
    assert!(server.log_tail(200).contains("Server is ready"));
}

#[tokio::test]
async fn stream_messages_reads_a_snapshot_with_headers_and_filter() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await.unwrap();
    create_stream(&js, "snap", "snap.>").await;
    assert!(stream_messages(&js, "snap", "").await.unwrap().is_empty());

    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", "id-1");
    js.publish_with_headers("snap.x", headers, "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    publish_json(&js, "snap.y", json!({"k": "v"})).await;
    publish_json(&js, "snap.x", json!([1, 2])).await;

    let all = stream_messages(&js, "snap", "").await.unwrap();
    let subjects: Vec<&str> = all.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(subjects, ["snap.x", "snap.y", "snap.x"]);
    assert_eq!(
        all[0].1.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some("id-1")
    );
    assert_eq!(&all[0].2[..], b"not json");

    let only_x = stream_json(&js, "snap", "snap.x").await.unwrap();
    assert_eq!(only_x, vec![json!("not json"), json!([1, 2])]);
    assert!(stream_messages(&js, "snap", "snap.none")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn collect_stream_json_waits_for_later_messages_and_reports_on_timeout() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await.unwrap();
    create_stream(&js, "live", "live.>").await;
    publish_json(&js, "live.event", json!({"seq": 1})).await;

    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            for seq in 2..=3 {
                publish_json(&js, "live.event", json!({"seq": seq})).await;
            }
            publish_json(&js, "live.other", json!({"seq": 99})).await;
        })
    };
    let got = collect_stream_json(&js, "live", "live.event", Duration::from_secs(5), |v| {
        v.len() >= 3
    })
    .await
    .unwrap();
    publisher.await.unwrap();
    assert_eq!(
        got,
        vec![json!({"seq": 1}), json!({"seq": 2}), json!({"seq": 3})]
    );

    // Long enough to open the stream and read all four on a busy machine.
    let err = collect_stream_json(&js, "live", "live.>", Duration::from_secs(2), |v| {
        v.len() > 10
    })
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("timed out"), "{text}");
    assert!(
        text.contains("4 message(s)") && text.contains(r#"{"seq":99}"#),
        "{text}"
    );

    let err = collect_stream_json(&js, "missing", "", Duration::from_secs(2), |_| false)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("missing"), "{err:#}");
}

#[tokio::test]
async fn restart_retries_while_the_port_is_still_taken() {
    let mut server = NatsServer::start().await.unwrap();
    let port = server.port();
    server.kill().await.unwrap();

    // Someone holds the port for a moment (like a socket lingering after a crash): until
    // the restarted server has found it taken, however long a busy machine makes that take
    // (bounded, so that a server that never tries still gets the port).
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let log_path = server.log_path().to_owned();
    let logged_before = std::fs::metadata(&log_path).map_or(0, |m| m.len() as usize);
    let release = tokio::spawn(async move {
        let refused = test_harness::wait::wait_until(
            "the restarted server to find the port taken",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || async {
                let log = std::fs::read(&log_path).unwrap_or_default();
                let since = String::from_utf8_lossy(log.get(logged_before..).unwrap_or_default());
                since.contains("address already in use").then_some(())
            },
        )
        .await;
        drop(squatter);
        refused
    });
    server.restart().await.unwrap();
    release.await.unwrap().unwrap();
    assert_eq!(server.port(), port);
    assert!(server.log_tail(500).contains("address already in use"));
    server
        .jetstream()
        .await
        .unwrap()
        .query_account()
        .await
        .unwrap();
}
