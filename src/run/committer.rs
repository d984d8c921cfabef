//! The committer thread: seals and merges epoch batches, commits each in
//! one transaction, then hands the output messages to the publisher thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use dataflow::TopicNames;
use dataflow::records::{EpochBatch, Outcome, OutcomeCounts};
use sinks::SinkError;
use sinks::postgres::{self, CommitOutcome};
use tokio::runtime::Handle;

use super::{BlockingClient, Shared, kafka_waiting, now_slot, retry_blocking};
use crate::metrics::{CodeLabel, Metrics, OutcomeLabel};

/// What the committer hands the publisher: the messages of the commits up
/// to `epoch` and where those commits left the input offsets.
pub(super) struct Publication {
    pub epoch: u64,
    pub messages: Vec<sinks::kafka::OutputMessage>,
    pub offsets: Vec<(String, i32, i64)>,
}

/// The committer thread: one transaction per epoch (or per group of epochs
/// queued while the last commit ran), then the output messages.
#[allow(clippy::too_many_arguments)]
pub(super) fn committer(
    rx: Receiver<EpochBatch>,
    url: String,
    outputs: sinks::kafka::Outputs,
    topics: TopicNames,
    shared: Arc<Shared>,
    handle: Handle,
    mut published: u64,
    generation: i64,
) -> Result<()> {
    let result = committer_loop(rx, &url, outputs, &topics, &shared, &handle, &mut published, generation);
    if result.is_err() {
        shared.committer_failed.store(true, Ordering::SeqCst);
        shared.shutdown.store(true, Ordering::SeqCst);
    }
    result
}

/// How often the publisher records the last acknowledged epoch itself.
const PUBLISHED_RECORD_INTERVAL: Duration = Duration::from_millis(200);

/// At most this many output messages go into one Kafka transaction when
/// commits queue up for the publisher.
const MAX_PUBLICATION_MESSAGES: usize = 100_000;

#[allow(clippy::too_many_arguments)]
fn committer_loop(
    rx: Receiver<EpochBatch>,
    url: &str,
    outputs: sinks::kafka::Outputs,
    topics: &TopicNames,
    shared: &Arc<Shared>,
    handle: &Handle,
    published: &mut u64,
    generation: i64,
) -> Result<()> {
    // Output messages go out on their own thread, in commit order, while the
    // next epoch commits; it records the last epoch the broker acknowledged.
    let acknowledged = Arc::new(AtomicU64::new(*published));
    let (out_tx, out_rx) = sync_channel::<Publication>(2);
    let publisher = {
        let (acknowledged, shared, handle, url) =
            (acknowledged.clone(), shared.clone(), handle.clone(), url.to_string());
        std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || publish(out_rx, outputs, &acknowledged, &shared, &handle, &url))?
    };
    let result = commit_epochs(rx, topics, shared, handle, url, &acknowledged, &out_tx, generation);
    drop(out_tx);
    let published_ok = join_publisher(publisher, &shared.abandon_waits)?;
    result?;
    published_ok?;
    *published = acknowledged.load(Ordering::Acquire);
    // Everything sent so far is acknowledged: say so, so a restart does not re-send it.
    let mut db = BlockingClient::new(handle.clone(), url.to_string(), shared.clone());
    db.with("postgres", |h, c| h.block_on(postgres::set_published_epoch(c, *published)))?;
    Ok(())
}

