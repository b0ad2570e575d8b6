//! The Redis engine on a real Redis Cluster (three masters started by the test): the same
//! behaviour suites as on one server, keys spreading over the nodes while each script's
//! keys share a slot, pub/sub between nodes attached to different cluster nodes, and a
//! cluster node going down.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use switchboard_engine::broker::Recv;
use switchboard_engine::{EngineError, suite};
use switchboard_engine_redis::RedisOptions;
use switchboard_testpeers::RedisCluster;

const MASTERS: usize = 3;

async fn engine(options: RedisOptions) -> switchboard_engine::Engine {
    switchboard_engine_redis::connect(options)
        .await
        .expect("connect to the cluster")
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

/// Two nodes whose subscriber connections sit on different cluster nodes still hear each
/// other: the cluster forwards every PUBLISH to all its nodes.
#[tokio::test]
async fn a_publish_through_one_cluster_node_reaches_a_subscriber_on_another() {
    let cluster = RedisCluster::start(MASTERS);
    let urls = cluster.urls();
    let seeded = |first: usize| RedisOptions {
        cluster: true,
        ..RedisOptions::new(
            (0..urls.len())
                .map(|i| urls[(first + i) % urls.len()].clone())
                .collect::<Vec<_>>()
                .join(","),
        )
    };
    let a = engine(seeded(0)).await;
    let b = engine(seeded(1)).await;
    let mut sub_a = a.broker.subscribe("room:r1").await.unwrap();
    let mut sub_b = b.broker.subscribe("room:r1").await.unwrap();
    for i in 0..20u8 {
        a.broker
            .publish("room:r1", Bytes::from(vec![i]))
            .await
            .unwrap();
    }
    for sub in [&mut sub_a, &mut sub_b] {
        for i in 0..20u8 {
            assert_eq!(
                tokio::time::timeout(Duration::from_secs(2), sub.recv())
                    .await
                    .expect("delivered"),
                Recv::Message(Bytes::from(vec![i])),
                "every node gets every message, in order"
            );
        }
    }
}

/// A master going down: what lives on it fails with a clear error within bounded time,
/// what lives elsewhere keeps working, and a subscriber attached to it is told it may have
/// missed messages, then moves to another node.
#[tokio::test]
async fn a_cluster_node_down_fails_its_slots_clearly_and_the_rest_keeps_working() {
    let mut cluster = RedisCluster::start(MASTERS);
    // The subscriber connection goes to the first seed: node 0, the one we kill.
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
    let live_channel = (0..)
        .map(|i| format!("room:{i}"))
        .find(|c| cluster.node_of(&format!("switchboard:{c}")) != 0)
        .unwrap();
    let mut sub = engine.broker.subscribe(&live_channel).await.unwrap();
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
        "a subscriber whose connection died may have missed messages: it is told so"
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

    // The subscriber reconnects to another seed; pub/sub works again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut sub = loop {
        match engine.broker.subscribe(&live_channel).await {
            Ok(s) => break s,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("broker never moved to a live node: {e}"),
        }
    };
    engine
        .broker
        .publish(&live_channel, Bytes::from_static(b"again"))
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), sub.recv())
            .await
            .expect("delivered after the move"),
        Recv::Message(Bytes::from_static(b"again"))
    );
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
