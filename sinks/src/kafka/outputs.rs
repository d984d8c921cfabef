//! The output messages: `inventory_updates` (one per applied event),
//! `dlq` (one per rejected message) and `stock_alerts` (one per crossing of
//! a reorder level), built from a committed batch or, after a crash, from
//! what the database holds; and the at-least-once producer
//! (`--outputs at-least-once`). The exactly-once one is in
//! `transactional.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use dataflow::records::{EpochBatch, Outcome, RawMessage};
use dataflow::{EventKind, TopicNames};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use serde::Serialize;

use crate::postgres::{StockAlert, StockLevel, UnpublishedRow};
use crate::{SinkError, Wait};

/// A DLQ payload longer than this is cut (the full value stays in
/// `events_log.raw_event`), so that the record fits the broker's default
/// 1 MB message limit.
pub const MAX_DLQ_PAYLOAD: usize = 900_000;

/// One message for an output topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputMessage {
    /// Topic name.
    pub topic: String,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// JSON value.
    pub payload: Vec<u8>,
}

#[derive(Serialize)]
struct InventoryUpdate<'a> {
    event_id: &'a str,
    event_type: &'a str,
    product_id: &'a str,
    delta: i64,
    quantity_on_hand: i64,
    low_stock: bool,
    committed_at: String,
}

impl InventoryUpdate<'_> {
    /// The `inventory_updates` message, keyed by product: the one way it
    /// is built, for a fresh commit and for a re-send alike.
    fn message(&self, topics: &TopicNames) -> OutputMessage {
        OutputMessage {
            topic: topics.inventory_updates(),
            key: Some(self.product_id.as_bytes().to_vec()),
            payload: serde_json::to_vec(self).unwrap_or_default(),
        }
    }
}

#[derive(Serialize)]
struct AlertMessage<'a> {
    alert_id: &'a str,
    product_id: &'a str,
    kind: &'a str,
    quantity_on_hand: i64,
    reorder_level: i32,
    raised_at: String,
}

#[derive(Serialize)]
struct DlqError<'a> {
    code: &'a str,
    detail: &'a str,
}

#[derive(Serialize)]
struct DlqRecord<'a> {
    source_topic: &'a str,
    partition: i32,
    offset: i64,
    payload: String,
    payload_encoding: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    payload_truncated: bool,
    payload_bytes: usize,
    event_id: Option<&'a str>,
    error: DlqError<'a>,
    failed_at: String,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The DLQ payload of a value: text when UTF-8, else base64; cut when huge.
fn dlq_payload(value: Option<&[u8]>) -> (String, &'static str, bool, usize) {
    let bytes = value.unwrap_or_default();
    let (mut text, encoding) = match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), "utf8"),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(bytes), "base64"),
    };
    let truncated = text.len() > MAX_DLQ_PAYLOAD;
    if truncated {
        let mut cut = MAX_DLQ_PAYLOAD;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    (text, encoding, truncated, bytes.len())
}

#[allow(clippy::too_many_arguments)]
fn dlq_message(
    topics: &TopicNames,
    kind: EventKind,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<&[u8]>,
    event_id: Option<&str>,
    code: &str,
    detail: &str,
    at: DateTime<Utc>,
) -> OutputMessage {
    let (payload, payload_encoding, payload_truncated, payload_bytes) = dlq_payload(value);
    let record = DlqRecord {
        source_topic: kind.topic(),
        partition,
        offset,
        payload,
        payload_encoding,
        payload_truncated,
        payload_bytes,
        event_id,
        error: DlqError { code, detail },
        failed_at: rfc3339(at),
    };
    OutputMessage { topic: topics.dlq(), key, payload: serde_json::to_vec(&record).unwrap_or_default() }
}

fn key_of(msg: &RawMessage) -> Option<Vec<u8>> {
    msg.key.clone().filter(|k| !k.is_empty())
}

