//! Broker faults, on a private Apache Kafka node per test: the broker
//! killed with SIGKILL in the middle of a run with live traffic and started
//! again on the same log, and a broker that is down when the processor
//! starts. The processor waits (one log line, the `waiting` metric),
//! resumes by itself, loses nothing and applies nothing twice: checked
//! against an independent reference, as the crash test does.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{PrivateKafka, TestEnv, free_port, reference};

#[tokio::test]
async fn broker_killed_mid_run_loses_nothing() {
    let kafka = PrivateKafka::start();
    let mut env = TestEnv::new("brokerkill").await;
    env.brokers = kafka.brokers();
    env.prepare(120, 3);
    let opening = reference::opening_stock(&env).await;

    // Live traffic over the whole outage: the producer's client buffers and
    // retries (idempotently) while the broker is down.
    let producer = env.spawn(&[
        "produce",
        "--count",
        "30000",
        "--rate",
        "3000",
        "--seed",
        "41",
        "--quiet",
        "--duplicate-ratio",
        "0.03",
        "--invalid-ratio",
        "0.01",
    ]);
    let metrics = format!("127.0.0.1:{}", free_port());
    let processor = env.spawn(&["run", "--epoch-ms", "50", "--workers", "2", "--metrics-addr", &metrics]);
    std::thread::sleep(Duration::from_secs(3));
    kafka.kill();
    // While the broker is down the processor says it waits, and the metric shows it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen_waiting = false;
    while Instant::now() < deadline && !seen_waiting {
        seen_waiting = common::waiting_on(&metrics, "kafka") == Some(1);
        std::thread::sleep(Duration::from_millis(200));
    }
    kafka.restart();
    assert!(producer.wait_with_output().unwrap().status.success(), "the producer delivered everything");
    // Not --exit-when-idle: after the restart the processor may well be at
    // the end of every partition for a while before the producer's client
    // reconnects and delivers what it buffered. Stop it once it has read
    // everything.
    env.wait_caught_up(Duration::from_secs(120)).await;
    let _ = std::process::Command::new("kill").args(["-TERM", &processor.id().to_string()]).status();
    let done = common::output_within(processor, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stderr}");
    assert!(seen_waiting, "stockflow_waiting{{what=\"kafka\"}} was 1 during the outage");
    assert!(stderr.contains("waiting for Kafka"), "the outage is logged: {stderr}");
    let checked = reference::assert_exactly_once(&env, 120, &opening).await;
    assert_eq!(checked.messages, 30_000, "the idempotent producer wrote each message once: {checked:?}");
    eprintln!("broker kill: {checked:?}");
}

#[tokio::test]
async fn broker_down_at_start_is_waited_for() {
    let kafka = PrivateKafka::start();
    let mut env = TestEnv::new("brokerdown").await;
    env.brokers = kafka.brokers();
    env.prepare(60, 2);
    let opening = reference::opening_stock(&env).await;
    env.produce_valid(&["--count", "5000", "--seed", "42", "--invalid-ratio", "0.02"]);
    kafka.stop();

    let processor = env.spawn(&["run", "--epoch-ms", "50", "--exit-when-idle", "2"]);
    std::thread::sleep(Duration::from_secs(8));
    kafka.restart();
    let done = processor.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stderr}");
    assert!(stderr.contains("waiting for Kafka"), "the wait is logged: {stderr}");
    let lines = stderr.lines().filter(|l| l.contains("waiting for Kafka")).count();
    assert!(lines <= 2, "one line for the wait, not one per retry ({lines}): {stderr}");
    let checked = reference::assert_exactly_once(&env, 60, &opening).await;
    assert_eq!(checked.messages, 5000);
}
