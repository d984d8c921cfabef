//! History at scale (migration V7): the day partitions of `events_log` and
//! `orders`, and `stockflow archive`, which writes old days to compressed
//! files and drops them.
//!
//! Archiving one day is one transaction: lock the day's two partitions
//! against writers, `COPY` them out to `.csv.gz` files (written to a
//! `.part` name, read back, row count and SHA-256 checked, then renamed and
//! synced), add the day's applied events to `archived_rollup` (the sums
//! reconcile and stock-as-of need, sales told by `event_kinds`: a day with
//! an applied event_type it has no row for is refused before anything is
//! written), record the files in
//! `archived_partitions`, detach and drop both partitions, commit. A crash
//! anywhere leaves either the day held (its files at most half written, and
//! rewritten by the next run) or the day archived with its files on disk.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, TimeDelta};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio_postgres::{Client, GenericClient, Transaction};

use crate::SinkError;

/// How many days ahead of today the partitions are made (at start and when
/// commits reach a new day), so that a commit never finds its day missing.
pub const PARTITION_DAYS_AHEAD: i32 = 7;

/// Makes the partitions from today (the database's UTC date) to
/// [`PARTITION_DAYS_AHEAD`] days after it; returns the last day made sure of.
pub async fn ensure_partitions(client: &Client) -> Result<NaiveDate, SinkError> {
    let row = client
        .query_one(
            "WITH d AS (SELECT (now() AT TIME ZONE 'UTC')::date AS today) \
             SELECT stockflow_ensure_partitions(today, today + $1::int), today + $1::int FROM d",
            &[&PARTITION_DAYS_AHEAD],
        )
        .await
        .map_err(SinkError::pg("make the coming days' partitions (stockflow_ensure_partitions)"))?;
    Ok(row.get(1))
}

/// One archived partition, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchivedFile {
    /// `events_log` or `orders`.
    pub table: String,
    /// The UTC day of `processed_at` the partition held.
    pub day: NaiveDate,
    /// The file, relative to the archive's directory.
    pub file: String,
    /// Data rows in the file (the CSV header not counted).
    pub rows: u64,
    /// SHA-256 of the file's bytes, lower-case hex.
    pub sha256: String,
}

/// What one `stockflow archive` run did.
#[derive(Debug, Clone)]
pub struct ArchiveReport {
    /// The partitions archived by this run, oldest first.
    pub files: Vec<ArchivedFile>,
    /// The first instant of commit time still held afterwards (`None`:
    /// nothing was ever archived).
    pub held_from: Option<chrono::DateTime<chrono::Utc>>,
    /// SHA-256 of the `manifest.json` written (every file in the directory).
    pub manifest_sha256: String,
}

/// The tables archived, each day's partitions in this order.
const TABLES: [&str; 2] = ["events_log", "orders"];

