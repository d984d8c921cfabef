//! The live view's reads (`stockflow serve`): committed state only; none
//! of them writes.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use tokio_postgres::Client;

use crate::SinkError;

/// One product's committed stock (contract 5.5, `GET /api/stock`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StockRow {
    /// The product.
    pub product_id: String,
    /// Its name.
    pub name: String,
    /// Units on hand (0 for a product the processor has not seen yet).
    pub quantity_on_hand: i64,
    /// Its reorder level.
    pub reorder_level: i32,
    /// `stock_is_low(quantity_on_hand, reorder_level)`: the one definition.
    pub low: bool,
}

/// Every product's stock, ordered by `product_id` (bytewise, `COLLATE "C"`,
/// whatever the database's collation).
pub async fn stock(client: &Client) -> Result<Vec<StockRow>, SinkError> {
    let rows = client
        .query(
            "SELECT p.product_id, p.name, COALESCE(i.quantity_on_hand, 0), p.reorder_level, \
               stock_is_low(COALESCE(i.quantity_on_hand, 0), p.reorder_level) \
             FROM products p LEFT JOIN inventory i USING (product_id) \
             ORDER BY p.product_id COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(SinkError::pg("read the stock"))?;
    Ok(rows
        .iter()
        .map(|r| StockRow {
            product_id: r.get(0),
            name: r.get(1),
            quantity_on_hand: r.get(2),
            reorder_level: r.get(3),
            low: r.get(4),
        })
        .collect())
}

/// One row of the alert feed (table `stock_alerts`, contract 5.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertRow {
    /// The alert's id.
    pub alert_id: String,
    /// The product.
    pub product_id: String,
    /// Its name (empty when the product is no longer in the catalog).
    pub name: String,
    /// `low` or `recovered`.
    pub kind: String,
    /// Units on hand after the commit that raised it.
    pub quantity_on_hand: i64,
    /// The reorder level it was measured against.
    pub reorder_level: i32,
    /// The commit's time.
    pub raised_at: DateTime<Utc>,
}

/// The newest `limit` alerts, newest first.
pub async fn alerts(client: &Client, limit: i64) -> Result<Vec<AlertRow>, SinkError> {
    let rows = client
        .query(
            "SELECT a.alert_id, a.product_id, COALESCE(p.name, ''), a.kind, a.quantity_on_hand, \
               a.reorder_level, a.raised_at \
             FROM stock_alerts a LEFT JOIN products p USING (product_id) \
             ORDER BY a.raised_at DESC, a.alert_id DESC LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(SinkError::pg("read the stock alerts"))?;
    Ok(rows
        .iter()
        .map(|r| AlertRow {
            alert_id: r.get(0),
            product_id: r.get(1),
            name: r.get(2),
            kind: r.get(3),
            quantity_on_hand: r.get(4),
            reorder_level: r.get(5),
            raised_at: r.get(6),
        })
        .collect())
}

/// Sales of one UTC hour through one channel (table `sales_hourly`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HourlySales {
    /// The hour's start.
    pub hour: DateTime<Utc>,
    /// `online` or `store`.
    pub source: String,
    /// Units sold.
    pub units: i64,
    /// Revenue, exact (a decimal string in JSON).
    pub revenue: Decimal,
    /// Sale events.
    pub order_count: i64,
}

/// The hours of `day` (UTC) that sold anything, by hour and channel.
pub async fn sales_hourly(client: &Client, day: NaiveDate) -> Result<Vec<HourlySales>, SinkError> {
    let start = day.and_time(NaiveTime::MIN).and_utc();
    let rows = client
        .query(
            "SELECT hour, source, sum(units)::bigint, sum(revenue), sum(order_count)::bigint \
             FROM sales_hourly WHERE hour >= $1 AND hour < $1 + interval '1 day' \
             GROUP BY hour, source ORDER BY hour, source",
            &[&start],
        )
        .await
        .map_err(SinkError::pg("read the hourly sales"))?;
    Ok(rows
        .iter()
        .map(|r| HourlySales {
            hour: r.get(0),
            source: r.get(1),
            units: r.get(2),
            revenue: r.get(3),
            order_count: r.get(4),
        })
        .collect())
}

/// Rejected messages of one code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectionCount {
    /// The contract's validation code.
    pub code: String,
    /// Messages rejected with it.
    pub count: i64,
}

