//! Release records against a real nats-server: exclusion, no starvation across
//! replicas, take-over of crashed holders with their progress, and cheap reuse.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use test_harness::nats::NatsServer;
use tokio_util::sync::CancellationToken;
use worker::pipeline::lease::{fence_after, LeaseError, ReleaseLeases};
use worker::pipeline::release_record::{Holder, ReleaseRecord, StepRecord};

const TTL: Duration = Duration::from_secs(1);
const KEY: &str = "sockshop.dev.carts";

/// A fresh nats-server with an empty release-record bucket.
async fn release_records_bucket() -> anyhow::Result<(
    NatsServer,
    async_nats::jetstream::Context,
    async_nats::jetstream::kv::Store,
)> {
    let nats = NatsServer::start().await?;
    let js = nats.jetstream().await?;
    let store = js
        .create_key_value(ReleaseLeases::bucket_config(
            "releases".into(),
            Duration::from_secs(3600),
        ))
        .await?;
    Ok((nats, js, store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_replica_is_not_starved_by_a_greedy_one() -> anyhow::Result<()> {
    let (_nats, _js, store) = release_records_bucket().await?;
    let greedy = ReleaseLeases::new(store.clone(), TTL, "replica-a".into());
    let patient = ReleaseLeases::new(store, TTL, "replica-b".into());

    let held = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let never = CancellationToken::new();
    // How often replica A has taken the release, so replica B asks once A is under way
    // (however long a busy machine makes that) and A's rounds meanwhile can be counted.
    let (took, mut a_took) = tokio::sync::watch::channel(0u32);

    // Two tasks on replica A take the release back to back, as a busy release would.
    let mut greedy_tasks = Vec::new();
    for task in 0..2 {
        let (greedy, held, overlaps, stop, never, took) = (
            greedy.clone(),
            held.clone(),
            overlaps.clone(),
            stop.clone(),
            never.clone(),
            took.clone(),
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
                took.send_modify(|n| *n += 1);
                tokio::time::sleep(Duration::from_millis(30)).await;
                held.store(false, Ordering::SeqCst);
                acquired.lease.hand_back(|_| {}).await?;
                rounds += 1;
            }
            Ok::<_, anyhow::Error>(rounds)
        }));
    }
    // Replica B asks once A holds the release (however long a busy machine makes A take
    // to get there). B can still land in the moment between two of A's rounds and get the
    // release without waiting: that tests nothing, so B gives it back and asks again.
    let mut waited = Duration::ZERO;
    let mut contended_at = None;
    for attempt in 1..=10 {
        let a_took_before = *a_took.borrow();
        tokio::time::timeout(
            Duration::from_secs(30),
            a_took.wait_for(|n| *n > a_took_before),
        )
        .await
        .map_err(|_| anyhow::anyhow!("replica A did not take the release within 30 s"))??;
        let asked = Instant::now();
        let acquired = tokio::time::timeout(
            Duration::from_secs(10),
            patient.acquire(KEY, &format!("patient-{attempt}"), &never),
        )
        .await
        .map_err(|_| anyhow::anyhow!("replica B starved: no release within 10 s"))??;
        waited = asked.elapsed();
        if held.swap(true, Ordering::SeqCst) {
            overlaps.fetch_add(1, Ordering::SeqCst);
        }
        held.store(false, Ordering::SeqCst);
        let contended = acquired.contended;
        acquired.lease.hand_back(|_| {}).await?;
        if contended {
            contended_at = Some(attempt);
            break;
        }
        eprintln!("replica B found the release free between two of A's rounds; asking again");
    }
    // Replica A goes on taking it after B (twice, so it did more than two rounds in all).
    let a_took_after_b = *a_took.borrow();
    tokio::time::timeout(
        Duration::from_secs(30),
        a_took.wait_for(|n| *n >= a_took_after_b + 2),
    )
    .await
    .map_err(|_| anyhow::anyhow!("replica A did not take the release again after B"))??;
    stop.cancel();
    let mut rounds = 0;
    for task in greedy_tasks {
        rounds += task.await??;
    }

    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two holders at once");
    let attempt = contended_at.expect("replica B never had to wait for replica A in 10 attempts");
    // Starving after one TTL, then served at one of the next hand-overs; the margin is
    // for a loaded machine (replica A re-takes the release every ~30 ms meanwhile).
    assert!(waited < TTL * 5, "replica B waited {waited:?}");
    eprintln!(
        "replica B waited {waited:?} (attempt {attempt}) while replica A did {rounds} rounds"
    );
    assert!(
        rounds > 2,
        "replica A kept working meanwhile ({rounds} rounds)"
    );
    Ok(())
}

