//! The operator commands' reads and writes (contract 5.5): reconciliation
//! and stock as of an instant (both defined in SQL, migration V5, so that
//! the daily report calls the same definitions), and the DLQ redrive's
//! candidates and record.

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::raw_bytes;
use crate::SinkError;

/// One way a derived table differs from the applied events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The table that differs (`inventory`, `sales_hourly`, ...).
    pub table: String,
    /// The row's key, e.g. `product_id=SKU-000001`.
    pub key: String,
    /// What the table holds.
    pub actual: String,
    /// What the applied events say it should hold.
    pub expected: String,
}

/// Every difference `reconcile_differences()` finds, in a stable order.
pub async fn reconcile(client: &Client) -> Result<Vec<Difference>, SinkError> {
    let rows = client
        .query(
            "SELECT table_name, key, actual, expected FROM reconcile_differences() \
             ORDER BY table_name, key COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(SinkError::pg("reconcile"))?;
    Ok(rows
        .iter()
        .map(|r| Difference { table: r.get(0), key: r.get(1), actual: r.get(2), expected: r.get(3) })
        .collect())
}

/// The stock of every product (or of `product`) as of `t`, in event time or
/// (`processed`) in commit time, ordered by `product_id` in byte order. A
/// `product` that is not in the catalog counts 0, as a product with no
/// inventory row and no event does.
pub async fn stock_as_of(
    client: &Client,
    t: DateTime<Utc>,
    processed: bool,
    product: Option<&str>,
) -> Result<Vec<(String, i64)>, SinkError> {
    let rows = match product {
        None => client
            .query(
                "SELECT product_id, quantity_on_hand FROM stock_as_of($1, $2) ORDER BY product_id COLLATE \"C\"",
                &[&t, &processed],
            )
            .await,
        Some(p) => client
            .query(
                "SELECT $3::text, coalesce((SELECT quantity_on_hand FROM stock_as_of($1, $2) WHERE product_id = $3), 0)",
                &[&t, &processed, &p],
            )
            .await,
    }
    .map_err(SinkError::pg("stock as of"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A rejected message a redrive would re-send.
#[derive(Debug, Clone)]
pub struct RedriveCandidate {
    /// The `events_log` row it is re-sent from.
    pub log_id: i64,
    /// The input topic it came from (and goes back to).
    pub topic: String,
    /// Its key, as received (`None`: none or empty).
    pub key: Option<Vec<u8>>,
    /// Its value, as received.
    pub value: Option<Vec<u8>>,
}

/// The messages `stockflow dlq redrive` re-sends: rejected with `code`
/// (processed at or after `since`), one per distinct message (topic, key,
/// value: a copy rejected again is the same message), leaving out a
/// message whose `event_id` has been applied since and one with a re-sent
/// copy still on its way (no `events_log` row at the copy's offset yet).
pub async fn redrive_candidates(
    client: &Client,
    code: &str,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<RedriveCandidate>, SinkError> {
    let rows = client
        .query(
            "WITH rejected AS ( \
               SELECT DISTINCT ON (e.topic, e.kafka_key, e.raw_event, e.raw_is_base64) \
                      e.log_id, e.event_id, e.topic, e.kafka_key, e.raw_event, e.raw_is_base64 \
               FROM events_log e \
               WHERE e.status = 'rejected' AND e.error_code = $1 AND ($2::timestamptz IS NULL OR e.processed_at >= $2) \
               ORDER BY e.topic, e.kafka_key, e.raw_event, e.raw_is_base64, e.log_id) \
             SELECT r.log_id, r.topic, r.kafka_key, r.raw_event, r.raw_is_base64 FROM rejected r \
             WHERE NOT EXISTS (SELECT 1 FROM events_log a WHERE a.status = 'applied' AND a.event_id = r.event_id) \
               AND NOT EXISTS ( \
                 SELECT 1 FROM events_log same \
                 JOIN dlq_redrives d ON d.log_id = same.log_id \
                 WHERE same.status = 'rejected' AND same.topic = r.topic \
                   AND same.kafka_key IS NOT DISTINCT FROM r.kafka_key \
                   AND same.raw_event IS NOT DISTINCT FROM r.raw_event \
                   AND same.raw_is_base64 = r.raw_is_base64 \
                   AND NOT EXISTS (SELECT 1 FROM events_log c WHERE c.topic = d.topic \
                                   AND c.kafka_partition = d.kafka_partition AND c.kafka_offset = d.kafka_offset) \
                   AND NOT EXISTS (SELECT 1 FROM source_offsets o WHERE o.topic = d.topic \
                                   AND o.kafka_partition = d.kafka_partition AND o.next_offset > d.kafka_offset)) \
             ORDER BY r.log_id",
            &[&code, &since],
        )
        .await
        .map_err(SinkError::pg("find messages to redrive"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let raw: Option<String> = r.get(3);
            RedriveCandidate {
                log_id: r.get(0),
                topic: r.get(1),
                key: r.get(2),
                value: raw.map(|t| raw_bytes(&t, r.get(4))),
            }
        })
        .collect())
}

/// Records where the copy of each re-sent row went:
/// `(log_id, topic, partition, offset)`.
pub async fn record_redrives(
    client: &Client,
    code: &str,
    sent: &[(i64, String, i32, i64)],
) -> Result<(), SinkError> {
    let ids: Vec<i64> = sent.iter().map(|s| s.0).collect();
    let topics: Vec<&str> = sent.iter().map(|s| s.1.as_str()).collect();
    let parts: Vec<i32> = sent.iter().map(|s| s.2).collect();
    let offsets: Vec<i64> = sent.iter().map(|s| s.3).collect();
    client
        .execute(
            "INSERT INTO dlq_redrives (log_id, error_code, topic, kafka_partition, kafka_offset) \
             SELECT l, $1, t, p, o FROM unnest($2::bigint[], $3::text[], $4::int[], $5::bigint[]) AS x(l, t, p, o)",
            &[&code, &ids, &topics, &parts, &offsets],
        )
        .await
        .map_err(SinkError::pg("record the redrive"))?;
    Ok(())
}
