//! Committing one epoch: every effect and the new offsets in ONE
//! transaction; and reading back what commits wrote for the outputs
//! (`unpublished_rows`, `unpublished_alerts`), for a restart to publish the
//! commits Kafka lacks. An output topic's SQL, written and read back, is
//! here.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use chrono::{DateTime, Utc};
use dataflow::records::{EpochBatch, Outcome, RawMessage, SalesSums};
use dataflow::{SaleSource, TopicNames};
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
    /// Whether that is low (`stock_is_low`, the one definition, evaluated
    /// by the database in the commit).
    pub low: bool,
}

/// One crossing of a reorder level, as `stock_alerts` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockAlert {
    /// The commit (epoch) that raised it.
    pub epoch: u64,
    /// `A-<epoch>-<product_id>`: a product crosses at most once per commit.
    pub alert_id: String,
    /// The product.
    pub product_id: String,
    /// `low` or `recovered`.
    pub kind: String,
    /// The level as committed by the commit that crossed.
    pub quantity_on_hand: i64,
    /// The reorder level in force at that commit.
    pub reorder_level: i32,
    /// The commit's time.
    pub raised_at: DateTime<Utc>,
}

impl StockAlert {
    /// From `(epoch, alert_id, product_id, kind, quantity_on_hand,
    /// reorder_level, raised_at)` starting at column `first - 1`.
    pub(crate) fn from_row(r: &tokio_postgres::Row, first: usize) -> StockAlert {
        let c = first - 1;
        StockAlert {
            epoch: r.get::<_, i64>(c).max(0) as u64,
            alert_id: r.get(c + 1),
            product_id: r.get(c + 2),
            kind: r.get(c + 3),
            quantity_on_hand: r.get(c + 4),
            reorder_level: r.get(c + 5),
            raised_at: r.get(c + 6),
        }
    }
}

