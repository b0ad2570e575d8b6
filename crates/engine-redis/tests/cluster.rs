//! The Redis engine on a real Redis Cluster (three masters started by the test): the same
//! behaviour suites as on one server, keys spreading over the nodes while each script's
//! keys share a slot, sharded pub/sub (each channel on its slot's master) and what its
//! subscribers are told when a channel's subscription breaks (connection killed, master
//! down or failed over, slot moved), and a cluster node going down.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use switchboard_engine::broker::Recv;
use switchboard_engine::{Broker, EngineError, Subscription, suite};
use switchboard_engine_redis::RedisOptions;
use switchboard_testpeers::RedisCluster;

const MASTERS: usize = 3;

async fn engine(options: RedisOptions) -> switchboard_engine::Engine {
    switchboard_engine_redis::connect(options)
        .await
        .expect("connect to the cluster")
}

/// Options whose seed list starts at node `first`, so engines enter the cluster through
/// different nodes.
fn seeded(cluster: &RedisCluster, first: usize) -> RedisOptions {
    let urls = cluster.urls();
    RedisOptions {
        cluster: true,
        ..RedisOptions::new(
            (0..urls.len())
                .map(|i| urls[(first + i) % urls.len()].clone())
                .collect::<Vec<_>>()
                .join(","),
        )
    }
}

/// A channel name (as the broker takes it) whose slot node `node` serves.
fn channel_on(cluster: &RedisCluster, node: usize) -> String {
    (0..)
        .map(|i| format!("room:{i}"))
        .find(|c| cluster.node_of(&format!("switchboard:{c}")) == node)
        .expect("some channel hashes to every master")
}

async fn next(sub: &mut Subscription, within: Duration) -> Recv {
    tokio::time::timeout(within, sub.recv())
        .await
        .expect("the subscriber hears something in time")
}

/// A subscription to `channel` that has heard a first message: the broker is subscribed
/// on the channel's master before the test breaks something.
async fn subscribed_and_hearing(broker: &dyn Broker, channel: &str) -> Subscription {
    let mut sub = broker.subscribe(channel).await.unwrap();
    broker
        .publish(channel, Bytes::from_static(b"before"))
        .await
        .unwrap();
    assert_eq!(
        next(&mut sub, Duration::from_secs(5)).await,
        Recv::Message(Bytes::from_static(b"before"))
    );
    sub
}