/// The `stock_alerts` messages of `alerts` (keyed by product).
pub fn alert_messages<'a>(
    topics: &TopicNames,
    alerts: impl IntoIterator<Item = &'a StockAlert>,
    out: &mut Vec<OutputMessage>,
) {
    for a in alerts {
        let m = AlertMessage {
            alert_id: &a.alert_id,
            product_id: &a.product_id,
            kind: &a.kind,
            quantity_on_hand: a.quantity_on_hand,
            reorder_level: a.reorder_level,
            raised_at: rfc3339(a.raised_at),
        };
        out.push(OutputMessage {
            topic: topics.stock_alerts(),
            key: Some(a.product_id.as_bytes().to_vec()),
            payload: serde_json::to_vec(&m).unwrap_or_default(),
        });
    }
}

/// The output messages of a committed epoch, in commit order: one
/// `inventory_updates` message per applied event and one `dlq` record per
/// rejection (with the input message's key), in message order, then the
/// commit's alerts.
pub fn epoch_messages(
    topics: &TopicNames,
    batch: &EpochBatch,
    stock: &HashMap<String, StockLevel>,
    alerts: &[StockAlert],
    committed_at: DateTime<Utc>,
) -> Vec<OutputMessage> {
    let mut out = Vec::with_capacity(batch.outcomes.len() + alerts.len());
    for o in &batch.outcomes {
        match o {
            Outcome::Applied { event, .. } => {
                let level = stock
                    .get(&event.product_id)
                    .copied()
                    .unwrap_or(StockLevel { quantity_on_hand: 0, low: true });
                let u = InventoryUpdate {
                    event_id: &event.event_id,
                    event_type: event.kind().event_type(),
                    product_id: &event.product_id,
                    delta: event.delta(),
                    quantity_on_hand: level.quantity_on_hand,
                    low_stock: level.low,
                    committed_at: rfc3339(committed_at),
                };
                out.push(u.message(topics));
            }
            Outcome::Rejected { msg, rejection } => out.push(dlq_message(
                topics,
                msg.kind,
                msg.partition,
                msg.offset,
                key_of(msg),
                msg.value.as_deref(),
                rejection.event_id.as_deref(),
                rejection.code.as_str(),
                &rejection.detail,
                committed_at,
            )),
            Outcome::Duplicate { .. } => {}
        }
    }
    alert_messages(topics, alerts, &mut out);
    out
}

/// The output messages of the commits after epoch `after` up to `through`
/// (after a crash, or for a commit retried after a lost acknowledgement),
/// rebuilt from what the database holds, and the last of those commits'
/// epoch (`None`: there are none).
pub async fn unpublished_messages(
    client: &tokio_postgres::Client,
    topics: &TopicNames,
    after: u64,
    through: u64,
) -> Result<(Vec<OutputMessage>, Option<u64>), SinkError> {
    let rows = crate::postgres::unpublished_rows(client, after, through).await?;
    let alerts = crate::postgres::unpublished_alerts(client, after, through).await?;
    let last = rows.iter().map(|r| r.epoch).chain(alerts.iter().map(|a| a.epoch)).max();
    Ok((republish_messages(topics, &rows, &alerts), last))
}

/// The output messages of commits not yet published (after a crash),
/// rebuilt from `events_log` and `stock_alerts` as they were first meant:
/// per commit, its rows in log order, then its alerts.
pub fn republish_messages(
    topics: &TopicNames,
    rows: &[UnpublishedRow],
    alerts: &[StockAlert],
) -> Vec<OutputMessage> {
    let mut out = Vec::with_capacity(rows.len() + alerts.len());
    let mut alerts = alerts.iter().peekable();
    for r in rows {
        // The alerts of earlier commits go before this commit's rows.
        let earlier = std::iter::from_fn(|| alerts.next_if(|a| a.epoch < r.epoch));
        alert_messages(topics, earlier, &mut out);
        let Some(kind) = topics.kind_of(&r.topic) else { continue };
        if r.applied {
            let (Some(event_id), Some(product_id)) = (&r.event_id, &r.product_id) else { continue };
            let q = r.quantity_after.unwrap_or_default();
            let u = InventoryUpdate {
                event_id,
                event_type: r.event_type.as_deref().unwrap_or(kind.event_type()),
                product_id,
                delta: r.delta.unwrap_or_default(),
                quantity_on_hand: q,
                low_stock: r.low.unwrap_or(true),
                committed_at: rfc3339(r.processed_at),
            };
            out.push(u.message(topics));
        } else {
            let value: Option<Vec<u8>> =
                r.raw.as_ref().map(|raw| crate::postgres::raw_bytes(raw, r.raw_is_base64));
            let (code, detail) = r.error.clone().unwrap_or_default();
            out.push(dlq_message(
                topics,
                kind,
                r.partition,
                r.offset,
                r.key.clone(),
                value.as_deref(),
                r.event_id.as_deref(),
                &code,
                &detail,
                r.processed_at,
            ));
        }
    }
    alert_messages(topics, alerts, &mut out);
    out
}