/// What a commit did.
#[derive(Debug, Clone)]
pub enum CommitOutcome {
    /// The epoch is now in the database.
    Committed {
        /// The commit's output messages, in commit order
        /// ([`crate::kafka::epoch_messages`]): what the publisher sends.
        messages: Vec<crate::kafka::OutputMessage>,
        /// The alerts the commit raised, by product (also in `messages`;
        /// here for the log and the metrics).
        alerts: Vec<StockAlert>,
        /// The next offset of every input partition the commit read from.
        offsets: Vec<(String, i32, i64)>,
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
/// `sales_hourly` and `sales_daily`, `stock_hourly`, the stock alerts, `source_offsets`,
/// `epochs` and `stream_progress` (the last epoch whose output messages
/// were published, `published_epoch`).
///
/// `generation` is the one this processor took at start
/// ([`crate::postgres::take_generation`]): when a later `stockflow run` has
/// taken another, nothing is written and the commit fails with
/// [`SinkError::Fenced`].
pub async fn commit_epoch(
    client: &mut Client,
    topics: &TopicNames,
    batch: &EpochBatch,
    published_epoch: u64,
    generation: i64,
) -> Result<CommitOutcome, SinkError> {
    let tx = client.transaction().await.map_err(SinkError::pg("begin"))?;
    if let Err(e) = check_generation(&tx, generation).await {
        tx.rollback().await.map_err(SinkError::pg("rollback"))?;
        return Err(e);
    }
    // Offsets: first offset and next offset per partition of this epoch.
    let parts = batch_partitions(topics, batch);
    if already_committed(&tx, batch, &parts).await? {
        tx.rollback().await.map_err(SinkError::pg("rollback"))?;
        return Ok(CommitOutcome::AlreadyCommitted);
    }
    let (touched, stock) = update_inventory(&tx, batch).await?;
    // Crossings: every product this commit touched or was asked to
    // recheck, its committed state now against the last alert's.
    let mut candidates: Vec<&str> = touched.iter().map(String::as_str).collect();
    candidates.extend(batch.rechecks.iter().map(String::as_str));
    candidates.sort_unstable();
    candidates.dedup();
    let alerts = raise_alerts(&tx, batch.epoch, &candidates).await?;
    copy_events_log(&tx, topics, batch, &stock).await?;
    copy_orders(&tx, batch).await?;
    write_sales(&tx, batch).await?;
    write_stock_hours(&tx, batch).await?;
    store_progress(&tx, &parts, published_epoch).await?;
    let committed_at = record_epoch(&tx, batch).await?;
    tx.commit().await.map_err(SinkError::pg("commit"))?;
    let offsets = parts.into_iter().map(|((t, p), (_, next))| (t, p, next)).collect();
    let messages = crate::kafka::epoch_messages(topics, batch, &stock, &alerts, committed_at);
    Ok(CommitOutcome::Committed { messages, alerts, offsets, committed_at })
}

type Tx<'a> = tokio_postgres::Transaction<'a>;

/// Fencing: fails with [`SinkError::Fenced`] unless this processor's
/// `generation` is the current one. The row lock also keeps any other
/// writer of `stream_progress` out until this commit ends.
async fn check_generation(tx: &Tx<'_>, generation: i64) -> Result<(), SinkError> {
    let current: i64 = tx
        .query_one("SELECT generation FROM stream_progress WHERE id = 1 FOR UPDATE", &[])
        .await
        .map_err(SinkError::pg("read the processor generation"))?
        .get(0);
    if current != generation {
        return Err(SinkError::Fenced(format!(
            "another `stockflow run` started on this database (generation {current}, this one holds \
             {generation}): this one stops without committing, the newer one carries on"
        )));
    }
    Ok(())
}

/// Whether the stored offsets (locked for this commit) are already past
/// the batch's first offsets, or, for a batch without messages (only
/// rechecks), its epoch row exists: a retry after a lost acknowledgement,
/// or a second processor.
async fn already_committed(
    tx: &Tx<'_>,
    batch: &EpochBatch,
    parts: &BTreeMap<(String, i32), (i64, i64)>,
) -> Result<bool, SinkError> {
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
        if parts.get(&key).is_some_and(|(first, _)| next > *first) {
            return Ok(true);
        }
    }
    // A commit without messages (only rechecks) has no offsets to tell;
    // its epoch row does.
    Ok(parts.is_empty()
        && tx
            .query_opt("SELECT 1 FROM epochs WHERE epoch = $1", &[&(batch.epoch as i64)])
            .await
            .map_err(SinkError::pg("read epochs"))?
            .is_some())
}

/// Stock: increments for every product an applied event touched (0 for a
/// net-zero epoch, so that its committed level is known too). Returns the
/// products touched and their committed level.
async fn update_inventory(
    tx: &Tx<'_>,
    batch: &EpochBatch,
) -> Result<(Vec<String>, HashMap<String, StockLevel>), SinkError> {
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
                 SELECT up.product_id, up.quantity_on_hand, stock_is_low(up.quantity_on_hand, p.reorder_level) \
                 FROM up JOIN products p USING (product_id)",
                &[&ids, &ds],
            )
            .await
            .map_err(SinkError::pg("update inventory"))?;
        for r in rows {
            stock.insert(r.get::<_, String>(0), StockLevel { quantity_on_hand: r.get(1), low: r.get(2) });
        }
    }
    Ok((deltas.into_keys().map(str::to_string).collect(), stock))
}