/// After a break, a new subscription to `channel` hears new messages once the broker is
/// subscribed on the channel's (possibly new) master, in order, on the same subscription.
/// Attempts before that may fail or be cut off (the client is still repairing), each
/// within bounded time.
async fn hears_again(broker: &dyn Broker, channel: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    for attempt in 0.. {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{channel} never delivered again"
        );
        let subscribed = tokio::time::timeout(Duration::from_secs(15), broker.subscribe(channel))
            .await
            .expect("a subscribe during repairs must not hang");
        let Ok(mut sub) = subscribed else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let probe = Bytes::from(format!("probe {attempt}"));
        if broker.publish(channel, probe.clone()).await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(2), sub.recv()).await {
            Ok(Recv::Message(m)) if m == probe => {
                for i in 0..10u8 {
                    broker.publish(channel, Bytes::from(vec![i])).await.unwrap();
                }
                for i in 0..10u8 {
                    assert_eq!(
                        next(&mut sub, Duration::from_secs(5)).await,
                        Recv::Message(Bytes::from(vec![i])),
                        "once repaired, every message arrives, in order"
                    );
                }
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test]
async fn broker_behaviour_suite_on_a_cluster() {
    let cluster = RedisCluster::start(MASTERS);
    let engine = engine(common::cluster_options(&cluster)).await;
    suite::broker(engine.broker.as_ref()).await;
}

#[tokio::test]
async fn queue_behaviour_suite_on_a_cluster() {
    let cluster = RedisCluster::start(MASTERS);
    let options = common::cluster_options(&cluster);
    let engine = engine(options.clone()).await;
    suite::queue(engine.queue.as_ref(), options.retry).await;
}

#[tokio::test]
async fn credentials_behaviour_suite_on_a_cluster() {
    let cluster = RedisCluster::start(MASTERS);
    let engine = engine(common::cluster_options(&cluster)).await;
    suite::credentials(engine.credentials.as_ref()).await;
}

#[tokio::test]
async fn registry_behaviour_suite_on_a_cluster() {
    let cluster = RedisCluster::start(MASTERS);
    let engine = engine(common::cluster_options(&cluster)).await;
    suite::registry(engine.registry.as_ref()).await;
}

#[tokio::test]
async fn lease_behaviour_suite_on_a_cluster() {
    let cluster = RedisCluster::start(MASTERS);
    let engine = engine(common::cluster_options(&cluster)).await;
    suite::leases(engine.leases.as_ref()).await;
}

/// Queues and sessions spread over the masters; each one's keys sit together on one.
#[tokio::test]
async fn queues_and_sessions_spread_over_the_nodes_each_on_one_slot() {
    let cluster = RedisCluster::start(MASTERS);
    let engine = engine(common::cluster_options(&cluster)).await;
    for i in 0..24 {
        let queue = format!("q{i}");
        engine
            .queue
            .push(&queue, "j1", Bytes::from_static(b"job"))
            .await
            .unwrap();
        engine
            .queue
            .push(&queue, "j2", Bytes::from_static(b"job"))
            .await
            .unwrap();
        // One retry (a sorted set) next to the stream: NACK's script touches both.
        let d = engine
            .queue
            .reserve(&queue, Duration::from_secs(2))
            .await
            .unwrap()
            .expect("a job");
        engine.queue.nack(&queue, d.tag).await.unwrap();
        let session = format!("s{i}");
        for key in ["a", "b"] {
            engine
                .credentials
                .put(
                    &session,
                    key,
                    Bytes::from_static(b"sealed"),
                    Duration::from_secs(60),
                )
                .await
                .unwrap();
        }
    }

    // kind ("queue", "session") → the masters holding keys of that kind.
    let mut spread: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for node in 0..cluster.len() {
        for key in cluster.keys(node) {
            let Some(rest) = key.strip_prefix("switchboard:") else {
                continue;
            };
            // Every key of one queue or session lives where its tag's slot lives.
            let stem = &rest[..rest.find('}').expect("every key has a hash tag") + 1];
            assert_eq!(
                cluster.node_of(&format!("switchboard:{stem}")),
                node,
                "{key} is not with the rest of its unit"
            );
            let kind = rest.split(':').next().unwrap_or_default();
            spread.entry(kind.to_owned()).or_default().insert(node);
        }
    }
    for kind in ["queue", "session"] {
        let nodes = spread.get(kind).cloned().unwrap_or_default();
        assert!(
            nodes.len() > 1,
            "{kind} keys must spread over several masters, they are on {nodes:?}"
        );
    }

    // The units still work as wholes: a session deleted in one script, a queue emptied.
    assert_eq!(engine.credentials.delete_session("s3").await.unwrap(), 2);
    assert_eq!(engine.queue.remove("q3").await.unwrap().len(), 2);
}

/// Sharded pub/sub: a channel lives on the master owning its slot. Two nodes entering the
/// cluster through different seeds hear each other on channels of all three masters, in
/// order; each channel is subscribed on its owner only and no classic channel exists, so
/// no message crosses the cluster bus; and `publish` counts the subscribed nodes exactly.
#[tokio::test]
async fn sharded_channels_on_every_master_reach_nodes_entering_through_any_seed() {
    let cluster = RedisCluster::start(MASTERS);
    let a = engine(seeded(&cluster, 0)).await;
    let b = engine(seeded(&cluster, 1)).await;
    let channels: Vec<String> = (0..MASTERS).map(|n| channel_on(&cluster, n)).collect();
    let mut subs = Vec::new();
    for channel in &channels {
        subs.push((
            a.broker.subscribe(channel).await.unwrap(),
            b.broker.subscribe(channel).await.unwrap(),
        ));
    }
    for i in 0..20u8 {
        for channel in &channels {
            assert_eq!(
                a.broker
                    .publish(channel, Bytes::from(vec![i]))
                    .await
                    .unwrap(),
                2,
                "both nodes are subscribed on the channel's master"
            );
        }
    }
    for (sub_a, sub_b) in &mut subs {
        for sub in [sub_a, sub_b] {
            for i in 0..20u8 {
                assert_eq!(
                    next(sub, Duration::from_secs(5)).await,
                    Recv::Message(Bytes::from(vec![i])),
                    "every node gets every message, in order"
                );
            }
        }
    }
    for (node, channel) in channels.iter().enumerate() {
        let name = format!("switchboard:{channel}");
        for other in 0..MASTERS {
            let sharded = cluster.cli(other, &["--raw", "PUBSUB", "SHARDCHANNELS"]);
            assert_eq!(
                sharded.lines().any(|l| l == name),
                other == node,
                "{name} is subscribed on its owner {node} only; node {other} has: {sharded}"
            );
            let classic = cluster.cli(other, &["--raw", "PUBSUB", "CHANNELS"]);
            assert!(classic.trim().is_empty(), "classic channels: {classic}");
        }
    }
}

/// The broker's connection to one shard master is killed (`CLIENT KILL` on that master):
/// the channel's subscribers are told they may have missed messages, and a new subscription
/// hears new messages once the client has reconnected.
#[tokio::test]
async fn a_killed_shard_connection_cuts_its_subscribers_off_then_resubscribing_works() {
    let cluster = RedisCluster::start(MASTERS);
    let engine = engine(common::cluster_options(&cluster)).await;
    let channel = channel_on(&cluster, 1);
    let mut sub = subscribed_and_hearing(engine.broker.as_ref(), &channel).await;

    let killed = cluster.cli(1, &["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(
        killed.trim(),
        "1",
        "the broker's one subscriber connection there"
    );
    assert_eq!(
        next(&mut sub, Duration::from_secs(15)).await,
        Recv::Lagged,
        "a subscriber whose shard connection died may have missed messages: it is told so"
    );
    hears_again(engine.broker.as_ref(), &channel).await;
}

/// With replicas, a killed master fails over: its channels' subscribers are told they may
/// have missed messages, and new subscriptions hear new messages from the promoted replica.
#[tokio::test]
async fn a_failed_over_master_cuts_its_channels_subscribers_off_then_they_work_again() {
    let mut cluster = RedisCluster::start_with_replicas(3, 1);
    let engine = engine(common::cluster_options(&cluster)).await;
    let channel = channel_on(&cluster, 0);
    let mut sub = subscribed_and_hearing(engine.broker.as_ref(), &channel).await;

    cluster.kill_node(0);

    assert_eq!(
        next(&mut sub, Duration::from_secs(15)).await,
        Recv::Lagged,
        "the channel's master died: its subscribers are told"
    );
    hears_again(engine.broker.as_ref(), &channel).await;
    cluster.wait_ok();
    assert_ne!(
        cluster.node_of(&format!("switchboard:{channel}")),
        0,
        "a replica took the channel's slot over"
    );
}

/// A channel's slot moves to another master (resharding): the old master drops the
/// subscription, the channel's subscribers are told, a new subscription hears new
/// messages from the new owner, and a channel on an untouched master is not disturbed
/// by the move itself.
#[tokio::test]
async fn a_moved_slot_cuts_off_only_its_channels_subscribers() {
    let cluster = RedisCluster::start(MASTERS);
    let engine = engine(common::cluster_options(&cluster)).await;
    let moved = channel_on(&cluster, 0);
    let kept = channel_on(&cluster, 1);
    let mut sub_moved = engine.broker.subscribe(&moved).await.unwrap();
    let mut sub_kept = engine.broker.subscribe(&kept).await.unwrap();

    let slot = cluster.cli(
        0,
        &[
            "--raw",
            "CLUSTER",
            "KEYSLOT",
            &format!("switchboard:{moved}"),
        ],
    );
    let slot = slot.trim();
    let id = |node: usize| {
        cluster
            .cli(node, &["--raw", "CLUSTER", "MYID"])
            .trim()
            .to_owned()
    };
    let (from, to) = (id(0), id(2));
    // The slot holds no keys, so it moves without MIGRATE.
    for (node, args) in [
        (2, ["IMPORTING", from.as_str()]),
        (0, ["MIGRATING", to.as_str()]),
        (2, ["NODE", to.as_str()]),
        (0, ["NODE", to.as_str()]),
    ] {
        let out = cluster.cli(node, &["CLUSTER", "SETSLOT", slot, args[0], args[1]]);
        assert_eq!(out.trim(), "OK", "SETSLOT {args:?} on node {node}");
    }

    assert_eq!(
        next(&mut sub_moved, Duration::from_secs(15)).await,
        Recv::Lagged,
        "the moved channel's subscribers are told"
    );
    engine
        .broker
        .publish(&kept, Bytes::from_static(b"still here"))
        .await
        .unwrap();
    assert_eq!(
        next(&mut sub_kept, Duration::from_secs(5)).await,
        Recv::Message(Bytes::from_static(b"still here")),
        "a channel on another master keeps its subscribers"
    );

    hears_again(engine.broker.as_ref(), &moved).await;
    let sharded = cluster.cli(2, &["--raw", "PUBSUB", "SHARDCHANNELS"]);
    assert!(
        sharded.lines().any(|l| l == format!("switchboard:{moved}")),
        "the channel now lives on its new owner: {sharded}"
    );
}

/// A master going down (no replica): what lives on it fails with a clear error within
/// bounded time, subscribing to its channels too; what lives elsewhere keeps working; and
/// the subscribers of its channels are told they may have missed messages.
#[tokio::test]
async fn a_cluster_node_down_fails_its_slots_clearly_and_the_rest_keeps_working() {
    let mut cluster = RedisCluster::start(MASTERS);
    let engine = engine(common::cluster_options(&cluster)).await;
    let owner =
        |cluster: &RedisCluster, q: &str| cluster.node_of(&format!("switchboard:queue:{{{q}}}"));
    let doomed_queue = (0..)
        .map(|i| format!("q{i}"))
        .find(|q| owner(&cluster, q) == 0)
        .unwrap();
    let live_queue = (0..)
        .map(|i| format!("q{i}"))
        .find(|q| owner(&cluster, q) != 0)
        .unwrap();
    let doomed_channel = channel_on(&cluster, 0);
    let live_channel = channel_on(&cluster, 1);
    let mut sub = engine.broker.subscribe(&doomed_channel).await.unwrap();
    engine
        .queue
        .push(&live_queue, "kept", Bytes::from_static(b"k"))
        .await
        .unwrap();

    cluster.kill_node(0);

    let bounded = Duration::from_secs(15);
    let push = tokio::time::timeout(bounded, engine.queue.push(&doomed_queue, "j", Bytes::new()))
        .await
        .expect("a push to a dead node's slot must not hang");
    assert!(matches!(push, Err(EngineError::Unavailable(_))), "{push:?}");
    assert_eq!(
        tokio::time::timeout(bounded, sub.recv())
            .await
            .expect("the subscriber is told"),
        Recv::Lagged,
        "a subscriber whose channel's master died may have missed messages: it is told so"
    );
    let subscribe = tokio::time::timeout(bounded, engine.broker.subscribe(&doomed_channel))
        .await
        .expect("a subscribe to a dead node's channel must not hang");
    assert!(
        matches!(subscribe, Err(EngineError::Unavailable(_))),
        "{:?}",
        subscribe.err()
    );

    // Slots on the live masters keep working through the same engine.
    let job = tokio::time::timeout(
        bounded,
        engine.queue.reserve(&live_queue, Duration::from_secs(2)),
    )
    .await
    .expect("reserve on a live node must not hang")
    .expect("a live node's queue works")
    .expect("the job pushed before the failure");
    assert_eq!(job.job_id, "kept");
    engine.queue.ack(&live_queue, job.tag).await.unwrap();

    // Channels on the live masters work through the same engine.
    hears_again(engine.broker.as_ref(), &live_channel).await;
}

/// With replicas, a killed master's slots come back on its promoted replica: the engine
/// follows the new topology by itself, and a job replicated before the crash is there.
#[tokio::test]
async fn a_killed_master_fails_over_and_the_engine_follows() {
    let mut cluster = RedisCluster::start_with_replicas(3, 1);
    let engine = engine(common::cluster_options(&cluster)).await;
    let key = "switchboard:queue:{failover}";
    let owner = cluster.node_of(key);
    engine
        .queue
        .push("failover", "j1", Bytes::from_static(b"kept"))
        .await
        .unwrap();
    // Replication is asynchronous: wait until the master's replica holds the stream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(0..cluster.len()).any(|n| n != owner && cluster.keys(n).iter().any(|k| k == key)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never reached a replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    cluster.kill_node(owner);

    // Calls may fail while the cluster fails over (each within bounded time), then work.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let job = loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(15),
            engine.queue.reserve("failover", Duration::from_millis(500)),
        )
        .await
        .expect("a reserve during the failover must not hang");
        match attempt {
            Ok(Some(job)) => break job,
            Ok(None) | Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => panic!("the queue never came back after the failover: {other:?}"),
        }
    };
    assert_eq!(
        (job.job_id.as_str(), &job.payload[..]),
        ("j1", &b"kept"[..])
    );
    engine.queue.ack("failover", job.tag).await.unwrap();
    cluster.wait_ok();
    assert_ne!(cluster.node_of(key), owner, "a replica took the slot over");
}

/// Several URLs without the cluster switch are refused with a clear message, not
/// silently treated as one server.
#[tokio::test]
async fn several_urls_without_the_cluster_switch_are_refused() {
    let err = switchboard_engine_redis::connect(RedisOptions::new(
        "redis://127.0.0.1:1/,redis://127.0.0.1:2/",
    ))
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("redis_cluster"), "{err}");
}