/// Queues `messages` in order on `producer` (both output producers, the
/// at-least-once one and the transactional one, send through here). A
/// full local queue is waited out, 5 ms at a time, unless `stopping` says
/// the process is stopping ([`SinkError::Interrupted`]); any other refusal
/// is an error naming the topic. Delivery is the caller's to wait for.
pub(crate) fn send_all<C: ProducerContext<DeliveryOpaque = ()> + 'static>(
    producer: &ThreadedProducer<C>,
    messages: &[OutputMessage],
    stopping: impl Fn() -> bool,
) -> Result<(), SinkError> {
    for m in messages {
        let mut record = BaseRecord::to(&m.topic).payload(&m.payload);
        if let Some(k) = &m.key {
            record = record.key(k);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    if stopping() {
                        return Err(SinkError::Interrupted("Kafka"));
                    }
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((cause, _)) => {
                    return Err(SinkError::Kafka { context: format!("send to {}", m.topic), cause });
                }
            }
        }
    }
    Ok(())
}

#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

struct OutputContext(Arc<Deliveries>);

impl ClientContext for OutputContext {}

impl ProducerContext for OutputContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.0.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut f) = self.0.first_error.lock() {
                f.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Sends output messages and waits until the broker has them.
///
/// Configured so that a broker outage makes it wait, not drop:
/// `message.timeout.ms = 0` (retry until delivered) and idempotence on, so
/// retries keep per-partition order (per product, commit order). Both can be
/// overridden through the pass-through options.
pub struct OutputProducer {
    producer: ThreadedProducer<OutputContext>,
    deliveries: Arc<Deliveries>,
}

impl OutputProducer {
    /// A producer from the shared client configuration.
    pub fn new(base: &ClientConfig) -> Result<Self, SinkError> {
        // A clone, never a copy of `config_map()` (which hides passwords).
        let mut config = base.clone();
        for (k, v) in [
            ("message.timeout.ms", "0"),
            ("enable.idempotence", "true"),
            ("linger.ms", "2"),
            ("compression.type", "none"),
        ] {
            if base.get(k).is_none() {
                config.set(k, v);
            }
        }
        let deliveries = Arc::new(Deliveries::default());
        let producer = config
            .create_with_context(OutputContext(deliveries.clone()))
            .map_err(|cause| SinkError::Kafka { context: "create output producer".into(), cause })?;
        Ok(OutputProducer { producer, deliveries })
    }

