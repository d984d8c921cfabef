//! Exactly-once under failure: `kill -9` of the real binary at random
//! moments, and a PostgreSQL restart in the middle of a run.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{Record, TestEnv, consume_all, consume_until_quiet};
use serde_json::Value;

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

/// Cents from a JSON number literal with at most 2 decimals ("4.5" -> 450).
fn cents(v: &Value) -> i64 {
    let s = v.to_string();
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    let frac = format!("{frac:0<2}");
    int.parse::<i64>().unwrap() * 100 + frac[..2].parse::<i64>().unwrap()
}

/// The input messages, parsed, by (topic, partition, offset).
fn inputs(env: &TestEnv, n: usize) -> BTreeMap<(String, i32, i64), Record> {
    let topics: Vec<String> =
        ["online_orders", "store_sales", "supplier_restocks"].iter().map(|t| env.topic(t)).collect();
    let records = consume_all(&topics, n, Duration::from_secs(60));
    assert_eq!(records.len(), n, "all input messages readable");
    records.into_iter().map(|r| ((r.topic.clone(), r.partition, r.offset), r)).collect()
}

#[tokio::test]
async fn kill_nine_at_random_moments_changes_nothing() {
    let env = TestEnv::new("crash").await;
    env.prepare(150, 3);
    let opening: HashMap<String, i64> = env
        .rows("SELECT product_id, quantity_on_hand FROM inventory")
        .await
        .iter()
        .map(|r| {
            let (p, q) = r.split_once('|').unwrap();
            (p.to_string(), q.parse().unwrap())
        })
        .collect();

    // Traffic arrives while the processor is killed over and over.
    let n = 50_000;
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
    while kills < 12 || started.elapsed() < Duration::from_secs(9) {
        let mut child = spawn_run(&env, &[]);
        std::thread::sleep(Duration::from_millis(rng.next(150, 1200)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    assert!(producer.wait().unwrap().success());
    let done = spawn_run(&env, &["--exit-when-idle", "2"]).wait_with_output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(kills >= 10);
    // The crashed runs' outputs, read now: the clean run below writes its
    // own to the same output topics.
    let updates = consume_until_quiet(
        &[env.topic("inventory_updates")],
        Duration::from_secs(3),
        Duration::from_secs(90),
    );
    let dlq = consume_until_quiet(&[env.topic("dlq")], Duration::from_secs(3), Duration::from_secs(90));

    // Reference: a second database processes the same topics without crashes.
    let mut clean = TestEnv::new("clean").await;
    clean.prefix = env.prefix.clone();
    clean.ok(&["migrate"]);
    clean.ok(&["seed", "--products", "150", "--suppliers", "10"]);
    clean.run_to_idle(&[]);

    // Every message: at most one log row, and the same rows as the clean run.
    let key = "SELECT topic, kafka_partition, kafka_offset, status, coalesce(error_code, '') FROM events_log ORDER BY 1, 2, 3";
    let crashed_log = env.rows(key).await;
    assert_eq!(crashed_log, clean.rows(key).await, "events_log rows differ from a run without crashes");
    assert_eq!(
        env.count("SELECT count(*) FROM (SELECT 1 FROM events_log GROUP BY topic, kafka_partition, kafka_offset HAVING count(*) > 1) d").await,
        0
    );
    assert_eq!(env.count("SELECT sum(next_offset)::bigint FROM source_offsets").await, n as i64);

    // Independent reference: stock and daily sales from the raw JSON of the applied events.
    let messages = inputs(&env, n);
    let applied: Vec<(String, String, i32, i64)> = env
        .rows(
            "SELECT event_id, topic, kafka_partition, kafka_offset FROM events_log WHERE status = 'applied'",
        )
        .await
        .iter()
        .map(|r| {
            let v: Vec<&str> = r.split('|').collect();
            (v[0].to_string(), v[1].to_string(), v[2].parse().unwrap(), v[3].parse().unwrap())
        })
        .collect();
    let distinct_ids: BTreeSet<&String> = applied.iter().map(|a| &a.0).collect();
    assert_eq!(distinct_ids.len(), applied.len());
    let mut stock = opening.clone();
    let mut daily: BTreeMap<(String, String, &str), (i64, i64, i64)> = BTreeMap::new();
    for (_, topic, partition, offset) in &applied {
        let r = &messages[&(topic.clone(), *partition, *offset)];
        let v: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
        let product = v["product_id"].as_str().unwrap().to_string();
        let q = v["quantity"].as_i64().unwrap();
        let (sign, source) = match v["event_type"].as_str().unwrap() {
            "supplier_restock" => (1, None),
            "online_order" => (-1, Some("online")),
            _ => (-1, Some("store")),
        };
        *stock.entry(product.clone()).or_insert(0) += sign * q;
        if let Some(source) = source {
            let day = v["occurred_at"].as_str().unwrap()[..10].to_string();
            let e = daily.entry((day, product, source)).or_default();
            e.0 += q;
            e.1 += q * cents(&v["unit_price"]);
            e.2 += 1;
        }
    }
    let expected_stock: BTreeSet<String> = stock.iter().map(|(p, q)| format!("{p}|{q}")).collect();
    let actual_stock: BTreeSet<String> =
        env.rows("SELECT product_id, quantity_on_hand FROM inventory").await.into_iter().collect();
    assert_eq!(actual_stock, expected_stock);
    let expected_daily: Vec<String> = daily
        .iter()
        .map(|((d, p, s), (u, c, o))| format!("{d}|{p}|{s}|{u}|{}.{:02}|{o}", c / 100, c % 100))
        .collect();
    assert_eq!(
        env.rows(
            "SELECT day, product_id, source, units, revenue, order_count FROM sales_daily ORDER BY 1, 2, 3"
        )
        .await,
        expected_daily
    );
    let sales = daily.values().map(|v| v.2).sum::<i64>();
    assert_eq!(env.count("SELECT count(*) FROM orders").await, sales);

    // Outputs: at least one update per applied event, one dlq record per rejection.
    let updated: BTreeSet<String> = updates
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(r.value.as_ref().unwrap()).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let missing: Vec<_> = distinct_ids.iter().filter(|id| !updated.contains(id.as_str())).take(5).collect();
    assert!(missing.is_empty(), "applied events without an inventory_updates message: {missing:?}");
    eprintln!(
        "crash test: {kills} kills, {} applied, {} inventory_updates messages ({} re-sent after crashes)",
        applied.len(),
        updates.len(),
        updates.len() - applied.len()
    );
    let rejected = env.count("SELECT count(*) FROM events_log WHERE status = 'rejected'").await as usize;
    assert!(rejected > 100, "{rejected}");
    let dlq_keys: BTreeSet<(String, i64, i64)> = dlq
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
            (
                v["source_topic"].as_str().unwrap().to_string(),
                v["partition"].as_i64().unwrap(),
                v["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(dlq_keys.len(), rejected, "one dlq record (at least) per rejected message");
}

/// A private PostgreSQL server this test may restart without disturbing others.
struct PrivatePostgres {
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn as_postgres(&self, program: &str, args: &[&str]) -> std::process::Output {
        let path = self.bin.join(program);
        let mut cmd = if unsafe_is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        cmd.args(args).output().unwrap()
    }

    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .unwrap();
        let dir = std::env::temp_dir().join(common::unique("sfpg"));
        std::fs::create_dir_all(&dir).unwrap();
        if unsafe_is_root() {
            assert!(
                Command::new("chown")
                    .args(["-R", "postgres:", dir.to_str().unwrap()])
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let port = common::free_port();
        let pg = PrivatePostgres { bin, dir, port };
        let data = pg.dir.join("data");
        let out = pg.as_postgres("initdb", &["-D", data.to_str().unwrap(), "-U", "postgres", "-A", "trust"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        pg.ctl("start");
        pg
    }

    fn ctl(&self, action: &str) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let opts = format!("-c listen_addresses=127.0.0.1 -p {} -k {}", self.port, self.dir.display());
        let out = self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-m",
                "fast",
                "-o",
                &opts,
                action,
            ],
        );
        assert!(out.status.success(), "pg_ctl {action}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.ctl("stop")));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unsafe_is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

#[tokio::test]
async fn postgres_restart_during_a_run_loses_nothing() {
    let pg = PrivatePostgres::start();
    let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute("CREATE DATABASE stockflow").await.unwrap();
    drop(client);
    let mut env = TestEnv::new("pgrestart").await;
    env.database_url = format!("postgres://postgres@127.0.0.1:{}/stockflow", pg.port);
    env.prepare(100, 2);
    let n = 20_000;
    let valid = env.produce_valid(&[
        "--count",
        &n.to_string(),
        "--rate",
        "8000",
        "--seed",
        "8",
        "--duplicate-ratio",
        "0.05",
    ]);

    let child = spawn_run(&env, &["--exit-when-idle", "3"]);
    std::thread::sleep(Duration::from_millis(800));
    pg.ctl("stop");
    std::thread::sleep(Duration::from_secs(3));
    pg.ctl("start");
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stderr}");
    assert!(stderr.contains("retrying"), "the outage is logged: {stderr}");
    assert_eq!(env.count("SELECT count(*) FROM events_log WHERE status = 'applied'").await, valid);
    assert_eq!(env.count("SELECT sum(next_offset)::bigint FROM source_offsets").await, n as i64);
    assert_eq!(env.count("SELECT count(*) FROM inventory_reconciliation WHERE NOT balanced").await, 0);
}
