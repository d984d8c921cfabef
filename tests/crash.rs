//! Exactly-once under failure: `kill -9` of the real binary at random
//! moments, with live traffic (effects and output topics checked against
//! the independent reference). The PostgreSQL faults are in
//! `tests/db_faults.rs`, the broker's in `tests/broker_faults.rs`.
//! `STOCKFLOW_FAULTS=long` (scripts/faults.sh long) runs the long form:
//! 20 kills during 200 000 events.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::{TestEnv, reference};

fn spawn_run(env: &TestEnv, extra: &[&str]) -> Child {
    let mut args = vec!["run", "--epoch-ms", "20", "--max-epoch-messages", "700", "--workers", "2"];
    args.extend_from_slice(extra);
    env.spawn(&args)
}

/// A tiny deterministic RNG (xorshift) for kill times.
struct Rng(u64);

impl Rng {
    fn next(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

#[tokio::test]
async fn kill_nine_at_random_moments_changes_nothing() {
    let env = TestEnv::new("crash").await;
    env.prepare(150, 3);
    let opening = reference::opening_stock(&env).await;

    // Traffic arrives while the processor is killed over and over.
    let long = common::long_faults();
    let (n, min_kills) = if long { (200_000, 20) } else { (50_000, 12) };
    let mut producer = env.spawn(&[
        "produce",
        "--count",
        &n.to_string(),
        "--rate",
        "6000",
        "--seed",
        "77",
        "--quiet",
        "--duplicate-ratio",
        "0.04",
        "--invalid-ratio",
        "0.01",
    ]);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
    let mut kills = 0;
    let started = Instant::now();
    let span = Duration::from_secs(n as u64 / 6000);
    while kills < min_kills || started.elapsed() < span {
        let mut child = spawn_run(&env, &[]);
        std::thread::sleep(Duration::from_millis(rng.next(150, 1200)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        if kills == 3 {
            // An operator sets reorder levels just under today's stock (the
            // producer, which restocks at the levels it loaded, never hears):
            // the traffic crosses them both ways, so stock alerts are in
            // flight at the later kills too.
            env.client()
                .await
                .batch_execute(
                    "UPDATE products p SET reorder_level = greatest(0, i.quantity_on_hand - 15) \
                     FROM inventory i WHERE i.product_id = p.product_id",
                )
                .await
                .unwrap();
        }
    }
    assert!(producer.wait().unwrap().success());
    let done = spawn_run(&env, &["--exit-when-idle", "2"]).wait_with_output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(kills >= min_kills);
    let checked = reference::assert_exactly_once(&env, 150, &opening).await;
    assert_eq!(checked.messages, n);
    assert!(checked.rejected > 100, "{checked:?}");
    assert!(checked.alerts >= 20, "the traffic crossed reorder levels: {checked:?}");
    eprintln!(
        "crash test: {kills} kills, {} applied, {} rejected; read_committed: {} inventory_updates, {} dlq, {} \
         stock_alerts messages, each once",
        checked.applied, checked.rejected, checked.updates, checked.dlq, checked.alerts
    );
}
