//! Reading the processor's state back from PostgreSQL: where to resume,
//! what is applied, the reference data. (What is left to publish is read
//! back in `commit.rs`, beside what the commit writes.)

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::SinkError;

/// The next offset to read per `(topic, partition)`.
pub async fn load_offsets(
    client: &Client,
    topics: &[String],
) -> Result<HashMap<(String, i32), i64>, SinkError> {
    let rows = client
        .query(
            "SELECT topic, kafka_partition, next_offset FROM source_offsets WHERE topic = ANY($1)",
            &[&topics],
        )
        .await
        .map_err(SinkError::pg("load offsets (has `stockflow migrate` run?)"))?;
    Ok(rows.iter().map(|r| ((r.get(0), r.get(1)), r.get(2))).collect())
}

/// For each `(topic, partition, next_offset)`, the last message logged in
/// `events_log` before `next_offset`: `(topic, partition, offset, value)`.
/// Partitions with nothing logged (all duplicates so far) are left out.
pub async fn last_logged(
    client: &Client,
    stored: &[(String, i32, i64)],
) -> Result<Vec<(String, i32, i64, Option<Vec<u8>>)>, SinkError> {
    let topics: Vec<&str> = stored.iter().map(|(t, _, _)| t.as_str()).collect();
    let partitions: Vec<i32> = stored.iter().map(|(_, p, _)| *p).collect();
    let next: Vec<i64> = stored.iter().map(|(_, _, n)| *n).collect();
    let rows = client
        .query(
            "SELECT s.topic, s.kafka_partition, l.kafka_offset, l.raw_event, l.raw_is_base64              FROM unnest($1::text[], $2::int[], $3::bigint[]) AS s(topic, kafka_partition, next_offset)              CROSS JOIN LATERAL (SELECT e.kafka_offset, e.raw_event, e.raw_is_base64 FROM events_log e                                  WHERE e.topic = s.topic AND e.kafka_partition = s.kafka_partition                                    AND e.kafka_offset < s.next_offset                                  ORDER BY e.kafka_offset DESC LIMIT 1) l",
            &[&topics, &partitions, &next],
        )
        .await
        .map_err(SinkError::pg("read the last logged message per partition"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let raw: Option<String> = r.get(3);
            let value = raw.map(|text| super::commit::raw_bytes(&text, r.get(4)));
            (r.get(0), r.get(1), r.get(2), value)
        })
        .collect())
}

/// Reference data: products with reorder level, and supplier ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reference {
    /// `product_id -> reorder_level`.
    pub products: HashMap<String, i32>,
    /// Supplier ids.
    pub suppliers: std::collections::HashSet<String>,
}