/// The publisher thread: sends each publication's messages (commits that
/// queued up go out together) and advances `acknowledged`.
fn publish(
    out_rx: Receiver<Publication>,
    outputs: sinks::kafka::Outputs,
    acknowledged: &AtomicU64,
    shared: &Shared,
    handle: &Handle,
    url: &str,
) -> Result<(), SinkError> {
    let metrics = &shared.metrics;
    let mut client: Option<tokio_postgres::Client> = None;
    let mut recorded = Instant::now();
    while let Ok(mut p) = out_rx.recv() {
        // Commits that queued up while the last one was written go out in
        // one transaction (as one acknowledgement when at least once);
        // their progress is the last one's.
        while p.messages.len() < MAX_PUBLICATION_MESSAGES {
            let Ok(next) = out_rx.try_recv() else { break };
            p.epoch = next.epoch;
            p.messages.extend(next.messages);
            merge_offsets(&mut p.offsets, next.offsets);
        }
        let waiting = kafka_waiting(metrics);
        let wait = sinks::Wait { waiting: &waiting, stop: &shared.abandon_waits };
        retry_blocking(metrics, "kafka", &shared.abandon_waits, || {
            outputs.publish(&p.messages, &p.offsets, p.epoch, wait)
        })?;
        acknowledged.fetch_max(p.epoch, Ordering::AcqRel);
        // The next commit records the acknowledged epoch too; doing it here
        // as well (at most every 200 ms) keeps what a crash makes the next
        // start re-send down to the last moments. One attempt, no retries:
        // this record is only an optimisation.
        if recorded.elapsed() >= PUBLISHED_RECORD_INTERVAL {
            recorded = Instant::now();
            let result = handle.block_on(async {
                if client.as_ref().is_none_or(|c| c.is_closed()) {
                    client = Some(postgres::connect(url).await?);
                }
                match &client {
                    Some(c) => postgres::set_published_epoch(c, p.epoch).await,
                    None => Ok(()),
                }
            });
            if let Err(e) = result {
                client = None;
                tracing::warn!(error = %e, epoch = p.epoch, "cannot record the published epoch (the next commit will)");
            }
        }
    }
    Ok(())
}

/// How long a stopping process waits for the publisher to end by itself.
const PUBLISHER_GRACE: Duration = Duration::from_secs(3);

