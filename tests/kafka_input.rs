//! What stockflow needs from the input side of Apache Kafka, tested against
//! the real broker: a fetch that starts in the middle of a record batch (a
//! processor resuming from stored offsets does exactly that) and input from
//! transactional producers (contract 5.1): committed transactions applied,
//! aborted ones never logged or applied, and transaction markers, also at
//! the very end of a partition, never stalling `--exit-when-idle`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{TestEnv, brokers, unique};
use dataflow::EventKind;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;

#[tokio::test]
async fn fetch_from_the_middle_of_a_batch_returns_the_rest() {
    let topic = unique("midbatch");
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let new = NewTopic::new(&topic, 1, TopicReplication::Fixed(1));
    admin.create_topics([&new], &AdminOptions::new()).await.unwrap();

    // 100 records, lingered into one batch.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "500")
        .set("batch.num.messages", "1000")
        .create()
        .unwrap();
    for i in 0..100 {
        let payload = format!("record-{i}");
        producer.send(BaseRecord::<(), _>::to(&topic).payload(&payload)).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("g"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(50)).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 50 && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            got.push((m.offset(), String::from_utf8_lossy(m.payload().unwrap()).into_owned()));
        }
    }
    assert_eq!(got.len(), 50, "a fetch from offset 50 of a 100-record batch must return 50 records");
    assert_eq!(got[0], (50, "record-50".to_string()));
    assert_eq!(got[49], (99, "record-99".to_string()));
}

/// One simulated input message: topic (prefixed), key, value.
struct Line {
    topic: String,
    key: String,
    value: String,
}

/// `count` valid simulated messages, as `stockflow produce --output -` writes them.
fn simulated(env: &TestEnv, count: usize, seed: u64) -> Vec<Line> {
    let out = env.ok(&[
        "produce",
        "--count",
        &count.to_string(),
        "--seed",
        &seed.to_string(),
        "--output",
        "-",
        "--quiet",
    ]);
    out.lines()
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            Line {
                topic: f.next().unwrap().into(),
                key: f.next().unwrap().into(),
                value: f.next().unwrap().into(),
            }
        })
        .collect()
}

fn event_id(l: &Line) -> String {
    serde_json::from_str::<Value>(&l.value).unwrap()["event_id"].as_str().unwrap().to_string()
}

/// Runs `stockflow run --exit-when-idle 1` and fails the test if it has not
/// finished within `limit` (a stalled end-of-input check would hang forever).
fn run_to_idle_within(env: &TestEnv, limit: Duration) -> std::process::Output {
    let child =
        env.spawn(&["run", "--exit-when-idle", "1", "--epoch-ms", "50", "--reference-refresh-ms", "200"]);
    let out = common::output_within(child, limit);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

#[tokio::test]
async fn transactional_producers_commits_apply_aborts_never_do() {
    let env = TestEnv::new("txn").await;
    env.prepare(40, 2);
    let lines = simulated(&env, 1200, 91);
    // Committed, aborted, committed, and an abort that ends every partition.
    let chunks: Vec<&[Line]> = lines.chunks(300).collect();
    assert_eq!(chunks.len(), 4);

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("transactional.id", unique("txn-input"))
        .set("linger.ms", "5")
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    for (i, chunk) in chunks.iter().enumerate() {
        producer.begin_transaction().unwrap();
        for l in chunk.iter() {
            producer
                .send(BaseRecord::to(&l.topic).key(&l.key).payload(&l.value))
                .map_err(|(e, _)| e)
                .unwrap();
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        if i % 2 == 0 {
            producer.commit_transaction(Duration::from_secs(30)).unwrap();
        } else {
            producer.abort_transaction(Duration::from_secs(30)).unwrap();
        }
    }
    // The last transaction touched every partition of every input topic, so
    // each one ends in an abort marker.
    let last: BTreeSet<&str> = chunks[3].iter().map(|l| l.topic.as_str()).collect();
    assert_eq!(last.len(), EventKind::ALL.len(), "the aborted tail reaches every input topic");

    run_to_idle_within(&env, Duration::from_secs(60));

    let committed: BTreeSet<String> = chunks[0].iter().chain(chunks[2].iter()).map(event_id).collect();
    let aborted: BTreeSet<String> = chunks[1].iter().chain(chunks[3].iter()).map(event_id).collect();
    let logged: BTreeSet<String> = env.rows("SELECT event_id FROM events_log").await.into_iter().collect();
    assert_eq!(env.count("SELECT count(*) FROM events_log").await, 600, "one log row per committed message");
    assert_eq!(logged, committed, "exactly the committed transactions' messages are logged");
    assert!(logged.is_disjoint(&aborted));
    assert_eq!(env.count("SELECT count(*) FROM events_log WHERE status <> 'applied'").await, 0);

    // Stock moved by the committed events only.
    let mut delta: BTreeMap<String, i64> = BTreeMap::new();
    for l in chunks[0].iter().chain(chunks[2].iter()) {
        let v: Value = serde_json::from_str(&l.value).unwrap();
        let q = v["quantity"].as_i64().unwrap();
        let kind =
            EventKind::from_event_type(v["event_type"].as_str().unwrap()).expect("a contract event type");
        *delta.entry(v["product_id"].as_str().unwrap().to_string()).or_default() += kind.stock_sign() * q;
    }
    let moved: BTreeMap<String, i64> = env
        .rows("SELECT product_id, quantity_on_hand - opening_quantity FROM inventory WHERE quantity_on_hand <> opening_quantity")
        .await
        .iter()
        .map(|r| {
            let (p, d) = r.split_once('|').unwrap();
            (p.to_string(), d.parse().unwrap())
        })
        .collect();
    delta.retain(|_, d| *d != 0);
    assert_eq!(moved, delta);

    // A second run starts after the markers and ends at once, changing nothing.
    run_to_idle_within(&env, Duration::from_secs(60));
    assert_eq!(env.count("SELECT count(*) FROM events_log").await, 600);
}

/// An input topic deleted under a running processor: librdkafka reports an
/// unknown topic or partition (here about 30 s after the deletion), which a
/// topic still being created also does; the processor asks the cluster,
/// finds the topic gone, and ends with one line instead of waiting forever.
/// What it read before stays committed.
#[tokio::test]
async fn a_deleted_input_topic_ends_the_run_in_one_line() {
    let env = TestEnv::new("deleted").await;
    env.prepare(20, 1);
    let valid = env.produce_valid(&["--count", "200", "--seed", "5"]);
    let processor = env.spawn(&["run", "--epoch-ms", "50"]);
    env.wait_caught_up(Duration::from_secs(60)).await;
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &env.brokers).create().unwrap();
    let topic = env.topic("store_sales");
    let deleted = admin.delete_topics(&[&topic], &AdminOptions::new()).await.unwrap();
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    let started = Instant::now();
    let out = common::output_within(processor, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("stockflow: error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(&format!("input topic {topic} no longer exists")), "{stderr}");
    eprintln!("{} ({:?} after the deletion)", errors[0], started.elapsed());
    assert_eq!(env.count("SELECT count(*) FROM events_log WHERE status = 'applied'").await, valid);
}
