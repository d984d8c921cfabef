//! Shared pieces of the end-to-end benchmarks: fresh databases and topic
//! prefixes on the local services, running the real binary, peak RSS.
#![allow(dead_code, clippy::unwrap_used, clippy::print_stdout)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_stockflow");

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn base_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/stockflow".into())
}

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn url_with_db(db: &str) -> String {
    let base = base_url();
    let (head, _) = base.rsplit_once('/').unwrap();
    format!("{head}/{db}")
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} (start it: scripts/services.sh up): {e}"));
    tokio::spawn(conn);
    client
}

/// A fresh database; returns its URL.
pub async fn fresh_db(name: &str) -> String {
    let admin = connect(&url_with_db("postgres")).await;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    url_with_db(name)
}

pub fn stamp() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    format!("{}_{}", t.as_secs(), std::process::id())
}

pub fn command(url: &str, prefix: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("DATABASE_URL", url)
        .env("KAFKA_BROKERS", brokers())
        .env("STOCKFLOW_TOPIC_PREFIX", prefix)
        // STOCKFLOW_BENCH_LOG=info shows the processor's line per epoch.
        .env("RUST_LOG", std::env::var("STOCKFLOW_BENCH_LOG").unwrap_or_else(|_| "warn".into()));
    c
}

pub fn ok(url: &str, prefix: &str, args: &[&str]) -> String {
    let out = command(url, prefix, args).output().unwrap();
    assert!(out.status.success(), "stockflow {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a child to completion, sampling its peak RSS (VmHWM) meanwhile.
pub fn wait_with_peak_rss(mut child: Child) -> (std::process::ExitStatus, u64) {
    let pid = child.id();
    let mut peak_kb = 0;
    loop {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(line) = s.lines().find(|l| l.starts_with("VmHWM:"))
        {
            let kb: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            peak_kb = peak_kb.max(kb);
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak_kb * 1024);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn spawn(url: &str, prefix: &str, args: &[&str]) -> Child {
    command(url, prefix, args).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().unwrap()
}

pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

pub fn since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// Deletes the topics of `prefix` (the broker's log is persistent: a
/// benchmark's topics would otherwise stay on disk).
pub async fn delete_topics(prefix: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let names: Vec<String> = dataflow::TopicNames::with_prefix(prefix).all();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    if let Err(e) = admin.delete_topics(&refs, &AdminOptions::new()).await {
        eprintln!("could not delete the benchmark's topics {prefix}*: {e}");
    }
}

/// Runs `stockflow ARGS` against `url` to its end: seconds taken, output.
pub fn timed(url: &str, args: &[&str]) -> (f64, std::process::Output) {
    let t = Instant::now();
    let out = command(url, "", args).output().unwrap();
    (since(t), out)
}

/// `median …, max … (n runs)` of timings in seconds.
pub fn stats(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!("median {:.3} s, max {:.3} s ({} runs)", v[v.len() / 2], v[v.len() - 1], v.len())
}
