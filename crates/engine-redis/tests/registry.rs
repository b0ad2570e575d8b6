//! Presence across nodes: two registries on one Redis act as two nodes; a node that stops
//! heartbeating (its process died) loses its connections after the TTL; Redis going away
//! gives errors, and presence heals once it is back.

mod common;

use std::time::Duration;

use switchboard_engine::broker::Recv;
use switchboard_engine::registry::{EXPIRED_CHANNEL, Located};
use switchboard_engine::{EngineError, Registry};
use switchboard_engine_redis::{RedisOptions, RedisRegistry};

const TTL: Duration = Duration::from_millis(600);

fn options(redis: &common::RedisServer) -> RedisOptions {
    RedisOptions {
        presence_ttl: TTL,
        // A key prefix of its own per test: should two tests ever reach one redis-server
        // (a port freed by the restart test and taken by another), their users stay apart.
        prefix: format!("t{}:", switchboard_engine::seal::random_id::<6>()),
        ..redis.options()
    }
}

async fn node(options: &RedisOptions) -> RedisRegistry {
    RedisRegistry::connect(options)
        .await
        .expect("connect registry")
}

fn conns(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(c, n)| ((*c).to_owned(), (*n).to_owned()))
        .collect()
}

#[tokio::test]
async fn a_user_on_two_nodes_goes_offline_only_with_the_last_connection() {
    let redis = common::RedisServer::start();
    // Longer than the other tests' TTL: heartbeats must keep both nodes' connections over
    // several TTLs, and a starved machine (CI) can delay a 200 ms heartbeat past 600 ms.
    let options = RedisOptions {
        presence_ttl: Duration::from_secs(3),
        ..options(&redis)
    };
    let a = node(&options).await;
    let b = node(&options).await;

    assert!(a.connect("alice", "a/1", "A").await.unwrap(), "first");
    assert!(
        !b.connect("alice", "b/1", "B").await.unwrap(),
        "second node"
    );
    assert!(b.connect("bob", "b/2", "B").await.unwrap());
    // Each node sees the other's connections, oldest first, with their nodes.
    for r in [&a, &b] {
        assert_eq!(
            r.connections("alice").await.unwrap(),
            conns(&[("a/1", "A"), ("b/1", "B")])
        );
        let mut online = r.online_users().await.unwrap();
        online.sort();
        assert_eq!(online, ["alice", "bob"]);
    }
    // Outlive several TTLs: heartbeats keep both nodes' connections.
    tokio::time::sleep(options.presence_ttl * 2).await;
    assert_eq!(a.connections("alice").await.unwrap().len(), 2);

    assert!(!a.disconnect("alice", "a/1").await.unwrap(), "still on B");
    assert!(b.is_online("alice").await.unwrap());
    assert!(a.is_online("alice").await.unwrap());
    assert!(b.disconnect("alice", "b/1").await.unwrap(), "the last one");
    assert!(!a.is_online("alice").await.unwrap());
    assert_eq!(a.online_users().await.unwrap(), ["bob"]);
}

#[tokio::test]
async fn concurrent_connects_and_disconnects_across_nodes_report_one_arrival_and_one_departure() {
    let redis = common::RedisServer::start();
    // A long TTL: this test is about concurrent arrivals and departures, and a node whose
    // 600 ms heartbeat is late on a starved machine (CI) would also be swept and heal
    // meanwhile, which is another test's subject.
    let options = RedisOptions {
        presence_ttl: Duration::from_secs(30),
        ..redis.options()
    };
    let a = std::sync::Arc::new(node(&options).await);
    let b = std::sync::Arc::new(node(&options).await);
    for round in 0..20 {
        let user = format!("u{round}");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (r, n) = if i % 2 == 0 {
                (a.clone(), "A")
            } else {
                (b.clone(), "B")
            };
            let user = user.clone();
            tasks.push(tokio::spawn(async move {
                r.connect(&user, &format!("c{i}"), n).await.unwrap()
            }));
        }
        let mut firsts = 0;
        for t in tasks {
            firsts += usize::from(t.await.unwrap());
        }
        assert_eq!(firsts, 1, "exactly one connection brings {user} online");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let r = if i % 3 == 0 { a.clone() } else { b.clone() };
            let user = user.clone();
            tasks.push(tokio::spawn(async move {
                r.disconnect(&user, &format!("c{i}")).await.unwrap()
            }));
        }
        let mut lasts = 0;
        for t in tasks {
            lasts += usize::from(t.await.unwrap());
        }
        assert_eq!(lasts, 1, "exactly one disconnect takes {user} offline");
        assert!(!a.is_online(&user).await.unwrap());
    }
}

#[tokio::test]
async fn a_dead_nodes_connections_vanish_after_the_ttl_and_the_live_nodes_remain() {
    let redis = common::RedisServer::start();
    dead_node_vanishes(options(&redis)).await;
}

/// The same on a Redis Cluster: the sweep runs on presence's slot and its announcement
/// (a `PUBLISH` from the script) reaches a subscriber attached to another cluster node.
#[tokio::test]
async fn on_a_cluster_a_dead_nodes_connections_vanish_and_are_announced() {
    let cluster = switchboard_testpeers::RedisCluster::start(3);
    // Seeds starting past presence's node: the subscriber connects to the first seed.
    let owner = cluster.node_of("switchboard:{registry}:online");
    let urls = cluster.urls();
    let seeds: Vec<String> = (1..=urls.len())
        .map(|i| urls[(owner + i) % urls.len()].clone())
        .collect();
    dead_node_vanishes(RedisOptions {
        presence_ttl: TTL,
        cluster: true,
        ..RedisOptions::new(seeds.join(","))
    })
    .await;
}

