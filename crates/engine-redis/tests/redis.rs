//! What only a networked engine can get wrong: consumers that die, a Redis that restarts
//! or goes away. Each test runs its own redis-server.

mod common;

use std::time::Duration;

use bytes::Bytes;
use switchboard_engine::broker::Recv;
use switchboard_engine::{EngineError, JobQueue};
use switchboard_engine_redis::{RedisOptions, RedisQueue};

const CLAIM_IDLE: Duration = Duration::from_millis(400);

fn options(redis: &common::RedisServer) -> RedisOptions {
    RedisOptions {
        claim_idle: CLAIM_IDLE,
        ..redis.options()
    }
}

async fn queue(options: &RedisOptions) -> RedisQueue {
    RedisQueue::connect(options).await.expect("connect queue")
}

#[tokio::test]
async fn a_dead_consumers_job_is_reclaimed_but_a_live_ones_is_not() {
    let redis = common::RedisServer::start();
    let options = options(&redis);
    let a = queue(&options).await;
    let b = queue(&options).await;
    a.push("jobs", "j1", Bytes::from_static(b"one"))
        .await
        .unwrap();

    let held = a
        .reserve("jobs", Duration::ZERO)
        .await
        .unwrap()
        .expect("a reserves j1");
    assert_eq!(held.attempt, 1);
    // A is alive and touching its job: B must not take it however long it waits.
    assert!(
        b.reserve("jobs", CLAIM_IDLE * 4).await.unwrap().is_none(),
        "a live consumer's job was taken over"
    );

    // A dies without acking (its process is gone: nothing touches the job any more).
    drop(a);
    let taken = b
        .reserve("jobs", CLAIM_IDLE * 6)
        .await
        .unwrap()
        .expect("b takes over the dead consumer's job");
    assert_eq!(
        (taken.job_id.as_str(), &taken.payload[..]),
        ("j1", &b"one"[..])
    );
    assert_eq!(taken.attempt, 2, "the dead consumer's try counts");
    b.ack("jobs", taken.tag).await.unwrap();
    assert!(
        b.ack("jobs", held.tag).await.is_err(),
        "the job is done once; the old reservation is gone"
    );
    assert_eq!(b.len("jobs").await.unwrap(), 0);
}

#[tokio::test]
async fn a_job_that_kills_every_consumer_is_dead_lettered() {
    let redis = common::RedisServer::start();
    let options = options(&redis);
    let max = options.retry.max_attempts;
    queue(&options)
        .await
        .push("poison", "p1", Bytes::from_static(b"boom"))
        .await
        .unwrap();
    for attempt in 1..=max {
        let doomed = queue(&options).await;
        let d = doomed
            .reserve("poison", CLAIM_IDLE * 6)
            .await
            .unwrap()
            .expect("the job is handed out again");
        assert_eq!(d.attempt, attempt);
        drop(doomed); // dies mid-job
    }
    let last = queue(&options).await;
    tokio::time::sleep(CLAIM_IDLE * 2).await;
    assert!(
        last.reserve("poison", Duration::from_millis(200))
            .await
            .unwrap()
            .is_none(),
        "a job out of attempts must not be handed out again"
    );
    let dead = last.dead_letters("poison").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].job_id.as_str(), &dead[0].payload[..]),
        ("p1", &b"boom"[..])
    );
    assert_eq!(dead[0].attempt, max);
}

#[tokio::test]
async fn a_nack_from_any_node_retries_after_the_backoff() {
    let redis = common::RedisServer::start();
    let options = options(&redis);
    let a = queue(&options).await;
    let b = queue(&options).await;
    a.push("q", "j", Bytes::from_static(b"x")).await.unwrap();
    let d = a.reserve("q", Duration::ZERO).await.unwrap().unwrap();
    // Any node may nack: the tag is the stream entry id.
    let outcome = b.nack("q", d.tag).await.unwrap();
    let switchboard_engine::NackOutcome::Retrying { after } = outcome else {
        panic!("first failure must be retried, got {outcome:?}");
    };
    assert!(
        b.reserve("q", Duration::ZERO).await.unwrap().is_none(),
        "a retry is not visible before its backoff"
    );
    let again = b
        .reserve("q", after + Duration::from_secs(2))
        .await
        .unwrap()
        .expect("retried after backoff");
    assert_eq!((again.job_id.as_str(), again.attempt), ("j", 2));
}

