//! Committing one epoch: every effect and the new offsets in ONE transaction.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use chrono::{DateTime, Utc};
use dataflow::records::{EpochBatch, Outcome, RawMessage};
use dataflow::{EventDetail, TopicNames};
use futures_util::pin_mut;
use rust_decimal::Decimal;
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use crate::SinkError;

/// The stock of a product right after a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockLevel {
    /// `inventory.quantity_on_hand` as committed.
    pub quantity_on_hand: i64,
    /// `products.reorder_level`.
    pub reorder_level: i32,
}

impl StockLevel {
    /// Low when at or below the reorder level.
    pub fn is_low(&self) -> bool {
        self.quantity_on_hand <= i64::from(self.reorder_level)
    }
}

/// What a commit did.
#[derive(Debug, Clone)]
pub enum CommitOutcome {
    /// The epoch is now in the database.
    Committed {
        /// Stock of every product the epoch's applied events touched.
        stock: HashMap<String, StockLevel>,
        /// The transaction's time (`now()`), as `processed_at` holds it.
        committed_at: DateTime<Utc>,
    },
    /// The stored offsets show this epoch was committed before (a retry
    /// after a lost acknowledgement, or a second processor): nothing written.
    AlreadyCommitted,
}

/// A value as `events_log.raw_event` stores it, and whether it is base64.
///
/// Text when the value is UTF-8 without NUL bytes (PostgreSQL text cannot
/// hold NUL); otherwise `base64:` + base64, flagged.
pub fn raw_text(value: Option<&[u8]>) -> (Option<String>, bool) {
    match value {
        None => (None, false),
        Some(v) => match std::str::from_utf8(v) {
            Ok(s) if !s.contains('\0') => (Some(s.to_string()), false),
            _ => (Some(format!("base64:{}", base64::engine::general_purpose::STANDARD.encode(v))), true),
        },
    }
}

/// The value bytes of an `events_log.raw_event` (the inverse of [`raw_text`]).
pub fn raw_bytes(text: &str, is_base64: bool) -> Vec<u8> {
    match text.strip_prefix("base64:") {
        Some(b64) if is_base64 => base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default(),
        _ => text.as_bytes().to_vec(),
    }
}

fn kafka_time(msg: &RawMessage) -> Option<DateTime<Utc>> {
    msg.timestamp_ms.and_then(DateTime::from_timestamp_millis)
}