/// The alerts of `candidates` whose committed state (low or not) differs
/// from their last alert's, raised at `epoch`, by product.
async fn raise_alerts(tx: &Tx<'_>, epoch: u64, candidates: &[&str]) -> Result<Vec<StockAlert>, SinkError> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let rows = tx
        .query(
            "WITH now_state AS ( \
               SELECT p.product_id, coalesce(i.quantity_on_hand, 0) AS q, p.reorder_level AS r, \
                      stock_is_low(coalesce(i.quantity_on_hand, 0), p.reorder_level) AS low \
               FROM unnest($1::text[]) AS c(product_id) \
               JOIN products p USING (product_id) LEFT JOIN inventory i USING (product_id)), \
             crossed AS ( \
               SELECT n.* FROM now_state n LEFT JOIN stock_alert_state s USING (product_id) \
               WHERE n.low <> coalesce(s.low, false)), \
             state AS ( \
               INSERT INTO stock_alert_state AS s (product_id, low, updated_at) \
               SELECT product_id, low, now() FROM crossed \
               ON CONFLICT (product_id) DO UPDATE SET low = EXCLUDED.low, updated_at = now()) \
             INSERT INTO stock_alerts (alert_id, product_id, kind, quantity_on_hand, reorder_level, raised_at, epoch) \
             SELECT 'A-' || $2::bigint || '-' || product_id, product_id, \
                    CASE WHEN low THEN 'low' ELSE 'recovered' END, q, r, now(), $2 FROM crossed \
             RETURNING epoch, alert_id, product_id, kind, quantity_on_hand, reorder_level, raised_at",
            &[&candidates, &(epoch as i64)],
        )
        .await
        .map_err(SinkError::pg("raise stock alerts"))?;
    let mut alerts: Vec<StockAlert> = rows.iter().map(|r| StockAlert::from_row(r, 1)).collect();
    alerts.sort_by(|a, b| a.product_id.cmp(&b.product_id));
    Ok(alerts)
}

/// The input offsets after this commit, and the published epoch the
/// publisher last acknowledged.
async fn store_progress(
    tx: &Tx<'_>,
    parts: &BTreeMap<(String, i32), (i64, i64)>,
    published_epoch: u64,
) -> Result<(), SinkError> {
    let part_topics: Vec<&str> = parts.keys().map(|(t, _)| t.as_str()).collect();
    let part_ids: Vec<i32> = parts.keys().map(|(_, p)| *p).collect();
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
    Ok(())
}

/// The `epochs` row; returns the transaction's time (`now()`, as
/// `processed_at` holds it), which comes back with it: no extra round trip.
async fn record_epoch(tx: &Tx<'_>, batch: &EpochBatch) -> Result<DateTime<Utc>, SinkError> {
    let counts = batch.counts();
    let (applied, duplicates, rejected) =
        (counts.applied as i32, counts.duplicates as i32, counts.rejected as i32);
    let row = tx
        .query_one(
            "INSERT INTO epochs (epoch, messages, applied, duplicates, rejected, started_at, committed_at) \
             VALUES ($1, $2, $3, $4, $5, now(), clock_timestamp()) RETURNING started_at",
            &[&(batch.epoch as i64), &(batch.outcomes.len() as i32), &applied, &duplicates, &rejected],
        )
        .await
        .map_err(SinkError::pg("record epoch"))?;
    Ok(row.get(0))
}

/// `sales_hourly` increments from the batch's sums, and `sales_daily`
/// increments as the sum of each day's hours (so hours always add up to
/// their day).
async fn write_sales(tx: &tokio_postgres::Transaction<'_>, batch: &EpochBatch) -> Result<(), SinkError> {
    if batch.sales.is_empty() {
        return Ok(());
    }
    let hours: Vec<(DateTime<Utc>, &str, &str, SalesSums)> =
        batch.sales.iter().map(|s| (s.key.0, s.key.1.as_str(), s.key.2.as_str(), s.sums)).collect();
    add_sales(tx, SalesTable::Hourly, &hours).await?;
    let mut daily: BTreeMap<(chrono::NaiveDate, &str, &str), SalesSums> = BTreeMap::new();
    for s in &batch.sales {
        *daily.entry((s.key.0.date_naive(), s.key.1.as_str(), s.key.2.as_str())).or_default() += s.sums;
    }
    let days: Vec<(chrono::NaiveDate, &str, &str, SalesSums)> =
        daily.into_iter().map(|((d, p, src), sums)| (d, p, src, sums)).collect();
    add_sales(tx, SalesTable::Daily, &days).await
}

/// The two sales tables, alike but for their time column.
#[derive(Clone, Copy)]
enum SalesTable {
    /// `sales_hourly`, by `hour timestamptz`.
    Hourly,
    /// `sales_daily`, by `day date`.
    Daily,
}

impl SalesTable {
    /// (table, time column, its type, what a failure says).
    const fn names(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            SalesTable::Hourly => ("sales_hourly", "hour", "timestamptz", "update sales_hourly"),
            SalesTable::Daily => ("sales_daily", "day", "date", "update sales_daily"),
        }
    }
}

