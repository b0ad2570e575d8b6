//! The engine behaviour suites, run against the Redis backend on a real redis-server.

mod common;

use switchboard_engine::suite;

#[tokio::test]
async fn broker_behaviour_suite() {
    let redis = common::RedisServer::start();
    let engine = switchboard_engine_redis::connect(redis.options())
        .await
        .expect("connect");
    suite::broker(engine.broker.as_ref()).await;
}

#[tokio::test]
async fn queue_behaviour_suite() {
    let redis = common::RedisServer::start();
    let options = redis.options();
    let engine = switchboard_engine_redis::connect(options.clone())
        .await
        .expect("connect");
    suite::queue(engine.queue.as_ref(), options.retry).await;
}

#[tokio::test]
async fn credentials_behaviour_suite() {
    let redis = common::RedisServer::start();
    let engine = switchboard_engine_redis::connect(redis.options())
        .await
        .expect("connect");
    suite::credentials(engine.credentials.as_ref()).await;
}

#[tokio::test]
async fn registry_behaviour_suite() {
    let redis = common::RedisServer::start();
    let engine = switchboard_engine_redis::connect(redis.options())
        .await
        .expect("connect");
    suite::registry(engine.registry.as_ref()).await;
}

#[tokio::test]
async fn lease_behaviour_suite() {
    let redis = common::RedisServer::start();
    let engine = switchboard_engine_redis::connect(redis.options())
        .await
        .expect("connect");
    suite::leases(engine.leases.as_ref()).await;
}
