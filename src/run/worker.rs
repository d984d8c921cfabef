//! A timely worker's loop: read its share of the input partitions, stamp
//! epochs, feed reference data, keep to the backpressure, exit when idle.

use super::*;

/// How often an idle worker asks the broker whether it has read to the end
/// of its partitions (`--exit-when-idle`).
const END_CHECK: Duration = Duration::from_millis(250);

pub(super) fn run_worker(
    worker: &mut timely::worker::Worker,
    setup: WorkerSetup,
    shared: Arc<Shared>,
    handle: Handle,
    sender: Option<SyncSender<EpochBatch>>,
) -> Result<(), String> {
    let index = worker.index();
    let peers = worker.peers();
    let args = setup.args;
    let my_partitions = share(setup.partitions.clone(), index, peers);
    let mut intake = Intake::new(&setup.kafka, &my_partitions).map_err(|e| format!("Kafka consumer: {e}"))?;
    let metrics = shared.metrics.clone();
    let stats = Arc::new(GraphStats::default());

    let preload = setup.preload_shares.lock().ok().and_then(|mut s| s.remove(&index)).unwrap_or_default();
    let lookup = PgLookup {
        db: BlockingClient::new(handle.clone(), setup.database_url.clone(), shared.clone()),
        held_from: None,
    };
    let mut raw = InputHandle::<u64, _>::new();
    let mut refs = InputHandle::<u64, _>::new();
    let probe = ProbeHandle::new();
    let committer_gone = Arc::new(AtomicBool::new(false));
    let sink_gone = committer_gone.clone();
    let config = GraphConfig {
        dedup_horizon: args.dedup_horizon,
        dedup_max_ids: args.dedup_max_ids,
        committed_epoch: shared.committed_epoch.clone(),
        lookup: Box::new(lookup),
        preload,
        preload_floor: setup.preload_floor,
    };
    let graph_stats = stats.clone();
    worker.dataflow::<u64, _, _>(|scope| {
        let records = graph::build(raw.to_stream(scope), refs.to_stream(scope), config, graph_stats);
        let records = records.probe_with(&probe);
        graph::commit_sink(records, move |batch| {
            if let Some(tx) = &sender
                && tx.send(batch).is_err()
            {
                sink_gone.store(true, Ordering::SeqCst);
            }
        });
    });

    let mut epoch = setup.first_epoch;
    raw.advance_to(epoch);
    refs.advance_to(epoch);
    let mut reference = setup.reference.clone();
    if index == 0 {
        for (p, level) in &reference.products {
            refs.send(RefUpdate::ProductUpsert { product_id: p.clone(), reorder_level: *level });
        }
        for s in &reference.suppliers {
            refs.send(RefUpdate::SupplierAdded(s.clone()));
        }
    }
    let mut ref_client = BlockingClient::new(handle, setup.database_url.clone(), shared.clone());
    let mut last_ref_refresh = Instant::now();
    let mut last_topic_check = Instant::now() - TOPIC_CHECK_EVERY;
    let mut topic_suspect_until: Option<Instant> = None;
    let mut read_in_epoch = 0usize;
    let mut last_data_epoch = 0u64;
    let mut buf = Vec::with_capacity(4096);
    let mut idle_reads = 0u32;
    let mut input_failing = false;
    let mut last_lag_check = Instant::now().checked_sub(Duration::from_secs(5)).unwrap_or_else(Instant::now);
    let mut last_end_check = Instant::now();
    tracing::debug!(worker = index, partitions = my_partitions.len(), "worker started");

    loop {
        if shared.shutdown.load(Ordering::Relaxed) || committer_gone.load(Ordering::Relaxed) {
            break;
        }
        if let Some(failure) = stats.failure() {
            return validate_failed(failure);
        }
        let slot = now_slot(args.epoch_ms);
        if slot > epoch {
            epoch = slot;
            raw.advance_to(epoch);
            refs.advance_to(epoch);
            read_in_epoch = 0;
        }
        if last_ref_refresh.elapsed() >= args.reference_refresh {
            last_ref_refresh = Instant::now();
            if !args.commits_here {
                // Other processes learn commit progress from the database, so
                // that their dedup memory can let go of committed late ids.
                if let Ok(e) =
                    ref_client.with("postgres", |h, c| h.block_on(postgres::last_committed_epoch(c)))
                {
                    shared.committed_epoch.fetch_max(e, Ordering::AcqRel);
                }
            }
            if index == 0 {
                match ref_client.with("postgres", |h, c| h.block_on(postgres::load_reference(c))) {
                    Ok(fresh) => {
                        for u in reference_changes(&reference, &fresh) {
                            refs.send(u);
                        }
                        reference = fresh;
                    }
                    Err(e) => tracing::error!(error = %e, "cannot refresh reference data"),
                }
            }
        }
        // Backpressure: pause reading while too many epochs wait for their commit.
        let committed = shared.committed_epoch.load(Ordering::Acquire);
        let backlog = if args.commits_here {
            last_data_epoch.saturating_sub(committed) > MAX_EPOCHS_IN_FLIGHT * 2 * args.epoch_ms
        } else {
            probe.less_than(&epoch.saturating_sub(MAX_EPOCHS_IN_FLIGHT * args.epoch_ms))
        };
        let budget = args.max_epoch_messages.saturating_sub(read_in_epoch).min(4096);
        if backlog || budget == 0 {
            worker.step_or_park(Some(Duration::from_millis(5)));
            continue;
        }
        // `Worker::step` reports whether dataflows exist, not whether there
        // was work: park up to 1 ms when the last read found nothing, so an
        // idle processor sleeps instead of spinning.
        worker.step_or_park(Some(if idle_reads > 0 { Duration::from_millis(1) } else { Duration::ZERO }));
        let report = intake.read(budget, Duration::ZERO, &mut buf);
        idle_reads = if buf.is_empty() { idle_reads + 1 } else { 0 };
        if report.errors > 0 {
            metrics.consumer_errors.inc_by(report.errors as u64);
        }
        // An outage is waited for (the client reconnects by itself); a
        // refusal (credentials, ACLs) would repeat forever.
        if let Some(e) =
            report.failures.iter().find(|e| sinks::error::kafka_failure(e) == sinks::Failure::Permanent)
        {
            return Err(format!("Kafka refused the processor's consumer: {e}"));
        }
        // "Unknown topic or partition" is what a topic still being created
        // says too: ask the cluster (at most every 2 s) whether an input
        // topic is really gone. A deleted input topic ends the run: its
        // offsets are stored and a new topic of the same name is refused at
        // the next start, so waiting would wait forever.
        // librdkafka reports the error a few times, then less often: keep
        // asking for a while after the last one (the first answer may still
        // show a topic whose deletion is under way).
        if report.failures.iter().any(is_unknown_topic) {
            topic_suspect_until = Some(Instant::now() + TOPIC_SUSPECT_FOR);
        }
        if topic_suspect_until.is_some_and(|until| Instant::now() < until)
            && last_topic_check.elapsed() >= TOPIC_CHECK_EVERY
        {
            last_topic_check = Instant::now();
            let missing = intake.missing_topics();
            tracing::debug!(?missing, "input topics the cluster does not know");
            if !missing.is_empty() {
                return Err(format!("input topic {} no longer exists (deleted?)", missing.join(", ")));
            }
        }
        // The broker is down or unreachable: say so in the metrics (the
        // intake logs the start and the end of the outage once).
        let failing = intake.failing();
        if failing != input_failing {
            input_failing = failing;
            metrics.waiting.get_or_create(&WhatLabel { what: "kafka" }).set(i64::from(failing));
        }
        if !buf.is_empty() {
            if let Some(ts) = buf.last().and_then(|m| m.timestamp_ms) {
                let delay = (chrono::Utc::now().timestamp_millis() - ts).max(0) as f64 / 1e3;
                metrics.read_delay_seconds.get_or_create(&WorkerLabel { worker: index as u32 }).set(delay);
            }
            read_in_epoch += buf.len();
            last_data_epoch = epoch;
            for m in buf.drain(..) {
                raw.send(m);
            }
        }
        metrics.dedup_ids.set(stats.dedup_ids.load(Ordering::Relaxed) as i64);
        let beyond = stats.dedup_beyond_history.load(Ordering::Relaxed);
        let counted = metrics.dedup_beyond_history.get();
        if beyond > counted {
            metrics.dedup_beyond_history.inc_by(beyond - counted);
            tracing::warn!(
                worker = index,
                events = beyond - counted,
                "applied events whose ids are not in the held history and which occurred before it: each \
                 might repeat an archived event (see ARCHITECTURE.md, History at scale)"
            );
        }
        if last_lag_check.elapsed() >= Duration::from_secs(1) {
            last_lag_check = Instant::now();
            metrics
                .consumer_lag_messages
                .get_or_create(&WorkerLabel { worker: index as u32 })
                .set(intake.lag());
        }
        // The end-of-input check asks the broker for every partition's end
        // (one round trip each): at most every END_CHECK, not on every turn
        // of a quiet loop.
        if let Some(idle) = args.exit_when_idle
            && intake.quiet_for() >= idle
            && (!args.commits_here || shared.committed_epoch.load(Ordering::Acquire) >= last_data_epoch)
            && !probe.less_than(&epoch)
            && last_end_check.elapsed() >= END_CHECK
            && {
                last_end_check = Instant::now();
                intake.at_end()
            }
        {
            tracing::info!(worker = index, "inputs idle: closing");
            break;
        }
    }
    drop(raw);
    drop(refs);
    // Drain the open epochs, unless they cannot be committed: the committer
    // ended, another worker failed, or `Validate` holds an epoch back (its
    // lookup failed or was stopped during an outage); those epochs are read
    // again on the next start.
    while !probe.with_frontier(|f| f.is_empty()) {
        if committer_gone.load(Ordering::Relaxed)
            || shared.committer_failed.load(Ordering::Relaxed)
            || shared.worker_failed.load(Ordering::Relaxed)
        {
            break;
        }
        if let Some(failure) = stats.failure() {
            return validate_failed(failure);
        }
        worker.step_or_park(Some(Duration::from_millis(10)));
    }
    if committer_gone.load(Ordering::Relaxed) || shared.committer_failed.load(Ordering::Relaxed) {
        return Err("the committer stopped".into());
    }
    Ok(())
}

