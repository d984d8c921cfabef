//! What stockflow needs from the Kafka-API broker it runs against: a fetch
//! that starts in the middle of a record batch returns the rest of that
//! batch. A processor resuming from stored offsets does exactly that, and
//! tansu 0.6.0 from crates.io fails it (it returns nothing).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{brokers, unique};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

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
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.len() < 50 && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            got.push((m.offset(), String::from_utf8_lossy(m.payload().unwrap()).into_owned()));
        }
    }
    assert_eq!(got.len(), 50, "a fetch from offset 50 of a 100-record batch must return 50 records");
    assert_eq!(got[0], (50, "record-50".to_string()));
    assert_eq!(got[49], (99, "record-99".to_string()));
}