/// Writes `batch` in one transaction: `inventory`, `events_log`, `orders`,
/// `sales_daily`, `source_offsets`, and `stream_progress` (the last epoch
/// whose output messages were published, `published_epoch`).
pub async fn commit_epoch(
    client: &mut Client,
    topics: &TopicNames,
    batch: &EpochBatch,
    published_epoch: u64,
) -> Result<CommitOutcome, SinkError> {
    let tx = client.transaction().await.map_err(SinkError::pg("begin"))?;

    // Offsets: first offset and next offset per partition of this epoch.
    let mut parts: BTreeMap<(String, i32), (i64, i64)> = BTreeMap::new();
    for o in &batch.outcomes {
        let m = o.msg();
        let e = parts.entry((topics.input(m.kind), m.partition)).or_insert((m.offset, m.offset + 1));
        e.0 = e.0.min(m.offset);
        e.1 = e.1.max(m.offset + 1);
    }
    let part_topics: Vec<&str> = parts.keys().map(|(t, _)| t.as_str()).collect();
    let part_ids: Vec<i32> = parts.keys().map(|(_, p)| *p).collect();
    let stored = tx
        .query(
            "SELECT o.topic, o.kafka_partition, o.next_offset FROM source_offsets o \
             JOIN unnest($1::text[], $2::int[]) AS b(topic, kafka_partition) USING (topic, kafka_partition) \
             FOR UPDATE OF o",
            &[&part_topics, &part_ids],
        )
        .await
        .map_err(SinkError::pg("read offsets"))?;
    for row in &stored {
        let key: (String, i32) = (row.get(0), row.get(1));
        let next: i64 = row.get(2);
        if let Some((first, _)) = parts.get(&key)
            && next > *first
        {
            tx.rollback().await.map_err(SinkError::pg("rollback"))?;
            return Ok(CommitOutcome::AlreadyCommitted);
        }
    }

    // Stock: increments for every product an applied event touched (0 for
    // a net-zero epoch, so that its committed level is known too).
    let mut deltas: BTreeMap<&str, i64> = BTreeMap::new();
    for o in &batch.outcomes {
        if let Outcome::Applied { event, .. } = o {
            deltas.entry(event.product_id.as_str()).or_insert(0);
        }
    }
    for (p, d) in &batch.stock_deltas {
        *deltas.entry(p.as_str()).or_insert(0) += d;
    }
    let mut stock = HashMap::with_capacity(deltas.len());
    if !deltas.is_empty() {
        let ids: Vec<&str> = deltas.keys().copied().collect();
        let ds: Vec<i64> = deltas.values().copied().collect();
        let rows = tx
            .query(
                "WITH up AS ( \
                   INSERT INTO inventory AS i (product_id, quantity_on_hand, opening_quantity, last_updated) \
                   SELECT id, d, 0, now() FROM unnest($1::text[], $2::bigint[]) AS t(id, d) \
                   ON CONFLICT (product_id) DO UPDATE \
                     SET quantity_on_hand = i.quantity_on_hand + EXCLUDED.quantity_on_hand, last_updated = now() \
                   RETURNING product_id, quantity_on_hand) \
                 SELECT up.product_id, up.quantity_on_hand, p.reorder_level \
                 FROM up JOIN products p USING (product_id)",
                &[&ids, &ds],
            )
            .await
            .map_err(SinkError::pg("update inventory"))?;
        for r in rows {
            stock.insert(
                r.get::<_, String>(0),
                StockLevel { quantity_on_hand: r.get(1), reorder_level: r.get(2) },
            );
        }
    }

    copy_events_log(&tx, topics, batch, &stock).await?;
    copy_orders(&tx, batch).await?;

    if !batch.sales.is_empty() {
        let days: Vec<chrono::NaiveDate> = batch.sales.iter().map(|s| s.key.0).collect();
        let products: Vec<&str> = batch.sales.iter().map(|s| s.key.1.as_str()).collect();
        let sources: Vec<&str> = batch.sales.iter().map(|s| s.key.2.as_str()).collect();
        let units: Vec<i64> = batch.sales.iter().map(|s| s.units).collect();
        let revenue: Vec<Decimal> = batch
            .sales
            .iter()
            .map(|s| Decimal::try_from_i128_with_scale(s.revenue_cents, 2).unwrap_or(Decimal::MAX))
            .collect();
        let orders: Vec<i64> = batch.sales.iter().map(|s| s.orders).collect();
        tx.execute(
            "INSERT INTO sales_daily AS s (day, product_id, source, units, revenue, order_count, updated_at) \
             SELECT d, p, src, u, r, o, now() \
             FROM unnest($1::date[], $2::text[], $3::text[], $4::bigint[], $5::numeric[], $6::bigint[]) \
               AS t(d, p, src, u, r, o) \
             ON CONFLICT (day, product_id, source) DO UPDATE SET \
               units = s.units + EXCLUDED.units, revenue = s.revenue + EXCLUDED.revenue, \
               order_count = s.order_count + EXCLUDED.order_count, updated_at = now()",
            &[&days, &products, &sources, &units, &revenue, &orders],
        )
        .await
        .map_err(SinkError::pg("update sales_daily"))?;
    }

    let next: Vec<i64> = parts.values().map(|(_, n)| *n).collect();
    tx.execute(
        "INSERT INTO source_offsets (topic, kafka_partition, next_offset, updated_at) \
         SELECT t, p, n, now() FROM unnest($1::text[], $2::int[], $3::bigint[]) AS x(t, p, n) \
         ON CONFLICT (topic, kafka_partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
        &[&part_topics, &part_ids, &next],
    )
    .await
    .map_err(SinkError::pg("store offsets"))?;
    tx.execute(
        "UPDATE stream_progress SET published_epoch = GREATEST(published_epoch, $1), updated_at = now()",
        &[&(published_epoch as i64)],
    )
    .await
    .map_err(SinkError::pg("store progress"))?;
    let counts = batch.counts();
    let (applied, duplicates, rejected) =
        (counts.applied as i32, counts.duplicates as i32, counts.rejected as i32);
    // The transaction's time (`now()`, as `processed_at` holds it) comes
    // back with the epoch row: no extra round trip.
    let committed_at: DateTime<Utc> = tx
        .query_one(
            "INSERT INTO epochs (epoch, messages, applied, duplicates, rejected, started_at, committed_at) \
             VALUES ($1, $2, $3, $4, $5, now(), clock_timestamp()) RETURNING started_at",
            &[&(batch.epoch as i64), &(batch.outcomes.len() as i32), &applied, &duplicates, &rejected],
        )
        .await
        .map_err(SinkError::pg("record epoch"))?
        .get(0);
    tx.commit().await.map_err(SinkError::pg("commit"))?;
    Ok(CommitOutcome::Committed { stock, committed_at })
}