async fn dead_node_vanishes(options: RedisOptions) {
    let live = node(&options).await;
    let doomed = node(&options).await;
    live.connect("alice", "l/1", "L").await.unwrap();
    doomed.connect("alice", "d/1", "D").await.unwrap();
    doomed.connect("carol", "d/2", "D").await.unwrap();
    assert_eq!(live.online_users().await.unwrap().len(), 2);
    let carol = ["carol".to_owned()];
    let Located::At { version, nodes } = live.locate(&carol, None).await.unwrap() else {
        panic!("no version known: a full answer");
    };
    assert_eq!(nodes.keys().collect::<Vec<_>>(), ["D"]);
    let engine = switchboard_engine_redis::connect(options.clone())
        .await
        .expect("connect engine");
    let mut expired = engine
        .broker
        .subscribe(EXPIRED_CHANNEL)
        .await
        .expect("subscribe");

    // The node dies: no disconnect, its heartbeat just stops.
    drop(doomed);
    // Not presumed dead before its TTL could have run out…
    tokio::time::sleep(TTL / 4).await;
    assert!(live.is_online("carol").await.unwrap(), "gone too early");

    // …and gone soon after it did.
    let deadline = tokio::time::Instant::now() + TTL * 3;
    while live.is_online("carol").await.unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead node's user is still online"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(live.online_users().await.unwrap(), ["alice"]);
    assert_eq!(
        live.locate(&carol, Some(version)).await.unwrap(),
        Located::At {
            version: version + 1,
            nodes: Default::default()
        },
        "the sweep is a move: a node that kept where carol was learns she is nowhere"
    );
    assert_eq!(
        expired.recv().await,
        Recv::Message("carol".into()),
        "the user taken offline is announced (alice is still on L)"
    );
    assert_eq!(
        live.connections("alice").await.unwrap(),
        conns(&[("l/1", "L")]),
        "the live node's connection stays; the dead one's is gone"
    );
    // The survivor's heartbeat keeps it well past the TTL.
    tokio::time::sleep(TTL * 2).await;
    assert!(live.is_online("alice").await.unwrap());
    assert!(
        live.disconnect("alice", "l/1").await.unwrap(),
        "its last live connection takes alice offline"
    );
}

#[tokio::test]
async fn a_redis_that_lost_its_keys_does_not_hand_out_a_kept_version_again() {
    let mut redis = common::RedisServer::start();
    let options = RedisOptions {
        presence_ttl: Duration::from_secs(30),
        ..redis.options()
    };
    let users = ["alice".to_owned()];
    let kept = {
        let r = node(&options).await;
        r.connect("alice", "c1", "A").await.unwrap();
        let Located::At { version, .. } = r.locate(&users, None).await.unwrap() else {
            panic!("no version known: a full answer");
        };
        version
    };
    // Killed and started again without persistence: every key is gone, the version
    // counter too.
    redis.restart();
    let r = node(&options).await;
    // As many moves as the first life had: a counter starting again from zero would now
    // stand exactly at the kept version, with alice nowhere and bob on B.
    r.connect("bob", "b1", "B").await.unwrap();
    match r.locate(&users, Some(kept)).await.unwrap() {
        Located::At { version, nodes } => {
            assert!(version > kept, "{version} after {kept}");
            assert!(nodes.is_empty(), "alice's connection went with the keys");
        }
        Located::Unchanged => panic!("a state from before the restart was taken as current"),
    }
}

#[tokio::test]
async fn redis_down_gives_errors_then_presence_heals() {
    // Durable, and a TTL longer than the outage: what was recorded before the outage is
    // still there after it, so only retrying the failed calls can fix presence.
    let mut redis = common::RedisServer::start_durable();
    let options = RedisOptions {
        presence_ttl: Duration::from_secs(30),
        ..redis.options()
    };
    let r = node(&options).await;
    r.connect("alice", "c1", "A").await.unwrap();
    r.connect("dave", "c3", "A").await.unwrap();

    redis.kill();
    let bounded = Duration::from_secs(15);
    let online = tokio::time::timeout(bounded, r.is_online("alice"))
        .await
        .expect("must not hang");
    assert!(
        matches!(online, Err(EngineError::Unavailable(_))),
        "{online:?}"
    );
    let connect = tokio::time::timeout(bounded, r.connect("bob", "c2", "A"))
        .await
        .expect("must not hang");
    assert!(
        matches!(connect, Err(EngineError::Unavailable(_))),
        "{connect:?}"
    );
    let gone = tokio::time::timeout(bounded, r.disconnect("dave", "c3"))
        .await
        .expect("must not hang");
    assert!(matches!(gone, Err(EngineError::Unavailable(_))), "{gone:?}");

    // Back: the heartbeat records bob (who came during the outage) and forgets dave (who
    // left during it); alice was never touched.
    redis.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    loop {
        if let Ok(mut users) = r.online_users().await {
            users.sort();
            if users == ["alice", "bob"] {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence never healed after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(r.connections("bob").await.unwrap(), conns(&[("c2", "A")]));
    assert!(r.disconnect("alice", "c1").await.unwrap(), "alice's last");
    assert_eq!(r.online_users().await.unwrap(), ["bob"]);
    assert!(r.disconnect("bob", "c2").await.unwrap(), "bob's last");
    assert!(r.online_users().await.unwrap().is_empty());
}

#[tokio::test]
async fn redis_restarted_empty_gets_the_live_connections_back() {
    let mut redis = common::RedisServer::start();
    let options = options(&redis);
    let r = node(&options).await;
    r.connect("alice", "c1", "A").await.unwrap();
    redis.restart(); // no AOF: everything is gone
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !r.is_online("alice").await.unwrap_or(false) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice's live connection was never registered again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(r.connections("alice").await.unwrap(), conns(&[("c1", "A")]));
}