#[tokio::test]
async fn restarted_redis_with_aof_loses_no_queued_job() {
    let mut redis = common::RedisServer::start_durable();
    let options = options(&redis);
    let engine = switchboard_engine_redis::connect(options.clone())
        .await
        .unwrap();
    let q = engine.queue.as_ref();
    for i in 0..5 {
        q.push("durable", &format!("job-{i}"), Bytes::from(vec![i as u8]))
            .await
            .unwrap();
    }
    let reserved = q.reserve("durable", Duration::ZERO).await.unwrap().unwrap();
    engine
        .credentials
        .put(
            "s1",
            "irc:alice",
            Bytes::from_static(b"sealed"),
            Duration::from_secs(600),
        )
        .await
        .unwrap();

    redis.restart(); // SIGKILL, then start again on the same AOF

    // The same engine reconnects by itself; the first calls may fail while it does.
    let mut len = None;
    for _ in 0..50 {
        match q.len("durable").await {
            Ok(n) => {
                len = Some(n);
                break;
            }
            Err(EngineError::Unavailable(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(len, Some(4), "four jobs still waiting after the restart");
    // The job reserved before the crash is still reserved by us, and acks normally.
    q.ack("durable", reserved.tag)
        .await
        .expect("reservation survived");
    let mut ids = Vec::new();
    while let Some(d) = q.reserve("durable", Duration::ZERO).await.unwrap() {
        ids.push(d.job_id.clone());
        q.ack("durable", d.tag).await.unwrap();
    }
    assert_eq!(ids, ["job-1", "job-2", "job-3", "job-4"]);
    assert_eq!(
        engine.credentials.get("s1", "irc:alice").await.unwrap(),
        Some(Bytes::from_static(b"sealed"))
    );
}

#[tokio::test]
async fn redis_down_gives_errors_then_recovers() {
    let mut redis = common::RedisServer::start();
    let engine = switchboard_engine_redis::connect(options(&redis))
        .await
        .unwrap();
    let mut sub = engine.broker.subscribe("session:s1").await.unwrap();
    engine
        .queue
        .push("q", "before", Bytes::from_static(b"b"))
        .await
        .unwrap();

    redis.kill();

    // Every call fails with a clear error within bounded time: no hang, no panic.
    let bounded = Duration::from_secs(15);
    let push = tokio::time::timeout(bounded, engine.queue.push("q", "refused", Bytes::new()))
        .await
        .expect("push must not hang");
    assert!(matches!(push, Err(EngineError::Unavailable(_))), "{push:?}");
    let publish = tokio::time::timeout(bounded, engine.broker.publish("session:s1", Bytes::new()))
        .await
        .expect("publish must not hang");
    assert!(
        matches!(publish, Err(EngineError::Unavailable(_))),
        "{publish:?}"
    );
    let reserve = tokio::time::timeout(
        bounded,
        engine.queue.reserve("q", Duration::from_millis(100)),
    )
    .await
    .expect("reserve must not hang");
    assert!(reserve.is_err(), "{reserve:?}");
    let get = tokio::time::timeout(bounded, engine.credentials.get("s1", "k"))
        .await
        .expect("get must not hang");
    assert!(get.is_err(), "{get:?}");
    // The subscriber may have missed messages: it is told so, not left with a gap.
    assert_eq!(
        tokio::time::timeout(bounded, sub.recv())
            .await
            .expect("subscriber told"),
        Recv::Lagged
    );
    let refused = tokio::time::timeout(bounded, engine.broker.subscribe("session:s2"))
        .await
        .expect("subscribe must not hang");
    assert!(
        refused.is_err(),
        "subscribing while Redis is down must fail"
    );

    redis.restart();

    // Reconnected with backoff: everything works again without rebuilding the engine.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if engine
            .queue
            .push("q", "after", Bytes::from_static(b"a"))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue never recovered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let job = engine
        .queue
        .reserve("q", Duration::from_secs(2))
        .await
        .unwrap()
        .expect("job pushed after recovery");
    assert_eq!(job.job_id, "after", "no AOF: the server came back empty");
    let mut sub = loop {
        match engine.broker.subscribe("session:s3").await {
            Ok(s) => break s,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("broker never recovered: {e}"),
        }
    };
    assert_eq!(
        engine
            .broker
            .publish("session:s3", Bytes::from_static(b"hi"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), sub.recv())
            .await
            .unwrap(),
        Recv::Message(Bytes::from_static(b"hi"))
    );
}

/// Start a reserve and drop it at its first wait, as a `select!` does when another branch
/// wins; then leave time for the fetch it started to finish.
async fn give_up_on_reserve(q: &RedisQueue) {
    tokio::select! {
        biased;
        got = q.reserve("q", Duration::from_secs(5)) => panic!("reserve cannot be ready on first poll: {got:?}"),
        () = std::future::ready(()) => {}
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_cancelled_reserve_strands_nothing_and_release_gives_jobs_back() {
    let redis = common::RedisServer::start();
    let options = options(&redis);
    let a = queue(&options).await;
    let b = queue(&options).await;
    a.push("q", "j1", Bytes::from_static(b"1")).await.unwrap();
    // The caller gives up at once (a select! branch dropped): the job it was fetching must
    // not be lost in flight.
    give_up_on_reserve(&a).await;
    let d = a
        .reserve("q", Duration::ZERO)
        .await
        .unwrap()
        .expect("the next reserve gets the job the dropped one fetched");
    assert_eq!((d.job_id.as_str(), d.attempt), ("j1", 1));
    a.ack("q", d.tag).await.unwrap();

    // Same again, but this node stops consuming: the job goes to the other node at once,
    // its attempt not counted.
    a.push("q", "j2", Bytes::from_static(b"2")).await.unwrap();
    give_up_on_reserve(&a).await;
    assert!(
        b.reserve("q", Duration::ZERO).await.unwrap().is_none(),
        "held by a"
    );
    a.release("q").await.unwrap();
    let d = b
        .reserve("q", Duration::ZERO)
        .await
        .unwrap()
        .expect("released job goes to b");
    assert_eq!((d.job_id.as_str(), d.attempt), ("j2", 1));
}