    /// Sends `messages` in order and blocks until all are acknowledged.
    /// While the broker does not acknowledge (down, restarting), logs one
    /// "waiting for Kafka" line and calls `waiting(true)`; `waiting(false)`
    /// once it has. A process that stops meanwhile gets
    /// [`SinkError::Interrupted`]: the next start re-sends what was not
    /// acknowledged.
    pub fn publish(&self, messages: &[OutputMessage], wait: Wait<'_>) -> Result<(), SinkError> {
        let failed_before = self.deliveries.failed.load(Ordering::Relaxed);
        send_all(&self.producer, messages, || wait.stopping())?;
        let started = Instant::now();
        let mut waited = false;
        while let Err(e) = self.producer.flush(Duration::from_secs(2)) {
            if wait.stopping() {
                if waited {
                    (wait.waiting)(false);
                }
                return Err(SinkError::Interrupted("Kafka"));
            }
            if !waited {
                waited = true;
                (wait.waiting)(true);
                tracing::warn!(error = %e, "waiting for Kafka: output messages not acknowledged within 2 s");
            }
        }
        if waited {
            (wait.waiting)(false);
            tracing::info!(waited_s = started.elapsed().as_secs(), "Kafka acknowledged the output messages");
        }
        let failed = self.deliveries.failed.load(Ordering::Relaxed) - failed_before;
        if failed > 0 {
            let first = self.deliveries.first_error.lock().ok().and_then(|f| f.clone()).unwrap_or_default();
            return Err(SinkError::Inconsistent(format!(
                "{failed} output messages were refused by the broker: {first}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono::{DateTime, Utc};
    use dataflow::records::{EpochBatch, Outcome, RawMessage};
    use dataflow::{ErrorCode, EventKind, Rejection, TopicNames};
    use serde_json::{Value, json};

    use super::{MAX_DLQ_PAYLOAD, OutputMessage, dlq_payload, epoch_messages, republish_messages};
    use crate::postgres::{UnpublishedRow, raw_text};

    /// Our copy of the contract's `dlq` record schema.
    const DLQ_SCHEMA: &str = include_str!("../../../tests/contract/schemas/dlq_record.json");

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T14:03:07.123Z").expect("a valid time").with_timezone(&Utc)
    }

    fn msg(
        kind: EventKind,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> RawMessage {
        RawMessage {
            kind,
            partition,
            offset,
            timestamp_ms: Some(1_764_079_387_000),
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
        }
    }

    fn rejected(m: RawMessage, code: ErrorCode, detail: &str, event_id: Option<&str>) -> Outcome {
        Outcome::Rejected {
            msg: m,
            rejection: Box::new(Rejection::new(code, detail, event_id.map(String::from))),
        }
    }

    fn batch(outcomes: Vec<Outcome>) -> EpochBatch {
        EpochBatch { epoch: 7, outcomes, ..EpochBatch::default() }
    }

    fn json_of(m: &OutputMessage) -> Value {
        serde_json::from_slice(&m.payload).expect("the payload is JSON")
    }

    /// The strings of the array at `pointer` in a schema (an `enum` or a
    /// `required` list).
    fn schema_enum(schema: &Value, pointer: &str) -> Vec<String> {
        schema
            .pointer(pointer)
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("no enum at {pointer}"))
            .iter()
            .map(|v| v.as_str().expect("a string").to_string())
            .collect()
    }

    #[test]
    fn a_dlq_record_carries_the_contract_fields_and_the_input_key() {
        let value = br#"{"event_id":"e-1","quantity":0}"#;
        let m = msg(EventKind::OnlineOrder, 2, 41, Some(b"P-001"), Some(value));
        let b = batch(vec![rejected(
            m,
            ErrorCode::InvalidQuantity,
            "quantity: 0 is not in 1..=1000000",
            Some("e-1"),
        )]);
        let out = epoch_messages(&TopicNames::with_prefix(""), &b, &HashMap::new(), &[], at());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, "dlq");
        assert_eq!(out[0].key.as_deref(), Some(&b"P-001"[..]));
        assert_eq!(
            json_of(&out[0]),
            json!({
                "source_topic": "online_orders",
                "partition": 2,
                "offset": 41,
                "payload": r#"{"event_id":"e-1","quantity":0}"#,
                "payload_encoding": "utf8",
                "payload_bytes": value.len(),
                "event_id": "e-1",
                "error": { "code": "invalid_quantity", "detail": "quantity: 0 is not in 1..=1000000" },
                "failed_at": "2026-11-25T14:03:07.123Z",
            })
        );
    }

    #[test]
    fn dlq_records_of_every_code_and_topic_meet_the_contract_schema() {
        let schema: Value = serde_json::from_str(DLQ_SCHEMA).expect("the schema is JSON");
        let required = schema_enum(&schema, "/required");
        let topics = schema_enum(&schema, "/properties/source_topic/enum");
        let codes = schema_enum(&schema, "/properties/error/properties/code/enum");
        let encodings = schema_enum(&schema, "/properties/payload_encoding/enum");
        let error_required = schema_enum(&schema, "/properties/error/required");
        let mut outcomes = Vec::new();
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            let kind = EventKind::ALL[i % EventKind::ALL.len()];
            let value: &[u8] = if i % 2 == 0 { b"{}" } else { &[0xff, 0x00] };
            outcomes.push(rejected(msg(kind, 0, i as i64, None, Some(value)), code, "a detail", None));
        }
        let out = epoch_messages(&TopicNames::with_prefix(""), &batch(outcomes), &HashMap::new(), &[], at());
        assert_eq!(out.len(), ErrorCode::ALL.len());
        for (m, code) in out.iter().zip(ErrorCode::ALL) {
            let v = json_of(m);
            for key in &required {
                assert!(v.get(key).is_some(), "{key} missing from {v}");
            }
            for key in &error_required {
                assert!(v["error"].get(key).is_some(), "error.{key} missing from {v}");
            }
            assert_eq!(v["error"]["code"], code.as_str());
            assert!(codes.iter().any(|c| v["error"]["code"] == c.as_str()), "{v}");
            assert!(topics.iter().any(|t| v["source_topic"] == t.as_str()), "{v}");
            assert!(encodings.iter().any(|e| v["payload_encoding"] == e.as_str()), "{v}");
            assert!(v["partition"].as_i64().is_some_and(|p| p >= 0), "{v}");
            assert!(v["offset"].as_i64().is_some_and(|o| o >= 0), "{v}");
            assert!(v["event_id"].is_null(), "{v}");
            assert!(DateTime::parse_from_rfc3339(v["failed_at"].as_str().expect("a string")).is_ok(), "{v}");
        }
    }

    #[test]
    fn a_value_that_is_not_utf8_is_base64_and_an_empty_key_is_no_key() {
        let value = [0xff, 0xfe, 0x00, 0x41];
        let m = msg(EventKind::StoreSale, 0, 5, Some(b""), Some(&value));
        let b = batch(vec![rejected(m, ErrorCode::MalformedJson, "not UTF-8", None)]);
        let out = epoch_messages(&TopicNames::with_prefix(""), &b, &HashMap::new(), &[], at());
        assert_eq!(out[0].key, None);
        let v = json_of(&out[0]);
        assert_eq!(
            (&v["payload"], &v["payload_encoding"], &v["payload_bytes"], &v["event_id"]),
            (&json!("//4AQQ=="), &json!("base64"), &json!(4), &Value::Null)
        );
        assert_eq!(v["error"]["code"], "malformed_json");
        assert!(v.get("payload_truncated").is_none(), "{v}");
    }

    #[test]
    fn a_tombstone_is_an_empty_utf8_payload() {
        let m = msg(EventKind::SupplierRestock, 1, 9, Some(b"P-9"), None);
        let b = batch(vec![rejected(m, ErrorCode::MalformedJson, "no value", None)]);
        let out = epoch_messages(&TopicNames::with_prefix(""), &b, &HashMap::new(), &[], at());
        let v = json_of(&out[0]);
        assert_eq!(
            (&v["source_topic"], &v["payload"], &v["payload_encoding"], &v["payload_bytes"]),
            (&json!("supplier_restocks"), &json!(""), &json!("utf8"), &json!(0))
        );
        assert_eq!(out[0].key.as_deref(), Some(&b"P-9"[..]));
    }

    #[test]
    fn the_dlq_topic_takes_the_prefix_but_source_topic_stays_the_contract_name() {
        let m = msg(EventKind::StoreSale, 3, 12, None, Some(b"[]"));
        let b = batch(vec![rejected(m, ErrorCode::MalformedJson, "not an object", None)]);
        let out = epoch_messages(&TopicNames::with_prefix("t1."), &b, &HashMap::new(), &[], at());
        assert_eq!(out[0].topic, "t1.dlq");
        assert_eq!(json_of(&out[0])["source_topic"], "store_sales");
    }

    #[test]
    fn plain_duplicates_send_nothing_and_rejections_keep_message_order() {
        let b = batch(vec![
            rejected(
                msg(EventKind::OnlineOrder, 0, 1, Some(b"a"), Some(b"x")),
                ErrorCode::MalformedJson,
                "d1",
                None,
            ),
            Outcome::Duplicate { msg: msg(EventKind::OnlineOrder, 0, 2, Some(b"b"), None) },
            rejected(
                msg(EventKind::OnlineOrder, 0, 3, Some(b"c"), Some(b"{}")),
                ErrorCode::SchemaViolation,
                "d3",
                None,
            ),
        ]);
        let out = epoch_messages(&TopicNames::with_prefix(""), &b, &HashMap::new(), &[], at());
        let seen: Vec<(Option<&[u8]>, Value)> =
            out.iter().map(|m| (m.key.as_deref(), json_of(m)["offset"].clone())).collect();
        assert_eq!(seen, vec![(Some(&b"a"[..]), json!(1)), (Some(&b"c"[..]), json!(3))]);
    }

    #[test]
    fn huge_payloads_are_cut_on_a_char_boundary_and_flagged() {
        // At the limit: whole.
        let exact = vec![b'a'; MAX_DLQ_PAYLOAD];
        let (text, encoding, truncated, bytes) = dlq_payload(Some(&exact));
        assert_eq!(
            (text.len(), encoding, truncated, bytes),
            (MAX_DLQ_PAYLOAD, "utf8", false, MAX_DLQ_PAYLOAD)
        );
        // One 'a' then two-byte characters: byte MAX_DLQ_PAYLOAD (even) is
        // inside a character, so the cut is one byte earlier.
        let long = format!("a{}", "é".repeat(MAX_DLQ_PAYLOAD / 2 + 10));
        let (text, encoding, truncated, bytes) = dlq_payload(Some(long.as_bytes()));
        assert_eq!((text.len(), encoding, truncated, bytes), (MAX_DLQ_PAYLOAD - 1, "utf8", true, long.len()));
        assert!(long.starts_with(&text) && text.ends_with('é'));
        // Binary: the limit applies to the base64 text, `payload_bytes`
        // tells the original size.
        let binary = vec![0xff; 700_000];
        let (text, encoding, truncated, bytes) = dlq_payload(Some(&binary));
        assert_eq!((text.len(), encoding, truncated, bytes), (MAX_DLQ_PAYLOAD, "base64", true, 700_000));
        // The record says so.
        let m = msg(EventKind::OnlineOrder, 0, 0, None, Some(long.as_bytes()));
        let b = batch(vec![rejected(m, ErrorCode::MalformedJson, "d", None)]);
        let v = json_of(&epoch_messages(&TopicNames::with_prefix(""), &b, &HashMap::new(), &[], at())[0]);
        assert_eq!((&v["payload_truncated"], &v["payload_bytes"]), (&json!(true), &json!(long.len())));
    }

    #[test]
    fn a_dlq_record_sent_again_after_a_crash_is_the_one_first_sent() {
        let topics = TopicNames::with_prefix("p.");
        let values: [Option<&[u8]>; 5] = [
            Some(br#"{"event_id":"e-1"}"#),
            Some(&[0xff, 0xfe, 0x00, 0x41]),
            Some(b"a\0b"),
            Some(b"base64:aGk="),
            None,
        ];
        for (i, value) in values.into_iter().enumerate() {
            let m = msg(EventKind::OnlineOrder, 4, 100 + i as i64, Some(b"P-7"), value);
            let rejection =
                Rejection::new(ErrorCode::UnknownProduct, "product_id P-7 is unknown", Some("e-1".into()));
            let first = epoch_messages(
                &topics,
                &batch(vec![Outcome::Rejected { msg: m.clone(), rejection: Box::new(rejection.clone()) }]),
                &HashMap::new(),
                &[],
                at(),
            );
            // The `events_log` row the commit wrote for it.
            let (raw, raw_is_base64) = raw_text(m.value.as_deref());
            let row = UnpublishedRow {
                epoch: 7,
                event_id: rejection.event_id.clone(),
                topic: topics.input(m.kind),
                partition: m.partition,
                offset: m.offset,
                raw,
                raw_is_base64,
                key: m.key.clone(),
                applied: false,
                error: Some((rejection.code.as_str().to_string(), rejection.detail.clone())),
                event_type: None,
                product_id: None,
                delta: None,
                quantity_after: None,
                low: None,
                processed_at: at(),
            };
            let again = republish_messages(&topics, &[row], &[]);
            assert_eq!(again, first, "value {value:?}");
            assert_eq!(again[0].key.as_deref(), Some(&b"P-7"[..]));
        }
    }
}