async fn copy_events_log(
    tx: &tokio_postgres::Transaction<'_>,
    topics: &TopicNames,
    batch: &EpochBatch,
    stock: &HashMap<String, StockLevel>,
) -> Result<(), SinkError> {
    let sink = tx
        .copy_in(
            "COPY events_log (event_id, topic, kafka_partition, kafka_offset, raw_event, raw_is_base64, status, \
             error_code, error_detail, event_type, product_id, delta, occurred_at, content_hash, epoch, \
             quantity_after, kafka_timestamp) FROM STDIN (FORMAT binary)",
        )
        .await
        .map_err(SinkError::pg("copy events_log"))?;
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::INT4,
        Type::INT8,
        Type::TEXT,
        Type::BOOL,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::TIMESTAMPTZ,
        Type::BYTEA,
        Type::INT8,
        Type::INT8,
        Type::TIMESTAMPTZ,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    let epoch = batch.epoch as i64;
    for o in &batch.outcomes {
        let m = o.msg();
        let topic = topics.input(m.kind);
        let ts = kafka_time(m);
        match o {
            Outcome::Applied { msg, event, hash } => {
                let (raw, b64) = raw_text(msg.value.as_deref());
                let hash = hash.to_be_bytes().to_vec();
                let after = stock.get(&event.product_id).map(|s| s.quantity_on_hand);
                writer
                    .as_mut()
                    .write(&[
                        &event.event_id,
                        &topic,
                        &msg.partition,
                        &msg.offset,
                        &raw,
                        &b64,
                        &"applied",
                        &None::<&str>,
                        &None::<&str>,
                        &event.kind().event_type(),
                        &event.product_id,
                        &event.delta(),
                        &event.occurred_at,
                        &hash,
                        &epoch,
                        &after,
                        &ts,
                    ])
                    .await
                    .map_err(SinkError::pg("copy events_log row"))?;
            }
            Outcome::Rejected { msg, rejection } => {
                let (raw, b64) = raw_text(msg.value.as_deref());
                writer
                    .as_mut()
                    .write(&[
                        &rejection.event_id,
                        &topic,
                        &msg.partition,
                        &msg.offset,
                        &raw,
                        &b64,
                        &"rejected",
                        &rejection.code.as_str(),
                        &rejection.detail,
                        &None::<&str>,
                        &None::<&str>,
                        &None::<i64>,
                        &None::<DateTime<Utc>>,
                        &None::<Vec<u8>>,
                        &epoch,
                        &None::<i64>,
                        &ts,
                    ])
                    .await
                    .map_err(SinkError::pg("copy events_log row"))?;
            }
            Outcome::Duplicate { .. } => {}
        }
    }
    writer.finish().await.map_err(SinkError::pg("finish copy events_log"))?;
    Ok(())
}

async fn copy_orders(tx: &tokio_postgres::Transaction<'_>, batch: &EpochBatch) -> Result<(), SinkError> {
    let sink = tx
        .copy_in(
            "COPY orders (event_id, order_id, product_id, quantity, unit_price, source, customer_id, store_id, \
             occurred_at) FROM STDIN (FORMAT binary)",
        )
        .await
        .map_err(SinkError::pg("copy orders"))?;
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT4,
        Type::NUMERIC,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for o in &batch.outcomes {
        let Outcome::Applied { event, .. } = o else { continue };
        let (order_id, price, source, customer, store) = match &event.detail {
            EventDetail::OnlineOrder { order_id, customer_id, unit_price } => {
                (order_id, unit_price, "online", Some(customer_id.as_str()), None)
            }
            EventDetail::StoreSale { order_id, store_id, unit_price } => {
                (order_id, unit_price, "store", None, Some(store_id.as_str()))
            }
            EventDetail::SupplierRestock { .. } => continue,
        };
        let quantity = event.quantity as i32;
        writer
            .as_mut()
            .write(&[
                &event.event_id,
                order_id,
                &event.product_id,
                &quantity,
                price,
                &source,
                &customer,
                &store,
                &event.occurred_at,
            ])
            .await
            .map_err(SinkError::pg("copy orders row"))?;
    }
    writer.finish().await.map_err(SinkError::pg("finish copy orders"))?;
    Ok(())
}
