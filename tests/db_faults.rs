//! PostgreSQL faults under a running processor with live traffic, each on
//! a private server and checked against the independent reference (nothing
//! lost, nothing applied twice, outputs as the contract says):
//! - killed (`pg_ctl stop -m immediate`) and started again;
//! - frozen (SIGSTOP to every server process) and thawed;
//! - out of disk space (`events_log` on a small tmpfs tablespace), then
//!   given room: the processor says it waits and resumes by itself.
//!
//! `STOCKFLOW_FAULTS=long` (scripts/faults.sh long) freezes for 30 s
//! instead of 5 and sends more traffic.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{PrivatePostgres, TestEnv, free_port, reference, waiting_on};

/// A processor with a metrics endpoint; returns it and the endpoint.
fn spawn_processor(env: &TestEnv) -> (Child, String) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let child = env.spawn(&["run", "--epoch-ms", "50", "--workers", "2", "--metrics-addr", &metrics]);
    (child, metrics)
}

/// Live traffic: `n` events at `rate`/s with duplicates and bad messages.
fn spawn_producer(env: &TestEnv, n: usize, rate: u32, seed: u32) -> Child {
    env.spawn(&[
        "produce",
        "--count",
        &n.to_string(),
        "--rate",
        &rate.to_string(),
        "--seed",
        &seed.to_string(),
        "--quiet",
        "--duplicate-ratio",
        "0.03",
        "--invalid-ratio",
        "0.01",
    ])
}

/// Waits until `what` is waited for, per the metrics (fails after 60 s).
fn until_waiting(metrics: &str, what: &str, on: bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while waiting_on(metrics, what) != Some(i64::from(on)) {
        assert!(Instant::now() < deadline, "stockflow_waiting{{what=\"{what}\"}} never became {on}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Once the processor has read everything: SIGTERM, then the reference check.
async fn finish(
    env: &TestEnv,
    processor: Child,
    products: u32,
    opening: &std::collections::HashMap<String, i64>,
    n: usize,
) -> String {
    env.wait_caught_up(Duration::from_secs(300)).await;
    let _ = Command::new("kill").args(["-TERM", &processor.id().to_string()]).status();
    let done = common::output_within(processor, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&done.stderr).into_owned();
    assert!(done.status.success(), "{stderr}");
    let checked = reference::assert_exactly_once(env, products, opening).await;
    assert_eq!(checked.messages, n, "{checked:?}");
    eprintln!("{checked:?}");
    stderr
}

/// A private server with a prepared database (100 products, 2 partitions
/// per topic), and its opening stock.
async fn private_env(tag: &str) -> (PrivatePostgres, TestEnv, HashMap<String, i64>) {
    let pg = PrivatePostgres::start();
    let env = TestEnv::new_on(tag, &pg.url()).await;
    env.prepare(100, 2);
    let opening = reference::opening_stock(&env).await;
    (pg, env, opening)
}

#[tokio::test]
async fn postgres_killed_and_restarted_mid_run_loses_nothing() {
    let (pg, env, opening) = private_env("pgkill").await;
    let n = if common::long_faults() { 100_000 } else { 20_000 };
    let producer = spawn_producer(&env, n, 4000, 8);
    let (processor, metrics) = spawn_processor(&env);
    std::thread::sleep(Duration::from_secs(2));
    pg.stop_immediate();
    until_waiting(&metrics, "postgres", true);
    std::thread::sleep(Duration::from_secs(3));
    pg.restart();
    until_waiting(&metrics, "postgres", false);
    assert!(producer.wait_with_output().unwrap().status.success());
    let stderr = finish(&env, processor, 100, &opening, n).await;
    assert!(stderr.contains("waiting for PostgreSQL"), "the outage is logged: {stderr}");
}

#[tokio::test]
async fn postgres_frozen_then_thawed_loses_nothing() {
    let (pg, env, opening) = private_env("pgfreeze").await;
    let (n, frozen) = if common::long_faults() {
        (100_000, Duration::from_secs(30))
    } else {
        (20_000, Duration::from_secs(5))
    };
    let producer = spawn_producer(&env, n, 4000, 9);
    let (processor, _metrics) = spawn_processor(&env);
    std::thread::sleep(Duration::from_secs(2));
    // Connections stay open and every query hangs: no error to react to.
    pg.signal_all("STOP");
    std::thread::sleep(frozen);
    pg.signal_all("CONT");
    eprintln!("PostgreSQL was frozen for {frozen:?}");
    assert!(producer.wait_with_output().unwrap().status.success());
    finish(&env, processor, 100, &opening, n).await;
}

#[tokio::test]
async fn postgres_out_of_disk_space_waits_then_resumes() {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        eprintln!("skipped: mounting the small tablespace needs root (CI runs as root)");
        return;
    }
    let (pg, env, opening) = private_env("pgdisk").await;

    // events_log, which grows with every message, on a 16 MB tmpfs.
    let small = pg.dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mount = |opts: &str| {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs", small.to_str().unwrap()])
            .status();
        assert!(status.unwrap().success(), "mount {opts}");
    };
    mount("size=16m");
    let _unmount = Unmount(small.clone());
    let _ = Command::new("chown").args(["postgres:", small.to_str().unwrap()]).status();
    let admin = env.client().await;
    admin.batch_execute(&format!("CREATE TABLESPACE small LOCATION '{}'", small.display())).await.unwrap();
    // Its day partitions (migration V7), and the parent for days made later.
    admin
        .batch_execute(
            "ALTER TABLE events_log SET TABLESPACE small; \
             DO $$ DECLARE p regclass; BEGIN \
               FOR p IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'events_log'::regclass LOOP \
                 EXECUTE format('ALTER TABLE %s SET TABLESPACE small', p); \
               END LOOP; END $$;",
        )
        .await
        .unwrap();

    let n = if common::long_faults() { 150_000 } else { 60_000 };
    let producer = spawn_producer(&env, n, 8000, 10);
    let (processor, metrics) = spawn_processor(&env);
    until_waiting(&metrics, "postgres", true);
    let full_at = env.count("SELECT count(*) FROM events_log").await;
    eprintln!("the tablespace filled up at {full_at} events_log rows; the processor waits");
    std::thread::sleep(Duration::from_secs(3));
    // Room again: the processor goes on by itself.
    mount("remount,size=512m");
    until_waiting(&metrics, "postgres", false);
    assert!(producer.wait_with_output().unwrap().status.success());
    let stderr = finish(&env, processor, 100, &opening, n).await;
    assert!(
        stderr.contains("No space left on device") || stderr.contains("disk"),
        "says why it waits: {stderr}"
    );
}

/// Detaches a mount when the test ends, passed or not.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