/// Archives every day partition before `before` (a UTC date, at most the
/// database's today: today's partition is still written) into `dir`, then
/// writes `dir/manifest.json` listing every file archived there. Days
/// archived by an earlier run are left alone; a run cut short is finished by
/// running it again.
pub async fn archive(client: &mut Client, before: NaiveDate, dir: &Path) -> Result<ArchiveReport, SinkError> {
    let today: NaiveDate = client
        .query_one("SELECT (now() AT TIME ZONE 'UTC')::date", &[])
        .await
        .map_err(SinkError::pg("read the database's date"))?
        .get(0);
    if before > today {
        return Err(SinkError::Config(format!(
            "--before {before} is after today ({today}, UTC): a day still being written cannot be archived"
        )));
    }
    let days: Vec<NaiveDate> = client
        .query(
            "SELECT DISTINCT to_date(substring(c.relname FROM '_(\\d{8})$'), 'YYYYMMDD') AS day \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'events_log'::regclass ORDER BY 1",
            &[],
        )
        .await
        .map_err(SinkError::pg("list the events_log partitions"))?
        .iter()
        .map(|r| r.get::<_, NaiveDate>(0))
        .filter(|d| *d < before)
        .collect();
    for table in TABLES {
        std::fs::create_dir_all(dir.join(table))
            .map_err(|e| SinkError::Config(format!("cannot create {}: {e}", dir.join(table).display())))?;
    }
    // The rollup tells sales by event_kinds: a day with an applied event of
    // a kind it has no row for could not be summed rightly.
    let held_end = before.and_time(chrono::NaiveTime::MIN).and_utc();
    refuse_unknown_kinds(&*client, "events_log", Some(held_end), "nothing was archived").await?;
    let location = dir.display().to_string();
    let mut files = Vec::new();
    for day in days {
        files.extend(archive_day(client, day, dir, &location).await?);
    }
    let all: Vec<ArchivedFile> = client
        .query(
            "SELECT table_name, day, file, rows, sha256 FROM archived_partitions \
             WHERE location = $1 ORDER BY day, table_name",
            &[&location],
        )
        .await
        .map_err(SinkError::pg("list the archived partitions"))?
        .iter()
        .map(|r| ArchivedFile {
            table: r.get(0),
            day: r.get(1),
            file: r.get(2),
            rows: r.get::<_, i64>(3) as u64,
            sha256: r.get(4),
        })
        .collect();
    let held_from = client
        .query_one("SELECT history_held_from()", &[])
        .await
        .map_err(SinkError::pg("read history_held_from()"))?
        .get(0);
    let manifest = serde_json::to_vec_pretty(&serde_json::json!({
        "format": "stockflow-archive/1",
        "files_are": "CSV with a header row (PostgreSQL COPY ... (FORMAT csv, HEADER)), gzip-compressed",
        "held_from": held_from,
        "files": all,
    }))
    .map_err(|e| SinkError::Config(format!("cannot encode the manifest: {e}")))?;
    let manifest_sha256 = hex(&Sha256::digest(&manifest));
    write_atomically(&dir.join("manifest.json"), &manifest)?;
    Ok(ArchiveReport { files, held_from, manifest_sha256 })
}

/// Reads an archive's `manifest.json` and checks every file it lists: its
/// SHA-256 and its number of rows. Returns the files, or the first
/// mismatch as an error.
pub fn verify_archive(dir: &Path) -> Result<Vec<ArchivedFile>, SinkError> {
    let path = dir.join("manifest.json");
    let text = std::fs::read(&path)
        .map_err(|e| SinkError::Config(format!("cannot read {}: {e}", path.display())))?;
    #[derive(serde::Deserialize)]
    struct Manifest {
        files: Vec<ArchivedFile>,
    }
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
        SinkError::Config(format!("{} is not a stockflow archive manifest: {e}", path.display()))
    })?;
    for f in &manifest.files {
        let (rows, sha) = read_back(&dir.join(&f.file))?;
        if sha != f.sha256 || rows != f.rows {
            return Err(SinkError::Config(format!(
                "{}: the manifest says {} rows, SHA-256 {}; the file has {rows} rows, SHA-256 {sha}",
                f.file, f.rows, f.sha256
            )));
        }
    }
    Ok(manifest.files)
}