/// A release record as a word: who holds it and whether someone claimed it next.
fn state_of(value: &[u8]) -> String {
    match serde_json::from_slice::<ReleaseRecord>(value) {
        Ok(ReleaseRecord {
            holder: Some(Holder { event_id, next, .. }),
            ..
        }) => match next {
            Some(_) => format!("held:{event_id}+claim"),
            None => format!("held:{event_id}"),
        },
        Ok(ReleaseRecord {
            reserved: Some(_), ..
        }) => "reserved".to_owned(),
        _ => "free".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starved_waiter_gets_the_release_before_the_holders_own_queue() -> anyhow::Result<()> {
    let (_nats, _js, store) = release_records_bucket().await?;
    let replica_a = ReleaseLeases::new(store.clone(), TTL, "replica-a".into());
    let replica_b = ReleaseLeases::new(store.clone(), TTL, "replica-b".into());
    let never = CancellationToken::new();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    // Every state the entry goes through, to see the claim and the hand-over, up to the
    // revision of the last write (sent once everything is done).
    let mut watch = store.watch(KEY).await?;
    let (last_write, mut last_revision) = tokio::sync::watch::channel(None::<u64>);
    let states = tokio::spawn(async move {
        let mut states: Vec<String> = Vec::new();
        let mut seen = 0;
        loop {
            if last_revision.borrow().is_some_and(|last| seen >= last) {
                return Ok::<_, anyhow::Error>(states);
            }
            tokio::select! {
                entry = watch.next() => {
                    let entry = entry.ok_or_else(|| anyhow::anyhow!("the watch ended: {states:?}"))??;
                    seen = entry.revision;
                    let state = state_of(&entry.value);
                    if states.last() != Some(&state) {
                        states.push(state);
                    }
                }
                changed = last_revision.changed() => changed?,
            }
        }
    });
    // A second look at the same changes, to know when B's claim has been seen by A.
    let mut changes = store.watch(KEY).await?;
    // A1 holds for longer than a TTL (refreshing); A2 queues behind it inside replica A.
    let first = replica_a.acquire(KEY, "a1", &never).await?;
    order.lock().unwrap().push("a1");
    let queued_locally = {
        let (replica_a, never, order) = (replica_a.clone(), never.clone(), order.clone());
        tokio::spawn(async move {
            let acquired = replica_a.acquire(KEY, "a2", &never).await?;
            order.lock().unwrap().push("a2");
            acquired.lease.hand_back(|_| {}).await?;
            Ok::<_, anyhow::Error>(())
        })
    };
    let waiting_elsewhere = {
        let (replica_b, never, order) = (replica_b.clone(), never.clone(), order.clone());
        tokio::spawn(async move {
            let acquired = replica_b.acquire(KEY, "b", &never).await?;
            order.lock().unwrap().push("b");
            acquired.lease.hand_back(|_| {}).await?;
            Ok::<_, anyhow::Error>(())
        })
    };
    // B starves after one TTL and claims the lease; the holder sees it when refreshing:
    // A1 keeps the release fresh until the record has carried the claim twice (B's claim,
    // then A's own refresh adopting it), however long a busy machine makes that take.
    let claim_seen_by_holder = async {
        let mut with_claim = 0;
        while with_claim < 2 {
            let entry = changes
                .next()
                .await
                .ok_or_else(|| anyhow::anyhow!("the watch ended"))??;
            if state_of(&entry.value) == "held:a1+claim" {
                with_claim += 1;
            }
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::select! {
        seen = tokio::time::timeout(Duration::from_secs(30), claim_seen_by_holder) => seen
            .map_err(|_| anyhow::anyhow!("B's claim was not refreshed by A within 30 s"))??,
        never = first.lease.keep_fresh() => match never {},
    }
    first.lease.hand_back(|_| {}).await?;
    tokio::time::timeout(Duration::from_secs(10), async {
        waiting_elsewhere.await??;
        queued_locally.await??;
        Ok::<_, anyhow::Error>(())
    })
    .await??;
    // Everything is written: the states are complete once the watch reached the last write.
    last_write.send_replace(Some(record_of(&store).await?.0));
    let states = tokio::time::timeout(Duration::from_secs(10), states)
        .await
        .map_err(|_| anyhow::anyhow!("the watch did not reach the last write within 10 s"))???;
    assert_eq!(
        *order.lock().unwrap(),
        ["a1", "b", "a2"],
        "the starved waiter went first"
    );
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
async fn a_crashed_holders_release_is_taken_over_with_its_progress() -> anyhow::Result<()> {
    let (_nats, _js, store) = release_records_bucket().await?;
    // What a replica that crashed while holding the release leaves behind: its
    // holder entry and the progress of its event.
    let mut dead = ReleaseRecord {
        holder: Some(Holder {
            token: "dead-token".into(),
            owner: "crashed-host/1".into(),
            event_id: "doomed-event".into(),
            acquired_at: chrono::Utc::now(),
            next: None,
            parked: false,
            wake: None,
        }),
        ..ReleaseRecord::default()
    };
    dead.progress_mut("doomed-event", "sh.keptn.event.deployment.triggered")
        .steps
        .insert(
            "step-1".into(),
            StepRecord {
                output: serde_json::json!("done"),
                completed_at: chrono::Utc::now(),
            },
        );
    // The clock starts before the record is written, so the lease cannot have gone
    // stale before a TTL has passed on it, however long the write takes to return.
    let written = Instant::now();
    store.put(KEY, dead.encode()).await?;
    let survivor = ReleaseLeases::new(store, TTL, "survivor".into());
    let never = CancellationToken::new();
    let taken = tokio::time::timeout(
        Duration::from_secs(10),
        survivor.acquire(KEY, "next", &never),
    )
    .await??;
    assert!(taken.contended);
    // A tenth of the TTL for the server's wall clock, which judges the age, against this
    // monotonic one.
    assert!(
        written.elapsed() >= TTL * 9 / 10,
        "taken while the crashed holder's lease was fresh: {:?} after it was written",
        written.elapsed()
    );
    taken.lease.hand_back(|_| {}).await?;
    Ok(())
}

#[tokio::test]
async fn reusing_released_keys_is_uncontended_and_cheap() -> anyhow::Result<()> {
    let (_nats, js, store) = release_records_bucket().await?;
    let ttl = Duration::from_secs(30);
    let leases = ReleaseLeases::new(store, ttl, "replica".into());
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
        acquired.lease.hand_back(|_| {}).await?;
    }
    let info = js.get_stream("KV_releases").await?.info().await?.clone();
    assert_eq!(
        info.state.consumer_count, 0,
        "acquisitions left consumers behind"
    );
    Ok(())
}

/// A replica with parking on, on its own connection (wake requests are core NATS).
async fn parking_replica(
    nats: &NatsServer,
    store: &async_nats::jetstream::kv::Store,
    ttl: Duration,
    linger: Duration,
    name: &str,
) -> anyhow::Result<ReleaseLeases> {
    let client = async_nats::connect(nats.url()).await?;
    Ok(ReleaseLeases::new(store.clone(), ttl, name.into())
        .with_parking(client, linger)
        .await?)
}

async fn record_of(
    store: &async_nats::jetstream::kv::Store,
) -> anyhow::Result<(u64, ReleaseRecord)> {
    let entry = store
        .entry(KEY)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    Ok((entry.revision, serde_json::from_slice(&entry.value)?))
}

#[tokio::test]
async fn a_parked_release_is_reused_without_a_write_within_the_linger_and_with_one_after_it(
) -> anyhow::Result<()> {
    let (nats, _js, store) = release_records_bucket().await?;
    let ttl = Duration::from_secs(6);
    // The reuse below must come within the linger of the parking write: a read of the
    // record lies between them, which a busy machine can stretch.
    let linger = Duration::from_millis(1500);
    let replica = parking_replica(&nats, &store, ttl, linger, "replica").await?;
    let never = CancellationToken::new();

    let first = replica.acquire(KEY, "e1", &never).await?;
    first.lease.park(|r| r.complete("e1")).await?;
    let (parked_at, record) = record_of(&store).await?;
    let holder = record.holder.expect("a parked release keeps its holder");
    assert!(holder.parked && holder.wake.is_some());
    assert!(record.completed.contains("e1"));

    // The next event on it starts without writing; completing it is one write.
    let second = replica.acquire(KEY, "e2", &never).await?;
    assert!(!second.contended);
    assert_eq!(
        record_of(&store).await?.0,
        parked_at,
        "reuse wrote the record"
    );
    second.lease.park(|r| r.complete("e2")).await?;
    let (revision, record) = record_of(&store).await?;
    assert_eq!(
        revision,
        parked_at + 1,
        "completing a reused release: one write"
    );
    assert!(record.completed.contains("e1") && record.completed.contains("e2"));

    // Past the linger it is still parked (idle releases cost no writes), and taking it
    // again is one write, as for a free release.
    tokio::time::sleep(linger + Duration::from_millis(100)).await;
    let (idle_revision, record) = record_of(&store).await?;
    assert_eq!(
        idle_revision, revision,
        "an idle parked release was written"
    );
    assert!(record.holder.is_some_and(|h| h.parked));
    let third = replica.acquire(KEY, "e3", &never).await?;
    assert!(!third.contended);
    let (taken_at, record) = record_of(&store).await?;
    assert_eq!(
        taken_at,
        revision + 1,
        "a stale parked release is taken with one write"
    );
    assert_eq!(record.holder.unwrap().event_id, "e3");
    third.lease.hand_back(|r| r.complete("e3")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_gets_a_parked_or_busy_release_without_waiting_out_the_linger(
) -> anyhow::Result<()> {
    let (nats, _js, store) = release_records_bucket().await?;
    // Served well before the TTL shows the wake request at work, not a take-over.
    let ttl = Duration::from_secs(8);
    let linger = ttl / 3;
    let replica_a = parking_replica(&nats, &store, ttl, linger, "replica-a").await?;
    let replica_b = parking_replica(&nats, &store, ttl, linger, "replica-b").await?;
    let never = CancellationToken::new();

    // A parks a1 and takes the release again for a2 without writing, so the record
    // still says parked while a2 runs: B asks, A notes it and frees the release when
    // a2 ends instead of parking it again.
    let first = replica_a.acquire(KEY, "a1", &never).await?;
    first.lease.park(|r| r.complete("a1")).await?;
    let busy = replica_a.acquire(KEY, "a2", &never).await?;
    let waiter = tokio::spawn({
        let replica_b = replica_b.clone();
        let never = never.clone();
        async move {
            let taken = replica_b.acquire(KEY, "b1", &never).await?;
            let contended = taken.contended;
            taken.lease.park(|r| r.complete("b1")).await?;
            Ok::<_, anyhow::Error>(contended)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a2_ended = Instant::now();
    busy.lease.park(|r| r.complete("a2")).await?;
    assert!(tokio::time::timeout(ttl, waiter).await???, "B did not wait");
    let after_a2 = a2_ended.elapsed();
    assert!(
        after_a2 < ttl / 4,
        "B got the release {after_a2:?} after A's task ended"
    );

    // Now parked on B: A asks and gets it at once.
    let asked = Instant::now();
    let taken = tokio::time::timeout(ttl, replica_a.acquire(KEY, "a3", &never)).await??;
    let waited = asked.elapsed();
    assert!(taken.contended);
    assert!(
        waited < linger / 2,
        "A waited {waited:?} for a parked release"
    );
    taken.lease.park(|r| r.complete("a3")).await?;

    let (_, record) = record_of(&store).await?;
    for event in ["a1", "a2", "b1", "a3"] {
        assert!(record.completed.contains(event), "{event} forgotten");
    }
    replica_a.free_all_parked().await;
    replica_b.free_all_parked().await;
    assert!(
        record_of(&store).await?.1.holder.is_none(),
        "free_all_parked left the release held"
    );
    Ok(())
}

/// Fencing: a holder cut off from NATS (but not from the cluster its helm talks to) stops its
/// work before anybody may take the release over, that is within the TTL of its last
/// refresh; while NATS is up it keeps the release however long the work takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_cut_off_from_nats_stops_its_work_before_the_ttl() -> anyhow::Result<()> {
    let ttl = Duration::from_secs(6);
    let (mut nats, _js, store) = release_records_bucket().await?;
    let leases = ReleaseLeases::new(store.clone(), ttl, "isolated".into());
    let held = leases
        .acquire(KEY, "e1", &CancellationToken::new())
        .await?
        .lease;
    let (ended, stopped_after) = {
        let work = held.hold_while(std::future::pending::<()>());
        tokio::pin!(work);
        let kept = tokio::time::timeout(fence_after(ttl) + ttl / 3, &mut work).await;
        assert!(
            kept.is_err(),
            "the work was stopped while NATS was up: {kept:?}"
        );

        // The last successful refresh was sent before this instant.
        let cut_off = Instant::now();
        nats.kill().await?;
        let ended = tokio::time::timeout(Duration::from_secs(60), &mut work)
            .await
            .expect("the fence stops the work");
        (ended, cut_off.elapsed())
    };
    eprintln!("work stopped {stopped_after:?} after NATS went away (TTL {ttl:?})");
    assert!(
        matches!(&ended, Err(LeaseError::Fenced(key)) if key == KEY),
        "{ended:?}"
    );
    assert!(
        stopped_after < ttl,
        "the work ran {stopped_after:?} past the cut-off: another replica may take the release over after {ttl:?}"
    );

    // NATS back: the fenced holder still writes nothing (no refresh, no hand-back), so
    // the release runs out its TTL before anybody else takes it.
    nats.restart().await?;
    let handed_back = held.hand_back(|_| {}).await;
    assert!(
        matches!(&handed_back, Err(LeaseError::Fenced(key)) if key == KEY),
        "{handed_back:?}"
    );
    let holder = record_of(&store).await?.1.holder;
    assert_eq!(holder.map(|h| h.owner).as_deref(), Some("isolated"));
    Ok(())
}
