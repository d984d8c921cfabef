//! A stop (SIGTERM) while PostgreSQL or Kafka is away: the processor ends
//! promptly (it does not wait for the dependency to come back), exits 0,
//! and loses nothing: what it had not committed is read again by the next
//! start, checked against an independent reference as the crash test does.
//! Each test has a private server (a PostgreSQL cluster or a Kafka node of
//! its own) to take away.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::{PrivateKafka, PrivatePostgres, TestEnv, free_port, reference, waiting_on};

/// Waits until the processor's metrics say it waits for `what` (fails the
/// test after 60 s).
fn until_waiting(metrics: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while waiting_on(metrics, what) != Some(1) {
        assert!(Instant::now() < deadline, "stockflow_waiting{{what=\"{what}\"}} never became 1");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM to `processor`; its stderr once it has ended, and how long that took.
fn terminate(processor: Child) -> (String, Duration) {
    let asked = Instant::now();
    let _ = std::process::Command::new("kill").args(["-TERM", &processor.id().to_string()]).status();
    let done = common::output_within(processor, Duration::from_secs(60));
    let took = asked.elapsed();
    let stderr = String::from_utf8_lossy(&done.stderr).into_owned();
    assert!(done.status.success(), "a stop during an outage is a clean stop ({:?}): {stderr}", done.status);
    (stderr, took)
}

/// The issue asks for 5 s; the bound here leaves room for a loaded CI
/// machine, and the measured time is printed.
const STOP_BOUND: Duration = Duration::from_secs(10);

#[tokio::test]
async fn stop_while_postgres_is_down_ends_promptly_and_loses_nothing() {
    let pg = PrivatePostgres::start();
    let env = TestEnv::new_on("pgstop", &pg.url()).await;
    env.prepare(60, 2);
    let opening = reference::opening_stock(&env).await;

    let metrics = format!("127.0.0.1:{}", free_port());
    let processor = env.spawn(&["run", "--epoch-ms", "50", "--workers", "2", "--metrics-addr", &metrics]);
    // Live traffic: the database goes away while epochs are being committed.
    let producer = env.spawn(&["produce", "--count", "20000", "--rate", "4000", "--seed", "71", "--quiet"]);
    std::thread::sleep(Duration::from_secs(2));
    pg.stop_immediate();
    until_waiting(&metrics, "postgres");
    let (stderr, took) = terminate(processor);
    eprintln!("stop while PostgreSQL is down: the processor ended {took:?} after SIGTERM");
    assert!(took < STOP_BOUND, "ended {took:?} after SIGTERM: {stderr}");
    assert!(stderr.contains("waiting for PostgreSQL"), "the outage is logged: {stderr}");
    assert!(producer.wait_with_output().unwrap().status.success());

    // Nothing lost, nothing twice: the next start reads what was not committed.
    pg.restart();
    env.run_to_idle(&["--workers", "2"]);
    let checked = reference::assert_exactly_once(&env, 60, &opening).await;
    assert_eq!(checked.messages, 20_000, "{checked:?}");
    eprintln!("stop while PostgreSQL is down: {checked:?}");
}

#[tokio::test]
async fn stop_while_kafka_is_down_ends_promptly_and_loses_nothing() {
    let kafka = PrivateKafka::start();
    let mut env = TestEnv::new("kafkastop").await;
    env.brokers = kafka.brokers();
    env.prepare(60, 2);
    let opening = reference::opening_stock(&env).await;
    env.produce_valid(&["--count", "20000", "--seed", "61", "--invalid-ratio", "0.02"]);

    // Mid-run: the broker dies under a processor that is reading, committing
    // and publishing (right after its first commit of input messages, whose
    // outputs are on their way).
    let metrics = format!("127.0.0.1:{}", free_port());
    let processor = env.spawn(&["run", "--epoch-ms", "50", "--workers", "2", "--metrics-addr", &metrics]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while env.count("SELECT count(*) FROM epochs WHERE messages > 0").await == 0 {
        assert!(Instant::now() < deadline, "no commit within 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kafka.kill();
    until_waiting(&metrics, "kafka");
    let (stderr, took) = terminate(processor);
    eprintln!("stop while Kafka is down (mid-run): the processor ended {took:?} after SIGTERM");
    assert!(took < STOP_BOUND, "ended {took:?} after SIGTERM: {stderr}");

    // At start: the processor waits for the broker, and a stop ends the wait.
    let metrics = format!("127.0.0.1:{}", free_port());
    let processor = env.spawn(&["run", "--epoch-ms", "50", "--metrics-addr", &metrics]);
    until_waiting(&metrics, "kafka");
    let (stderr, took) = terminate(processor);
    eprintln!("stop while Kafka is down (at start): the processor ended {took:?} after SIGTERM");
    assert!(took < STOP_BOUND, "ended {took:?} after SIGTERM: {stderr}");
    assert!(stderr.contains("waiting for Kafka"), "the wait is logged: {stderr}");

    kafka.restart();
    env.produce_valid(&["--count", "2000", "--seed", "62"]);
    env.run_to_idle(&["--workers", "2"]);
    let checked = reference::assert_exactly_once(&env, 60, &opening).await;
    assert_eq!(checked.messages, 22_000, "{checked:?}");
    eprintln!("stop while Kafka is down: {checked:?}");
}