async fn archive_day(
    client: &mut Client,
    day: NaiveDate,
    dir: &Path,
    location: &str,
) -> Result<Vec<ArchivedFile>, SinkError> {
    let tag = day.format("%Y%m%d").to_string();
    let tx = client.transaction().await.map_err(SinkError::pg("begin"))?;
    // Writers of these two partitions wait (the processor writes today's
    // only); the snapshot copied is the one dropped.
    let partitions: Vec<String> = TABLES.iter().map(|t| format!("{t}_{tag}")).collect();
    for p in &partitions {
        let exists: bool = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[p])
            .await
            .map_err(SinkError::pg("look up a partition"))?
            .get(0);
        if !exists {
            return Err(SinkError::Config(format!("partition {p} is missing: cannot archive day {day}")));
        }
        tx.batch_execute(&format!("LOCK TABLE {p} IN SHARE MODE"))
            .await
            .map_err(SinkError::pg("lock a partition to archive"))?;
    }
    // The rollup tells sales by event_kinds (checked for every day at the
    // start; again here, under the lock, in case a row went meanwhile).
    refuse_unknown_kinds(&tx, &format!("events_log_{tag}"), None, &format!("day {day} was not archived"))
        .await?;
    let mut files = Vec::new();
    for (table, partition) in TABLES.iter().zip(&partitions) {
        let rel = format!("{table}/{partition}.csv.gz");
        let path = dir.join(&rel);
        let expected: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {partition}"), &[])
            .await
            .map_err(SinkError::pg("count a partition's rows"))?
            .get(0);
        let sha256 = copy_out(&tx, partition, &path).await?;
        let (rows, read_sha) = read_back(&part_path(&path))?;
        if rows != expected as u64 || read_sha != sha256 {
            return Err(SinkError::Config(format!(
                "{}: wrote {expected} rows (SHA-256 {sha256}) but read back {rows} rows (SHA-256 {read_sha}); \
                 nothing was dropped",
                path.display()
            )));
        }
        std::fs::rename(part_path(&path), &path)
            .map_err(|e| SinkError::Config(format!("cannot rename {}: {e}", path.display())))?;
        sync_dir(path.parent().unwrap_or(dir))?;
        files.push(ArchivedFile { table: table.to_string(), day, file: rel, rows, sha256 });
    }
    // The day's applied events, summed at the grain reconcile and
    // stock-as-of need (orders of the same commit are in the same day);
    // kind is the sale source from event_kinds, 'none' for other events
    // (every applied event_type has a row: checked above, under the lock).
    tx.execute(
        &format!(
            "INSERT INTO archived_rollup AS a (product_id, kind, ev_hour, commit_hour, delta, events, revenue, \
                                               no_order, first_occurred_at, last_occurred_at) \
             SELECT e.product_id, coalesce(k.sale_source, 'none'), \
                    date_trunc('hour', e.occurred_at, 'UTC'), date_trunc('hour', e.processed_at, 'UTC'), \
                    sum(e.delta), count(*), sum(-e.delta * o.unit_price), \
                    count(*) FILTER (WHERE k.sale_source IS NOT NULL AND o.event_id IS NULL), \
                    min(e.occurred_at), max(e.occurred_at) \
             FROM events_log_{tag} e \
             LEFT JOIN event_kinds k ON k.event_type = e.event_type \
             LEFT JOIN orders_{tag} o ON o.event_id = e.event_id AND k.sale_source IS NOT NULL \
             WHERE e.status = 'applied' GROUP BY 1, 2, 3, 4 \
             ON CONFLICT (product_id, kind, ev_hour, commit_hour) DO UPDATE SET \
                delta = a.delta + EXCLUDED.delta, events = a.events + EXCLUDED.events, \
                revenue = CASE WHEN a.revenue IS NULL AND EXCLUDED.revenue IS NULL THEN NULL \
                               ELSE coalesce(a.revenue, 0) + coalesce(EXCLUDED.revenue, 0) END, \
                no_order = a.no_order + EXCLUDED.no_order, \
                first_occurred_at = least(a.first_occurred_at, EXCLUDED.first_occurred_at), \
                last_occurred_at = greatest(a.last_occurred_at, EXCLUDED.last_occurred_at)"
        ),
        &[],
    )
    .await
    .map_err(SinkError::pg("roll the archived day into archived_rollup"))?;
    for f in &files {
        tx.execute(
            "INSERT INTO archived_partitions (table_name, day, file, rows, sha256, location) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&f.table, &f.day, &f.file, &(f.rows as i64), &f.sha256, &location],
        )
        .await
        .map_err(SinkError::pg("record an archived partition"))?;
    }
    // The epochs of the day go too: nothing reads them once their rows are
    // gone (stock-as-of in commit time answers only for held instants).
    let (lo, hi) = (
        day.and_time(chrono::NaiveTime::MIN).and_utc(),
        (day + TimeDelta::days(1)).and_time(chrono::NaiveTime::MIN).and_utc(),
    );
    tx.execute("DELETE FROM epochs WHERE started_at >= $1 AND started_at < $2", &[&lo, &hi])
        .await
        .map_err(SinkError::pg("drop the archived day's epochs"))?;
    for (table, partition) in TABLES.iter().zip(&partitions) {
        tx.batch_execute(&format!(
            "ALTER TABLE {table} DETACH PARTITION {partition}; DROP TABLE {partition}"
        ))
        .await
        .map_err(SinkError::pg("detach and drop an archived partition"))?;
    }
    tx.commit().await.map_err(SinkError::pg("commit the archived day"))?;
    tracing::info!(%day, events_log_rows = files[0].rows, orders_rows = files[1].rows, "day archived");
    Ok(files)
}