/// Messages rejected (committed) in the last 24 hours, by code, most first.
pub async fn rejections_24h(client: &Client) -> Result<Vec<RejectionCount>, SinkError> {
    let rows = client
        .query(
            "SELECT error_code, count(*) FROM events_log \
             WHERE status = 'rejected' AND processed_at > now() - interval '24 hours' \
             GROUP BY error_code ORDER BY 2 DESC, 1",
            &[],
        )
        .await
        .map_err(SinkError::pg("read the rejections"))?;
    Ok(rows.iter().map(|r| RejectionCount { code: r.get(0), count: r.get(1) }).collect())
}

/// The last commit, as the `epochs` table says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LastCommit {
    /// Its epoch.
    pub epoch: i64,
    /// When it was committed.
    pub committed_at: DateTime<Utc>,
}

/// The newest commit, if any.
pub async fn last_commit(client: &Client) -> Result<Option<LastCommit>, SinkError> {
    let row = client
        .query_opt("SELECT epoch, committed_at FROM epochs ORDER BY epoch DESC LIMIT 1", &[])
        .await
        .map_err(SinkError::pg("read the last commit"))?;
    Ok(row.map(|r| LastCommit { epoch: r.get(0), committed_at: r.get(1) }))
}

/// A processor's heartbeat row (table `processor_status`), with its age.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessorHeartbeat {
    /// The Timely process index.
    pub process: i32,
    /// When that `stockflow run` started.
    pub started_at: DateTime<Utc>,
    /// Seconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_seconds: f64,
    /// Its worker threads.
    pub workers: i32,
    /// Waiting for Kafka.
    pub waiting_kafka: bool,
    /// Waiting for PostgreSQL.
    pub waiting_postgres: bool,
    /// Messages behind the input partitions' ends.
    pub consumer_lag_messages: i64,
    /// Commit time minus the oldest Kafka timestamp of its last commit.
    pub lag_seconds: f64,
}

/// The pipeline's health as the database sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// The newest commit.
    pub last_commit: Option<LastCommit>,
    /// Seconds since it, by the database's clock.
    pub seconds_since_commit: Option<f64>,
    /// Commits in the last 60 seconds.
    pub commits_last_minute: i64,
    /// Messages committed in the last 60 seconds.
    pub messages_last_minute: i64,
    /// Every process that ever wrote a heartbeat, by index.
    pub processors: Vec<ProcessorHeartbeat>,
}

/// Reads [`Health`]: the commits in one statement, the heartbeats in another.
pub async fn health(client: &Client) -> Result<Health, SinkError> {
    let row = client
        .query_one(
            "WITH last AS (SELECT epoch, committed_at FROM epochs ORDER BY epoch DESC LIMIT 1), \
                  minute AS (SELECT count(*) AS commits, COALESCE(sum(messages), 0)::bigint AS messages \
                             FROM epochs WHERE committed_at > now() - interval '60 seconds') \
             SELECT last.epoch, last.committed_at, \
                    extract(epoch FROM now() - last.committed_at)::float8, \
                    minute.commits, minute.messages \
             FROM minute LEFT JOIN last ON true",
            &[],
        )
        .await
        .map_err(SinkError::pg("read the pipeline health"))?;
    let last_commit = match (row.get::<_, Option<i64>>(0), row.get::<_, Option<DateTime<Utc>>>(1)) {
        (Some(epoch), Some(committed_at)) => Some(LastCommit { epoch, committed_at }),
        _ => None,
    };
    let processors = client
        .query(
            "SELECT process, started_at, extract(epoch FROM now() - updated_at)::float8, workers, \
               waiting_kafka, waiting_postgres, consumer_lag_messages, lag_seconds \
             FROM processor_status ORDER BY process",
            &[],
        )
        .await
        .map_err(SinkError::pg("read the processor status"))?
        .iter()
        .map(|r| ProcessorHeartbeat {
            process: r.get(0),
            started_at: r.get(1),
            heartbeat_age_seconds: r.get(2),
            workers: r.get(3),
            waiting_kafka: r.get(4),
            waiting_postgres: r.get(5),
            consumer_lag_messages: r.get(6),
            lag_seconds: r.get(7),
        })
        .collect();
    Ok(Health {
        last_commit,
        seconds_since_commit: row.get(2),
        commits_last_minute: row.get(3),
        messages_last_minute: row.get(4),
        processors,
    })
}