/// How often, at most, the worker asks whether an input topic is gone.
const TOPIC_CHECK_EVERY: Duration = Duration::from_secs(2);

/// How long after the last "unknown topic or partition" it keeps asking.
const TOPIC_SUSPECT_FOR: Duration = Duration::from_secs(60);

/// Whether a read error says a topic or partition is unknown (deleted, or
/// not created yet).
fn is_unknown_topic(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(e.rdkafka_error_code(), Some(C::UnknownTopicOrPartition | C::UnknownPartition | C::UnknownTopic))
}

/// The worker's answer when `Validate` holds an epoch back: a lookup stopped
/// by a signal during an outage ends the worker quietly (the process is
/// stopping); any other failure ends the run with its message.
fn validate_failed(failure: LookupError) -> Result<(), String> {
    match failure {
        LookupError::Interrupted => Ok(()),
        LookupError::Failed(e) => Err(e),
    }
}

/// Updates that turn reference data `old` into `new`.
fn reference_changes(old: &Reference, new: &Reference) -> Vec<RefUpdate> {
    let mut v = Vec::new();
    for (p, level) in &old.products {
        if new.products.get(p) != Some(level) {
            v.push(RefUpdate::ProductRemoved { product_id: p.clone(), reorder_level: *level });
        }
    }
    for (p, level) in &new.products {
        if old.products.get(p) != Some(level) {
            v.push(RefUpdate::ProductUpsert { product_id: p.clone(), reorder_level: *level });
        }
    }
    let old_s: &HashSet<String> = &old.suppliers;
    v.extend(old_s.difference(&new.suppliers).map(|s| RefUpdate::SupplierRemoved(s.clone())));
    v.extend(new.suppliers.difference(old_s).map(|s| RefUpdate::SupplierAdded(s.clone())));
    v
}