/// Fails, with one line naming them, when applied events of `relation`
/// (committed before `before`, if given) have an event_type that
/// `event_kinds` has no row for; `outcome` says what was left undone.
async fn refuse_unknown_kinds(
    c: &impl GenericClient,
    relation: &str,
    before: Option<chrono::DateTime<chrono::Utc>>,
    outcome: &str,
) -> Result<(), SinkError> {
    let rows = c
        .query(
            &format!(
                "SELECT e.event_type, min((e.processed_at AT TIME ZONE 'UTC')::date) FROM {relation} e \
                 LEFT JOIN event_kinds k ON k.event_type = e.event_type \
                 WHERE e.status = 'applied' AND k.event_type IS NULL \
                   AND ($1::timestamptz IS NULL OR e.processed_at < $1) \
                 GROUP BY 1 ORDER BY 1"
            ),
            &[&before],
        )
        .await
        .map_err(SinkError::pg("look up the archived events' types in event_kinds"))?;
    if rows.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = rows
        .iter()
        .map(|r| {
            let t: Option<String> = r.get(0);
            let first: NaiveDate = r.get(1);
            format!("{} (first committed on {first})", t.map_or("NULL".into(), |t| format!("`{t}`")))
        })
        .collect();
    Err(SinkError::Config(format!(
        "cannot archive: applied events of event_type {} have no event_kinds row (run `stockflow migrate` \
         with the binary that wrote them); {outcome}",
        named.join(", ")
    )))
}

fn part_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".part");
    PathBuf::from(p)
}

/// `COPY` a partition out into `path`.part, gzip-compressed and synced;
/// returns the SHA-256 of the bytes written.
async fn copy_out(tx: &Transaction<'_>, partition: &str, path: &Path) -> Result<String, SinkError> {
    // Log order for the log, the key for orders: a stable file for a stable day.
    let order = if partition.starts_with("events_log") { "log_id" } else { "event_id" };
    let part = part_path(path);
    let file = std::fs::File::create(&part)
        .map_err(|e| SinkError::Config(format!("cannot create {}: {e}", part.display())))?;
    let io = |e: std::io::Error| SinkError::Config(format!("cannot write {}: {e}", part.display()));
    let mut out = GzEncoder::new(
        HashingWriter { inner: BufWriter::new(file), sha: Sha256::new() },
        Compression::fast(),
    );
    let stream = tx
        .copy_out(&format!(
            "COPY (SELECT * FROM {partition} ORDER BY {order}) TO STDOUT (FORMAT csv, HEADER)"
        ))
        .await
        .map_err(SinkError::pg("copy a partition out"))?;
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(SinkError::pg("copy a partition out"))?;
        out.write_all(&chunk).map_err(io)?;
    }
    let HashingWriter { inner, sha } = out.finish().map_err(io)?;
    let file = inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(hex(&sha.finalize()))
}

/// Reads a written file back: its number of CSV data rows (gunzipped,
/// records ended by a newline outside quotes, the header not counted) and
/// the SHA-256 of its bytes.
fn read_back(path: &Path) -> Result<(u64, String), SinkError> {
    let io = |e: std::io::Error| SinkError::Config(format!("cannot read {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(io)?;
    let mut reader = MultiGzDecoder::new(HashingReader { inner: BufReader::new(file), sha: Sha256::new() });
    let mut buf = vec![0u8; 1 << 16];
    let (mut records, mut quoted) = (0u64, false);
    loop {
        let n = reader.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            match b {
                b'"' => quoted = !quoted,
                b'\n' if !quoted => records += 1,
                _ => {}
            }
        }
    }
    let HashingReader { mut inner, sha } = reader.into_inner();
    // Anything after the gzip stream would be hashed too.
    let mut rest = Vec::new();
    inner.read_to_end(&mut rest).map_err(io)?;
    let mut sha = sha;
    sha.update(&rest);
    Ok((records.saturating_sub(1), hex(&sha.finalize())))
}

struct HashingWriter<W> {
    inner: W,
    sha: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R> {
    inner: R,
    sha: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    let part = part_path(path);
    let io = |e: std::io::Error| SinkError::Config(format!("cannot write {}: {e}", path.display()));
    let mut f = std::fs::File::create(&part).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&part, path).map_err(io)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SinkError::Config(format!("cannot sync {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_back_counts_csv_records_not_lines() {
        let dir = std::env::temp_dir().join(format!("stockflow-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.csv.gz");
        let csv = b"a,b\n1,\"x\ny\"\n2,\"say \"\"hi\"\"\n\"\n3,\n";
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(csv).unwrap();
        let bytes = enc.finish().unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let (rows, sha) = read_back(&path).unwrap();
        assert_eq!(rows, 3);
        assert_eq!(sha, hex(&Sha256::digest(&bytes)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