/// Reads all reference data.
pub async fn load_reference(client: &Client) -> Result<Reference, SinkError> {
    let products = client
        .query("SELECT product_id, reorder_level FROM products", &[])
        .await
        .map_err(SinkError::pg("load products"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let suppliers = client
        .query("SELECT supplier_id FROM suppliers", &[])
        .await
        .map_err(SinkError::pg("load suppliers"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Reference { products, suppliers })
}

fn hash_of(bytes: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = bytes.len().min(16);
    b[..n].copy_from_slice(&bytes[..n]);
    u128::from_be_bytes(b)
}

/// One applied id loaded at start for the dedup memory, already in the
/// compact form the workers keep (no id text: 56 bytes, against about 150
/// for the row and its text).
#[derive(Debug, Clone, Copy)]
pub struct PreloadedId {
    /// `dataflow::records::route_event_id`: which worker owns the id.
    pub route: u64,
    /// `dataflow::dedup::id_key`.
    pub key: u128,
    /// The content fingerprint.
    pub hash: u128,
    /// Its `occurred_at`.
    pub at: DateTime<Utc>,
}

/// Applied events with `occurred_at` within `horizon` of the newest one,
/// the newest `limit` at most. Rows are streamed and turned into
/// [`PreloadedId`]s one by one, so a load of millions of ids never holds
/// them as rows.
pub async fn load_recent_applied(
    client: &Client,
    horizon: chrono::Duration,
    limit: i64,
) -> Result<Vec<PreloadedId>, SinkError> {
    let newest: Option<DateTime<Utc>> = client
        .query_one("SELECT max(occurred_at) FROM events_log WHERE status = 'applied'", &[])
        .await
        .map_err(SinkError::pg("newest applied event"))?
        .get(0);
    let Some(newest) = newest else { return Ok(Vec::new()) };
    let cutoff = newest - horizon;
    let rows = client
        .query_raw(
            "SELECT event_id, content_hash, occurred_at FROM events_log \
             WHERE status = 'applied' AND occurred_at >= $1 ORDER BY occurred_at DESC LIMIT $2",
            [&cutoff as &(dyn tokio_postgres::types::ToSql + Sync), &limit],
        )
        .await
        .map_err(SinkError::pg("load recent applied ids"))?;
    let mut rows = std::pin::pin!(rows);
    let mut out = Vec::new();
    while let Some(row) = futures_util::StreamExt::next(&mut rows).await {
        let row = row.map_err(SinkError::pg("load recent applied ids"))?;
        let id: &str = row.get(0);
        out.push(PreloadedId {
            route: dataflow::records::route_event_id(id),
            key: dataflow::dedup::id_key(id),
            hash: hash_of(row.get(1)),
            at: row.get(2),
        });
    }
    Ok(out)
}

/// Content fingerprints of those of `ids` that were applied, and the first
/// instant of commit time held (`history_held_from()`; `None`: nothing was
/// ever archived).
///
/// Only the days committed since [`LOOKUP_CLOCK_SLACK`] before
/// `occurred_since` (the earliest `occurred_at` of the events asked about)
/// are searched: a copy of an event carries its `occurred_at`, and its
/// first application was committed after it occurred, unless its producer's
/// clock ran more than the slack ahead. So a look-up probes the few day
/// partitions since the events occurred, not every day held.
pub async fn applied_hashes(
    client: &Client,
    ids: &[String],
    occurred_since: DateTime<Utc>,
) -> Result<(HashMap<String, u128>, Option<DateTime<Utc>>), SinkError> {
    let since = occurred_since - LOOKUP_CLOCK_SLACK;
    // One round trip: the ids found and how far back the log is held.
    let row = client
        .query_one(
            "WITH f AS (SELECT event_id, content_hash FROM events_log \
                        WHERE status = 'applied' AND event_id = ANY($1) AND processed_at >= $2) \
             SELECT history_held_from(), array_agg(event_id), array_agg(content_hash) FROM f",
            &[&ids, &since],
        )
        .await
        .map_err(SinkError::pg("look up applied ids"))?;
    let ids: Vec<String> = row.get::<_, Option<Vec<String>>>(1).unwrap_or_default();
    let hashes: Vec<Vec<u8>> = row.get::<_, Option<Vec<Vec<u8>>>>(2).unwrap_or_default();
    let found = ids.into_iter().zip(hashes.iter().map(|h| hash_of(h))).collect();
    Ok((found, row.get(0)))
}

/// How far ahead of the database's clock a producer's clock may run for a
/// look-up of an old event still to find its first application (see
/// [`applied_hashes`]).
pub const LOOKUP_CLOCK_SLACK: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// The last epoch whose output messages were acknowledged by the broker.
pub async fn published_epoch(client: &Client) -> Result<u64, SinkError> {
    let row = client
        .query_one("SELECT published_epoch FROM stream_progress WHERE id = 1", &[])
        .await
        .map_err(SinkError::pg("read stream_progress (has `stockflow migrate` run?)"))?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

/// The newest committed epoch (0 when none).
pub async fn last_committed_epoch(client: &Client) -> Result<u64, SinkError> {
    let row = client
        .query_one("SELECT coalesce(max(epoch), 0) FROM epochs", &[])
        .await
        .map_err(SinkError::pg("read epochs"))?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

/// How many products the last alerts left low.
pub async fn low_count(client: &Client) -> Result<i64, SinkError> {
    let row = client
        .query_one("SELECT count(*) FROM stock_alert_state WHERE low", &[])
        .await
        .map_err(SinkError::pg("count low products"))?;
    Ok(row.get(0))
}

/// Takes the next generation of processors (see [`crate::postgres::commit_epoch`]):
/// from now on, commits of an earlier `stockflow run` are refused.
pub async fn take_generation(client: &Client) -> Result<i64, SinkError> {
    let row = client
        .query_one("UPDATE stream_progress SET generation = generation + 1 RETURNING generation", &[])
        .await
        .map_err(SinkError::pg("take a processor generation (has `stockflow migrate` run?)"))?;
    Ok(row.get(0))
}

/// Records that every output message up to `epoch` was acknowledged.
pub async fn set_published_epoch(client: &Client, epoch: u64) -> Result<(), SinkError> {
    client
        .execute(
            "UPDATE stream_progress SET published_epoch = GREATEST(published_epoch, $1), updated_at = now()",
            &[&(epoch as i64)],
        )
        .await
        .map_err(SinkError::pg("store stream_progress"))?;
    Ok(())
}

/// What a running processor says about itself (table `processor_status`,
/// read by the live view's pipeline health).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorStatus {
    /// The Timely process index.
    pub process: i32,
    /// When this `stockflow run` started.
    pub started_at: DateTime<Utc>,
    /// Worker threads in the process.
    pub workers: i32,
    /// Waiting for an unavailable Kafka.
    pub waiting_kafka: bool,
    /// Waiting for an unavailable PostgreSQL.
    pub waiting_postgres: bool,
    /// Messages behind the input partitions' ends.
    pub consumer_lag_messages: i64,
    /// Commit time minus the oldest Kafka timestamp of the last commit.
    pub lag_seconds: f64,
    /// The last committed epoch this process knows of.
    pub last_committed_epoch: i64,
}

/// Upserts `status` with `updated_at = now()`.
pub async fn write_processor_status(client: &Client, status: &ProcessorStatus) -> Result<(), SinkError> {
    client
        .execute(
            "INSERT INTO processor_status (process, started_at, updated_at, workers, waiting_kafka, \
               waiting_postgres, consumer_lag_messages, lag_seconds, last_committed_epoch) \
             VALUES ($1, $2, now(), $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (process) DO UPDATE SET started_at = EXCLUDED.started_at, updated_at = now(), \
               workers = EXCLUDED.workers, waiting_kafka = EXCLUDED.waiting_kafka, \
               waiting_postgres = EXCLUDED.waiting_postgres, \
               consumer_lag_messages = EXCLUDED.consumer_lag_messages, \
               lag_seconds = EXCLUDED.lag_seconds, last_committed_epoch = EXCLUDED.last_committed_epoch",
            &[
                &status.process,
                &status.started_at,
                &status.workers,
                &status.waiting_kafka,
                &status.waiting_postgres,
                &status.consumer_lag_messages,
                &status.lag_seconds,
                &status.last_committed_epoch,
            ],
        )
        .await
        .map_err(SinkError::pg("write the processor status"))?;
    Ok(())
}