/// Hands a publication to the publisher, waiting while its queue is full,
/// unless the process stops during an outage (`stop`, see
/// [`Shared::abandon_waits`]): then the publication is dropped, and
/// the next start re-sends it from the database (its commit is recorded as
/// not yet published).
fn hand_over(out_tx: &SyncSender<Publication>, mut p: Publication, stop: &AtomicBool) -> Result<()> {
    loop {
        match out_tx.try_send(p) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Disconnected(_)) => bail!("the publisher thread stopped"),
            Err(TrySendError::Full(back)) => {
                if stop.load(Ordering::Relaxed) {
                    return Err(SinkError::Interrupted("Kafka").into());
                }
                p = back;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Waits for the publisher to end. Once the process is stopping during an
/// outage (`stop`, see [`Shared::abandon_waits`]), it gets [`PUBLISHER_GRACE`]: a librdkafka transactional call can block well past
/// its own timeout while the broker is away (`send_offsets_to_transaction`
/// waits for the group coordinator), and a stop must not wait for the
/// broker. Such a thread is left behind and the process exits around it;
/// its open transaction is aborted by the next start's producer (same
/// `transactional.id`), which re-sends everything Kafka does not hold.
fn join_publisher(
    publisher: std::thread::JoinHandle<Result<(), SinkError>>,
    stop: &AtomicBool,
) -> Result<Result<(), SinkError>> {
    let mut stopping_since: Option<Instant> = None;
    while !publisher.is_finished() {
        if stop.load(Ordering::Relaxed) {
            let since = *stopping_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= PUBLISHER_GRACE {
                tracing::warn!(
                    "the output producer is still blocked in a Kafka call; leaving it (the next start aborts its transaction and re-sends)"
                );
                return Ok(Err(SinkError::Interrupted("Kafka")));
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    publisher.join().map_err(|_| anyhow::anyhow!("publisher thread panicked"))
}

/// Offsets of a later commit replace an earlier one's, partition by partition.
fn merge_offsets(into: &mut Vec<(String, i32, i64)>, later: Vec<(String, i32, i64)>) {
    for (t, p, next) in later {
        match into.iter_mut().find(|(t2, p2, _)| *t2 == t && *p2 == p) {
            Some(e) => e.2 = e.2.max(next),
            None => into.push((t, p, next)),
        }
    }
}

/// A group commit takes in queued epochs until it holds this many messages.
const MAX_GROUP_MESSAGES: usize = 50_000;

/// The commit side of the committer thread: what it keeps from one commit
/// to the next.
struct Commits<'a> {
    db: BlockingClient,
    topics: &'a TopicNames,
    shared: &'a Arc<Shared>,
    generation: i64,
    /// Products at or below their reorder level (the gauge).
    low_products: i64,
    /// The last day whose `events_log`/`orders` partitions exist.
    partitions_through: chrono::NaiveDate,
}

#[allow(clippy::too_many_arguments)]
fn commit_epochs(
    rx: Receiver<EpochBatch>,
    topics: &TopicNames,
    shared: &Arc<Shared>,
    handle: &Handle,
    url: &str,
    acknowledged: &AtomicU64,
    out_tx: &SyncSender<Publication>,
    generation: i64,
) -> Result<()> {
    let mut db = BlockingClient::new(handle.clone(), url.to_string(), shared.clone());
    let low_products = db.with("postgres", |h, c| h.block_on(postgres::low_count(c)))?;
    shared.metrics.low_stock_products.set(low_products);
    // The day partitions of events_log and orders (migration V7) exist a
    // week ahead; a commit whose day comes within two days of the end
    // makes the next ones, outside its own transaction.
    let partitions_through = db.with("postgres", |h, c| h.block_on(postgres::ensure_partitions(c)))?;
    let mut commits = Commits { db, topics, shared, generation, low_products, partitions_through };
    for batch in rx.iter() {
        let (batch, merged) = take_group(batch, &rx);
        if batch.is_empty() {
            continue;
        }
        // How long after the end of its epoch the batch reached the committer
        // (frontier progress plus any wait in the channel).
        let sealed_ms = (now_slot(1) as i64 - (batch.epoch + shared.epoch_ms) as i64).max(0);
        let started = Instant::now();
        let publication = commits.commit(&batch, acknowledged.load(Ordering::Acquire))?;
        let db_ms = started.elapsed().as_secs_f64() * 1e3;
        hand_over(out_tx, publication, &shared.abandon_waits)?;
        shared.committed_epoch.store(batch.epoch, Ordering::Release);
        let elapsed = started.elapsed();
        let (counts, lag_s) = record_commit(&shared.metrics, &batch, elapsed);
        if batch.outcomes.is_empty() {
            continue;
        }
        tracing::info!(
            epoch = batch.epoch,
            events_in = batch.outcomes.len(),
            applied = counts.applied,
            duplicates = counts.duplicates,
            rejected = counts.rejected,
            commit_ms = format!("{:.1}", elapsed.as_secs_f64() * 1e3),
            db_ms = format!("{db_ms:.1}"),
            sealed_ms,
            merged,
            lag_s = format!("{lag_s:.3}"),
            "epoch committed"
        );
    }
    Ok(())
}

/// Group commit: `first` sealed, with the epochs that queued up behind it
/// while the last transaction ran absorbed into it (up to
/// [`MAX_GROUP_MESSAGES`]), so a slow commit is not followed by a backlog
/// of small ones (latency stays about one commit long). Returns the group
/// and how many epochs it holds.
fn take_group(mut first: EpochBatch, rx: &Receiver<EpochBatch>) -> (EpochBatch, u32) {
    let mut merged = 1u32;
    first.seal();
    while first.outcomes.len() < MAX_GROUP_MESSAGES {
        let Ok(mut next) = rx.try_recv() else { break };
        next.seal();
        first.absorb(next);
        merged += 1;
    }
    (first, merged)
}

impl Commits<'_> {
    /// Commits `batch` (one transaction) and returns what to publish for it.
    fn commit(&mut self, batch: &EpochBatch, published: u64) -> Result<Publication> {
        let (topics, generation) = (self.topics, self.generation);
        let outcome = self.db.with("postgres", |h, c| {
            h.block_on(postgres::commit_epoch(c, topics, batch, published, generation))
        })?;
        match outcome {
            CommitOutcome::Committed { messages, alerts, offsets, committed_at } => {
                if committed_at.date_naive() + chrono::Days::new(2) > self.partitions_through {
                    self.partitions_through =
                        self.db.with("postgres", |h, c| h.block_on(postgres::ensure_partitions(c)))?;
                }
                log_alerts(batch.epoch, &alerts, &mut self.low_products);
                let metrics = &self.shared.metrics;
                metrics.low_stock_products.set(self.low_products);
                metrics.stock_alerts.inc_by(alerts.len() as u64);
                Ok(Publication { epoch: batch.epoch, messages, offsets })
            }
            CommitOutcome::AlreadyCommitted => {
                // A retry after a lost acknowledgement: the first attempt
                // committed this very batch; its messages are sent from
                // what the database holds.
                tracing::warn!(
                    epoch = batch.epoch,
                    "epoch was already committed; publishing it from the log"
                );
                let (after, through) = (batch.epoch.saturating_sub(1), batch.epoch);
                let (messages, _) = self.db.with("postgres", |h, c| {
                    h.block_on(sinks::kafka::unpublished_messages(c, topics, after, through))
                })?;
                Ok(Publication {
                    epoch: batch.epoch,
                    messages,
                    offsets: postgres::batch_offsets(topics, batch),
                })
            }
        }
    }
}

/// A commit's metrics: messages by outcome, rejections by code, commit
/// time, and the lag (now minus the oldest Kafka timestamp in the batch).
/// Returns the counts and the lag in seconds, for the log line.
fn record_commit(metrics: &Metrics, batch: &EpochBatch, elapsed: Duration) -> (OutcomeCounts, f64) {
    let counts = batch.counts();
    let mut oldest_ts: Option<i64> = None;
    for o in &batch.outcomes {
        if let Some(ts) = o.msg().timestamp_ms {
            oldest_ts = Some(oldest_ts.map_or(ts, |x: i64| x.min(ts)));
        }
        if let Outcome::Rejected { rejection, .. } = o {
            metrics.rejected.get_or_create(&CodeLabel { code: rejection.code.as_str() }).inc();
        }
    }
    let lag_s = oldest_ts
        .map(|ts| (chrono::Utc::now().timestamp_millis() - ts).max(0) as f64 / 1e3)
        .unwrap_or_default();
    for (outcome, n) in
        [("applied", counts.applied), ("duplicate", counts.duplicates), ("rejected", counts.rejected)]
    {
        metrics.messages.get_or_create(&OutcomeLabel { outcome }).inc_by(u64::from(n));
    }
    metrics.epochs_committed.inc();
    metrics.commit_seconds.observe(elapsed.as_secs_f64());
    metrics.lag_seconds.set(lag_s);
    metrics.last_committed_epoch.set(batch.epoch as i64);
    (counts, lag_s)
}

/// Logs a commit's crossings (a line per commit that has any) and keeps the
/// count of low products.
fn log_alerts(epoch: u64, alerts: &[postgres::StockAlert], low_products: &mut i64) {
    if alerts.is_empty() {
        return;
    }
    let low: Vec<&str> = alerts.iter().filter(|a| a.kind == "low").map(|a| a.product_id.as_str()).collect();
    let recovered = alerts.len() - low.len();
    *low_products += low.len() as i64 - recovered as i64;
    let first: Vec<&str> = low.iter().take(5).copied().collect();
    tracing::info!(
        epoch,
        low = low.len(),
        recovered,
        first_low = %first.join(","),
        low_total = *low_products,
        "stock alerts raised"
    );
}
