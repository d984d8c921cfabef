//! The operator commands (contract 5.5): `reconcile`, `stock --as-of`,
//! `dlq redrive`, and `archive` (issue 14). The definitions live in the
//! database (migrations V5 and V7) and `sinks::postgres`; this module
//! prints and exits.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::cli::{ArchiveArgs, GlobalArgs, RedriveArgs, StockArgs};
use crate::commands::{kafka_config, reach_kafka};

/// Exit status of `reconcile` when any difference was found.
const DIFFERENCES: u8 = 3;

pub async fn reconcile(g: &GlobalArgs) -> Result<ExitCode> {
    let client = sinks::postgres::connect(&g.database_url).await?;
    let started = std::time::Instant::now();
    let differences =
        sinks::postgres::reconcile(&client).await.context("reconcile (has `stockflow migrate` run?)")?;
    let secs = started.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    if differences.is_empty() {
        let products: i64 = client
            .query_one("SELECT count(*) FROM inventory", &[])
            .await
            .context("count inventory rows")?
            .get(0);
        writeln!(
            out,
            "reconcile: all hold ({products} inventory rows, sales and stock history checked in {secs:.1} s)"
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    // Only the differences on stdout, one per line; the summary on stderr.
    for d in &differences {
        writeln!(out, "{} {}: {}, expected {}", d.table, d.key, d.actual, d.expected)?;
    }
    out.flush()?;
    eprintln!("reconcile: {} differences found in {secs:.1} s", differences.len());
    Ok(ExitCode::from(DIFFERENCES))
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a
/// line break.
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

pub async fn stock(g: &GlobalArgs, args: &StockArgs) -> Result<ExitCode> {
    let client = sinks::postgres::connect(&g.database_url).await?;
    let (t, processed) = match (args.as_of, args.processed_as_of) {
        (Some(t), _) => (t, false),
        (None, Some(t)) => (t, true),
        (None, None) => anyhow::bail!("give --as-of T or --processed-as-of T"),
    };
    let rows = match sinks::postgres::stock_as_of(&client, t, processed, args.product.as_deref()).await {
        Ok(rows) => rows,
        // An instant the held history cannot answer exactly: the
        // database's own sentence says why.
        Err(e) if e.db_code() == Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE) => {
            anyhow::bail!("stock as of: {}", e.db_message().unwrap_or_default())
        }
        Err(e) => return Err(e).context("stock as of (has `stockflow migrate` run?)"),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(out, "product_id,quantity_on_hand")?;
    for (p, q) in rows {
        writeln!(out, "{},{q}", csv_field(&p))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `stockflow archive`: writes the old days to files and drops them, then
/// checks every file of the directory's manifest; or (`--verify`) only checks.
pub async fn archive(g: &GlobalArgs, args: &ArchiveArgs) -> Result<()> {
    if let Some(dir) = &args.verify {
        let files = sinks::postgres::verify_archive(dir)?;
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        println!(
            "archive: {} files, {rows} rows, every checksum and row count as the manifest says",
            files.len()
        );
        return Ok(());
    }
    let (Some(before), Some(dir)) = (args.before, &args.to) else {
        anyhow::bail!("give --before DATE --to DIR, or --verify DIR");
    };
    let mut client = sinks::postgres::connect(&g.database_url).await?;
    let started = std::time::Instant::now();
    let report = sinks::postgres::archive(&mut client, before, dir).await.context("archive")?;
    let verified = sinks::postgres::verify_archive(dir)?;
    let rows = |t: &str| report.files.iter().filter(|f| f.table == t).map(|f| f.rows).sum::<u64>();
    let days = report.files.iter().filter(|f| f.table == "events_log").count();
    println!(
        "archive: {days} days archived to {} ({} events_log rows, {} orders rows) in {:.1} s; {} files verified; \
         manifest.json sha256 {}; history held from {}",
        dir.display(),
        rows("events_log"),
        rows("orders"),
        started.elapsed().as_secs_f64(),
        verified.len(),
        report.manifest_sha256,
        report.held_from.map_or_else(|| "the beginning".to_string(), |t| t.to_rfc3339()),
    );
    Ok(())
}

pub async fn redrive(g: &GlobalArgs, args: &RedriveArgs) -> Result<ExitCode> {
    let client = sinks::postgres::connect(&g.database_url).await?;
    let code = args.code.as_str();
    let candidates = sinks::postgres::redrive_candidates(&client, code, args.since)
        .await
        .context("find the messages to redrive (has `stockflow migrate` run?)")?;
    if args.dry_run {
        println!("redrive: {} messages would be re-sent", candidates.len());
        return Ok(ExitCode::SUCCESS);
    }
    if candidates.is_empty() {
        println!("redrive: 0 messages re-sent");
        return Ok(ExitCode::SUCCESS);
    }
    let mut config = kafka_config(g);
    reach_kafka(&config).await?;
    config.set("enable.idempotence", "true").set("message.timeout.ms", "30000");
    let producer: FutureProducer = config.create().context("cannot create the Kafka producer")?;
    let mut sent = Vec::with_capacity(candidates.len());
    let mut failed = None;
    // Chunks well inside librdkafka's queue: each is enqueued at once, then
    // its deliveries are awaited.
    for chunk in candidates.chunks(10_000) {
        let mut pending = Vec::with_capacity(chunk.len());
        for c in chunk {
            let mut record = FutureRecord::<[u8], [u8]>::to(&c.topic);
            if let Some(k) = &c.key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &c.value {
                record = record.payload(v.as_slice());
            }
            match producer.send_result(record) {
                Ok(f) => pending.push((c, f)),
                Err((e, _)) => failed = Some(format!("{}: {e}", c.topic)),
            }
        }
        for (c, f) in pending {
            match f.await {
                Ok(Ok(d)) => sent.push((c.log_id, c.topic.clone(), d.partition, d.offset)),
                Ok(Err((e, _))) => failed = Some(format!("{}: {e}", c.topic)),
                Err(_) => failed = Some(format!("{}: the producer went away", c.topic)),
            }
        }
    }
    // Record what went out even when some sends failed, so that a second
    // redrive does not send those again while they are on their way.
    sinks::postgres::record_redrives(&client, code, &sent).await.context("record the redrive")?;
    if let Some(e) = failed {
        anyhow::bail!(
            "redrive: {} of {} messages re-sent; the others could not be sent ({e}); run it again",
            sent.len(),
            candidates.len()
        );
    }
    println!("redrive: {} messages re-sent", sent.len());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("SKU-1"), "SKU-1");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
