//! Release leases against a real nats-server: exclusion and no starvation across
//! replicas.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use test_harness::nats::NatsServer;
use tokio_util::sync::CancellationToken;
use worker::pipeline::lease::{LeaseValue, Leases};

const TTL: Duration = Duration::from_secs(1);
const KEY: &str = "sockshop.dev.carts";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_replica_is_not_starved_by_a_greedy_one() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = nats.jetstream().await?;
    let store = js
        .create_key_value(Leases::bucket_config("leases".into(), TTL))
        .await?;
    let greedy = Leases::new(store.clone(), TTL, "replica-a".into());
    let patient = Leases::new(store, TTL, "replica-b".into());

    let held = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let never = CancellationToken::new();

    // Two tasks on replica A take the lease back to back, as a busy release would.
    let mut greedy_tasks = Vec::new();
    for task in 0..2 {
        let (greedy, held, overlaps, stop, never) = (
            greedy.clone(),
            held.clone(),
            overlaps.clone(),
            stop.clone(),
            never.clone(),
        );
        greedy_tasks.push(tokio::spawn(async move {
            let mut rounds = 0u32;
            while !stop.is_cancelled() {
                let acquired = greedy
                    .acquire(KEY, &format!("greedy-{task}-{rounds}"), &never)
                    .await?;
                if held.swap(true, Ordering::SeqCst) {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
                held.store(false, Ordering::SeqCst);
                acquired.lease.release().await;
                rounds += 1;
            }
            Ok::<_, anyhow::Error>(rounds)
        }));
    }
    // Let replica A get going, then replica B asks once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    let acquired = tokio::time::timeout(
        Duration::from_secs(10),
        patient.acquire(KEY, "patient", &never),
    )
    .await
    .map_err(|_| anyhow::anyhow!("replica B starved: no lease within 10 s"))??;
    let waited = asked.elapsed();
    if held.swap(true, Ordering::SeqCst) {
        overlaps.fetch_add(1, Ordering::SeqCst);
    }
    held.store(false, Ordering::SeqCst);
    acquired.lease.release().await;
    stop.cancel();
    let mut rounds = 0;
    for task in greedy_tasks {
        rounds += task.await??;
    }

    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two holders at once");
    assert!(acquired.contended);
    // Starving after one TTL, then served at the next hand-over.
    assert!(waited < TTL * 3, "replica B waited {waited:?}");
    eprintln!("replica B waited {waited:?} while replica A did {rounds} rounds");
    assert!(
        rounds > 2,
        "replica A kept working meanwhile ({rounds} rounds)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starved_waiter_gets_the_lease_before_the_holders_own_queue() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = nats.jetstream().await?;
    let store = js
        .create_key_value(Leases::bucket_config("leases".into(), TTL))
        .await?;
    let replica_a = Leases::new(store.clone(), TTL, "replica-a".into());
    let replica_b = Leases::new(store.clone(), TTL, "replica-b".into());
    let never = CancellationToken::new();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    // Every state the entry goes through, to see the claim and the hand-over.
    let mut watch = store.watch(KEY).await?;
    let states = tokio::spawn(async move {
        let mut states = Vec::new();
        while let Ok(Some(Ok(entry))) =
            tokio::time::timeout(Duration::from_millis(1500), watch.next()).await
        {
            let state = match serde_json::from_slice::<LeaseValue>(&entry.value) {
                Ok(LeaseValue::Held {
                    holder,
                    next: Some(_),
                    ..
                }) => format!("held:{holder}+claim"),
                Ok(LeaseValue::Held { holder, .. }) => format!("held:{holder}"),
                Ok(LeaseValue::Reserved { .. }) => "reserved".to_owned(),
                Ok(LeaseValue::Free { .. }) | Err(_) => "free".to_owned(),
            };
            if states.last() != Some(&state) {
                states.push(state);
            }
        }
        states
    });

    // A1 holds for longer than a TTL (refreshing); A2 queues behind it inside replica A.
    let first = replica_a.acquire(KEY, "a1", &never).await?;
    order.lock().unwrap().push("a1");
    let queued_locally = {
        let (replica_a, never, order) = (replica_a.clone(), never.clone(), order.clone());
        tokio::spawn(async move {
            let acquired = replica_a.acquire(KEY, "a2", &never).await?;
            order.lock().unwrap().push("a2");
            acquired.lease.release().await;
            Ok::<_, anyhow::Error>(())
        })
    };
    let waiting_elsewhere = {
        let (replica_b, never, order) = (replica_b.clone(), never.clone(), order.clone());
        tokio::spawn(async move {
            let acquired = replica_b.acquire(KEY, "b", &never).await?;
            order.lock().unwrap().push("b");
            acquired.lease.release().await;
            Ok::<_, anyhow::Error>(())
        })
    };
    // B starves after one TTL and claims the lease; the holder sees it when refreshing.
    tokio::time::sleep(TTL * 2).await;
    first.lease.release().await;
    tokio::time::timeout(Duration::from_secs(10), async {
        waiting_elsewhere.await??;
        queued_locally.await??;
        Ok::<_, anyhow::Error>(())
    })
    .await??;
    assert_eq!(
        *order.lock().unwrap(),
        ["a1", "b", "a2"],
        "the starved waiter went first"
    );
    let states = states.await?;
    let position = |state: &str| states.iter().position(|s| s == state);
    let (claimed, reserved, taken) = (
        position("held:a1+claim"),
        position("reserved"),
        position("held:b"),
    );
    assert!(
        claimed.is_some() && claimed < reserved && reserved < taken,
        "expected claim, then hand-over, then B holding: {states:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_crashed_holders_lease_expires_and_is_taken() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = nats.jetstream().await?;
    let store = js
        .create_key_value(Leases::bucket_config("leases".into(), TTL))
        .await?;
    // What a replica that crashed while holding the lease leaves behind.
    let dead = LeaseValue::Held {
        token: "dead-token".into(),
        owner: "crashed-host/1".into(),
        holder: "doomed-event".into(),
        acquired_at: chrono::Utc::now(),
        next: None,
    };
    store.put(KEY, serde_json::to_vec(&dead)?.into()).await?;
    let survivor = Leases::new(store, TTL, "survivor".into());
    let never = CancellationToken::new();
    let asked = Instant::now();
    let taken = tokio::time::timeout(
        Duration::from_secs(10),
        survivor.acquire(KEY, "next", &never),
    )
    .await??;
    assert!(taken.contended);
    assert!(
        asked.elapsed() >= TTL / 2,
        "taken while the crashed holder's lease was fresh"
    );
    taken.lease.release().await;
    Ok(())
}

#[tokio::test]
async fn reusing_released_keys_is_uncontended_and_cheap() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = nats.jetstream().await?;
    let ttl = Duration::from_secs(30);
    let store = js
        .create_key_value(Leases::bucket_config("leases".into(), ttl))
        .await?;
    let leases = Leases::new(store, ttl, "replica".into());
    let never = CancellationToken::new();
    // More reuses than the server allows consumers per stream (1000): a watch per
    // acquisition of a recently released key would exhaust them.
    for round in 0..1500 {
        let key = format!("p.s.svc-{}", round % 5);
        let acquired =
            tokio::time::timeout(Duration::from_secs(5), leases.acquire(&key, "e", &never))
                .await??;
        assert!(
            !acquired.contended,
            "round {round}: a free key counted as contended"
        );
        acquired.lease.release().await;
    }
    let info = js.get_stream("KV_leases").await?.info().await?.clone();
    assert_eq!(
        info.state.consumer_count, 0,
        "acquisitions left consumers behind"
    );
    Ok(())
}