/// Adds `rows` (time, product, source, sums) to one sales table in one
/// statement.
async fn add_sales<T: tokio_postgres::types::ToSql + Sync>(
    tx: &tokio_postgres::Transaction<'_>,
    table: SalesTable,
    rows: &[(T, &str, &str, SalesSums)],
) -> Result<(), SinkError> {
    let (table, time_column, time_type, context) = table.names();
    let cents = |c: i128| Decimal::try_from_i128_with_scale(c, 2).unwrap_or(Decimal::MAX);
    let times: Vec<&T> = rows.iter().map(|r| &r.0).collect();
    let products: Vec<&str> = rows.iter().map(|r| r.1).collect();
    let sources: Vec<&str> = rows.iter().map(|r| r.2).collect();
    let units: Vec<i64> = rows.iter().map(|r| r.3.units).collect();
    let revenue: Vec<Decimal> = rows.iter().map(|r| cents(r.3.revenue_cents)).collect();
    let orders: Vec<i64> = rows.iter().map(|r| r.3.orders).collect();
    let sql = format!(
        "INSERT INTO {table} AS s ({time_column}, product_id, source, units, revenue, order_count, updated_at) \
         SELECT t, p, src, u, r, o, now() \
         FROM unnest($1::{time_type}[], $2::text[], $3::text[], $4::bigint[], $5::numeric[], $6::bigint[]) \
           AS x(t, p, src, u, r, o) \
         ON CONFLICT ({time_column}, product_id, source) DO UPDATE SET \
           units = s.units + EXCLUDED.units, revenue = s.revenue + EXCLUDED.revenue, \
           order_count = s.order_count + EXCLUDED.order_count, updated_at = now()"
    );
    tx.execute(&sql, &[&times, &products, &sources, &units, &revenue, &orders])
        .await
        .map_err(SinkError::pg(context))?;
    Ok(())
}

/// `stock_hourly` increments: the batch's applied deltas per product and
/// UTC hour of `occurred_at` (axis `event`), and per product in the hour of
/// this commit's `processed_at` (axis `commit`).
async fn write_stock_hours(
    tx: &tokio_postgres::Transaction<'_>,
    batch: &EpochBatch,
) -> Result<(), SinkError> {
    let mut hours: BTreeMap<(DateTime<Utc>, &str), (i64, i64)> = BTreeMap::new();
    for o in &batch.outcomes {
        if let Outcome::Applied { event, .. } = o {
            let row = hours.entry((event.hour(), event.product_id.as_str())).or_default();
            row.0 += event.delta();
            row.1 += 1;
        }
    }
    if hours.is_empty() {
        return Ok(());
    }
    let hour: Vec<DateTime<Utc>> = hours.keys().map(|k| k.0).collect();
    let products: Vec<&str> = hours.keys().map(|k| k.1).collect();
    let deltas: Vec<i64> = hours.values().map(|v| v.0).collect();
    let events: Vec<i64> = hours.values().map(|v| v.1).collect();
    tx.execute(
        "INSERT INTO stock_hourly AS s (axis, hour, product_id, delta, events) \
         SELECT 'event', h, p, d, n FROM unnest($1::timestamptz[], $2::text[], $3::bigint[], $4::bigint[]) AS t(h, p, d, n) \
         UNION ALL \
         SELECT 'commit', date_trunc('hour', now(), 'UTC'), p, sum(d), sum(n) \
         FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS t(p, d, n) GROUP BY p \
         ON CONFLICT (axis, hour, product_id) DO UPDATE SET \
           delta = s.delta + EXCLUDED.delta, events = s.events + EXCLUDED.events",
        &[&hour, &products, &deltas, &events],
    )
    .await
    .map_err(SinkError::pg("update stock_hourly"))?;
    Ok(())
}

/// Per input partition of the batch: its first offset and the offset after
/// its last message.
fn batch_partitions(topics: &TopicNames, batch: &EpochBatch) -> BTreeMap<(String, i32), (i64, i64)> {
    let mut parts: BTreeMap<(String, i32), (i64, i64)> = BTreeMap::new();
    for o in &batch.outcomes {
        let m = o.msg();
        let e = parts.entry((topics.input(m.kind), m.partition)).or_insert((m.offset, m.offset + 1));
        e.0 = e.0.min(m.offset);
        e.1 = e.1.max(m.offset + 1);
    }
    parts
}

/// The next offset of every input partition `batch` read from: where its
/// commit leaves `source_offsets`.
pub fn batch_offsets(topics: &TopicNames, batch: &EpochBatch) -> Vec<(String, i32, i64)> {
    batch_partitions(topics, batch).into_iter().map(|((t, p), (_, next))| (t, p, next)).collect()
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
             quantity_after, kafka_timestamp, kafka_key) FROM STDIN (FORMAT binary)",
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
        Type::BYTEA,
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
                        &None::<&[u8]>,
                    ])
                    .await
                    .map_err(SinkError::pg("copy events_log row"))?;
            }
            Outcome::Rejected { msg, rejection } => {
                let (raw, b64) = raw_text(msg.value.as_deref());
                let key = msg.key.as_deref().filter(|k| !k.is_empty());
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
                        &key,
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
        let Some(sale) = event.sale() else { continue };
        // The party is the buyer online and the selling store in a store.
        let (customer, store) = match sale.source {
            SaleSource::Online => (Some(sale.party), None),
            SaleSource::Store => (None, Some(sale.party)),
        };
        let source = sale.source.as_str();
        let quantity = event.quantity as i32;
        writer
            .as_mut()
            .write(&[
                &event.event_id,
                &sale.order_id,
                &event.product_id,
                &quantity,
                sale.unit_price,
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

// What a restart reads back to publish the commits Kafka lacks: the
// rows the commits above wrote, epoch by epoch.

/// One `events_log` row of an epoch not yet published.
#[derive(Debug, Clone)]
pub struct UnpublishedRow {
    /// Epoch it was committed in.
    pub epoch: u64,
    /// Event id (when known).
    pub event_id: Option<String>,
    /// Input topic name.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// `raw_event` and whether it is base64.
    pub raw: Option<String>,
    /// Whether `raw` is `base64:`-encoded.
    pub raw_is_base64: bool,
    /// The input message's key (kept for rejected messages).
    pub key: Option<Vec<u8>>,
    /// `applied` or `rejected`.
    pub applied: bool,
    /// Rejection code and detail.
    pub error: Option<(String, String)>,
    /// Applied: event type, product, delta, stock after, reorder level.
    pub event_type: Option<String>,
    /// Applied: product id.
    pub product_id: Option<String>,
    /// Applied: stock change.
    pub delta: Option<i64>,
    /// Applied: stock right after the commit.
    pub quantity_after: Option<i64>,
    /// Applied: whether `quantity_after` is low by the product's reorder
    /// level now (`stock_is_low`).
    pub low: Option<bool>,
    /// Commit time.
    pub processed_at: DateTime<Utc>,
}

/// Every row of the epochs after `after` up to `through`, in commit order.
pub async fn unpublished_rows(
    client: &Client,
    after: u64,
    through: u64,
) -> Result<Vec<UnpublishedRow>, SinkError> {
    let rows = client
        .query(
            "SELECT e.epoch, e.event_id, e.topic, e.kafka_partition, e.kafka_offset, e.raw_event, e.raw_is_base64, \
                    e.status = 'applied', e.error_code, e.error_detail, e.event_type, e.product_id, e.delta, \
                    e.quantity_after, stock_is_low(e.quantity_after, p.reorder_level), e.processed_at, e.kafka_key \
             FROM events_log e LEFT JOIN products p USING (product_id) \
             WHERE e.epoch > $1 AND e.epoch <= $2 ORDER BY e.epoch, e.log_id",
            &[&epoch_param(after), &epoch_param(through)],
        )
        .await
        .map_err(SinkError::pg("read unpublished epochs"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let code: Option<String> = r.get(8);
            let detail: Option<String> = r.get(9);
            UnpublishedRow {
                epoch: r.get::<_, i64>(0) as u64,
                event_id: r.get(1),
                topic: r.get(2),
                partition: r.get(3),
                offset: r.get(4),
                raw: r.get(5),
                raw_is_base64: r.get(6),
                applied: r.get(7),
                error: code.map(|c| (c, detail.unwrap_or_default())),
                event_type: r.get(10),
                product_id: r.get(11),
                delta: r.get(12),
                quantity_after: r.get(13),
                low: r.get(14),
                processed_at: r.get(15),
                key: r.get(16),
            }
        })
        .collect())
}

/// An epoch as a `bigint` parameter (`u64::MAX` reads as "no bound").
fn epoch_param(epoch: u64) -> i64 {
    i64::try_from(epoch).unwrap_or(i64::MAX)
}

/// The stock alerts of the epochs after `after` up to `through`, in commit
/// order (by epoch, then product, as each commit raised them).
pub async fn unpublished_alerts(
    client: &Client,
    after: u64,
    through: u64,
) -> Result<Vec<StockAlert>, SinkError> {
    let rows = client
        .query(
            "SELECT epoch, alert_id, product_id, kind, quantity_on_hand, reorder_level, raised_at FROM stock_alerts \
             WHERE epoch > $1 AND epoch <= $2 ORDER BY epoch, product_id COLLATE \"C\"",
            &[&epoch_param(after), &epoch_param(through)],
        )
        .await
        .map_err(SinkError::pg("read unpublished alerts"))?;
    Ok(rows.iter().map(|r| StockAlert::from_row(r, 1)).collect())
}

#[cfg(test)]
mod tests {
    use super::{raw_bytes, raw_text};

    #[test]
    fn utf8_values_are_stored_as_text_unflagged() {
        let json = br#"{"event_id":"e-1","product_id":"P-001"}"#;
        assert_eq!(
            raw_text(Some(json)),
            (Some(r#"{"event_id":"e-1","product_id":"P-001"}"#.to_string()), false)
        );
        // Not ASCII, still UTF-8: text.
        assert_eq!(raw_text(Some("Größe €".as_bytes())), (Some("Größe €".to_string()), false));
    }

    #[test]
    fn values_that_are_not_utf8_are_base64_prefixed_and_flagged() {
        assert_eq!(raw_text(Some(&[0xff, 0xfe, 0x00, 0x41])), (Some("base64://4AQQ==".to_string()), true));
        // A truncated two-byte sequence.
        assert_eq!(raw_text(Some(&[0xc3, 0x28])), (Some("base64:wyg=".to_string()), true));
    }

    #[test]
    fn utf8_values_with_nul_are_base64_because_text_cannot_hold_nul() {
        assert_eq!(raw_text(Some(b"a\0b")), (Some("base64:YQBi".to_string()), true));
    }

    #[test]
    fn a_tombstone_has_no_raw_value_and_an_empty_value_is_empty_text() {
        assert_eq!(raw_text(None), (None, false));
        assert_eq!(raw_text(Some(b"")), (Some(String::new()), false));
        assert_eq!(raw_bytes("", false), Vec::<u8>::new());
    }

    #[test]
    fn text_that_starts_with_the_base64_prefix_stays_text_and_is_not_decoded() {
        // "aGk=" is "hi" in base64: only the flag says whether to decode.
        assert_eq!(raw_text(Some(b"base64:aGk=")), (Some("base64:aGk=".to_string()), false));
        assert_eq!(raw_bytes("base64:aGk=", false), b"base64:aGk=".to_vec());
        assert_eq!(raw_bytes("base64:aGk=", true), b"hi".to_vec());
    }

    #[test]
    fn raw_bytes_gives_back_every_value_raw_text_stored() {
        let every_byte: Vec<u8> = (0..=255).collect();
        let values: [&[u8]; 8] = [
            b"",
            br#"{"event_id":"e-1"}"#,
            "Größe €".as_bytes(),
            b"base64:aGk=",
            b"a\0b",
            &[0xff, 0xfe, 0x00, 0x41],
            &[0xc3],
            &every_byte,
        ];
        for v in values {
            let (text, is_base64) = raw_text(Some(v));
            let text = text.expect("a value is stored");
            assert_eq!(raw_bytes(&text, is_base64), v.to_vec(), "{v:?} stored as {text:?}");
        }
    }
}
