"""Build, store and write one day's stockflow report.

Shared by the DAGs ``daily_report`` and ``reissue_stale_reports``. The figures
come from the stream-maintained ``sales_daily`` table (never a scan of
``orders``) and from the ``low_stock`` view; each run also runs the
reconciliation (``reconcile_differences()``, contract 5.5/5.7) and stores its
outcome in ``reports.reconciled``. See shared/contract section 4 for the
output format.

Everything here works with a plain DB-API connection from psycopg (3) or
psycopg2, which is what ``PostgresHook.get_conn()`` returns.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

POSTGRES_CONN_ID = "stockflow_postgres"
TOP_N = 10
# Written in this order; summary.json last, so that once it is new the rest is too.
REPORT_FILES = ("top_sellers.csv", "low_stock.csv", "report.html", "summary.json")
TOP_SELLERS_HEADER = ("rank", "product_id", "name", "units", "revenue")
LOW_STOCK_HEADER = ("product_id", "name", "quantity_on_hand", "reorder_level")

# Serialises generations of the same day (daily run, reissue, manual re-run):
# pg_advisory_lock(LOCK_CLASS, day - 2000-01-01).
_LOCK_SQL_KEY = "hashtext('stockflow.reports')"
_EPOCH = date(2000, 1, 1)
_CENT = Decimal("0.01")

SALES_SQL = """
SELECT COALESCE(sum(units), 0)       AS total_units,
       COALESCE(sum(revenue), 0)     AS total_revenue,
       COALESCE(sum(order_count), 0) AS order_count,
       max(updated_at)               AS sales_as_of
FROM sales_daily
WHERE day = %s
"""

TOP_SELLERS_SQL = """
SELECT s.product_id, p.name, sum(s.units) AS units, sum(s.revenue) AS revenue
FROM sales_daily s
JOIN products p ON p.product_id = s.product_id
WHERE s.day = %s
GROUP BY s.product_id, p.name
HAVING sum(s.units) > 0
ORDER BY sum(s.units) DESC, s.product_id COLLATE "C" ASC
LIMIT %s
"""

# The low_stock view holds the one definition of "low" (stock_is_low(), as
# the processor's alerts use it); a product without an inventory row has 0
# on hand (contract section 1).
LOW_STOCK_SQL = """
SELECT product_id, name, quantity_on_hand, reorder_level
FROM low_stock
ORDER BY product_id COLLATE "C" ASC
"""

# The reconciliation of contract 5.5, the same SQL function `stockflow
# reconcile` calls: one row per difference, none when all hold.
RECONCILE_SQL = "SELECT table_name, key, actual, expected FROM reconcile_differences()"

EXISTING_SQL = """
SELECT total_units, total_revenue, order_count, top_sellers, low_stock,
       generated_at, revision, sales_as_of, reconciled
FROM reports
WHERE report_date = %s
"""

INSERT_SQL = """
INSERT INTO reports (report_date, total_units, total_revenue, order_count,
                     top_sellers, low_stock, generated_at, revision, sales_as_of, reconciled)
VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, now(), 1, %s, %s)
RETURNING generated_at, revision
"""

# A new revision: the visible content changed.
REVISE_SQL = """
UPDATE reports
SET total_units = %s, total_revenue = %s, order_count = %s,
    top_sellers = %s::jsonb, low_stock = %s::jsonb,
    generated_at = now(), revision = revision + 1, sales_as_of = %s, reconciled = %s
WHERE report_date = %s
RETURNING generated_at, revision
"""

# Same content: remember how far the sales data was read, nothing else.
TOUCH_SQL = "UPDATE reports SET sales_as_of = %s WHERE report_date = %s"

# Reports whose day got sales data after the report read it. Besides the
# updated_at watermark, compare the totals: sales only ever grow, so a late
# event always changes order_count even when its updated_at is older than the
# watermark (a processor transaction that started earlier but committed
# later than the one the report saw).
STALE_SQL = """
WITH s AS (
    SELECT day,
           max(updated_at)  AS sales_as_of,
           sum(units)       AS total_units,
           sum(revenue)     AS total_revenue,
           sum(order_count) AS order_count
    FROM sales_daily
    WHERE day IN (SELECT report_date FROM reports)
    GROUP BY day
)
SELECT r.report_date
FROM reports r
LEFT JOIN s ON s.day = r.report_date
WHERE s.sales_as_of > COALESCE(r.sales_as_of, '-infinity'::timestamptz)
   OR COALESCE(s.total_units, 0) <> r.total_units
   OR COALESCE(s.total_revenue, 0) <> r.total_revenue
   OR COALESCE(s.order_count, 0) <> r.order_count
ORDER BY r.report_date
LIMIT %s
"""


@dataclass(frozen=True)
class Report:
    """One issued report, as stored in the ``reports`` row."""

    report_date: date
    total_units: int
    total_revenue: Decimal
    order_count: int
    top_sellers: list[dict[str, Any]]
    low_stock: list[dict[str, Any]]
    generated_at: datetime
    revision: int
    sales_as_of: datetime | None
    # The reconciliation's outcome (contract 5.7): True when nothing differed.
    reconciled: bool | None = None

    @property
    def revised_at(self) -> datetime | None:
        """When the report was last revised; None for the first issue."""
        return self.generated_at if self.revision > 1 else None


# --------------------------------------------------------------------------- formatting


def money(value: Any) -> str:
    """Exact money as a string with 2 decimals ("12.50"); never via float."""
    if isinstance(value, float):
        raise TypeError("money must not be a float")
    return format(Decimal(value).quantize(_CENT, rounding=ROUND_HALF_EVEN), "f")


def iso_utc(value: datetime | None) -> str | None:
    """RFC 3339 UTC timestamp with microseconds: 2026-11-25T00:00:05.123456Z."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_day(value: str | date) -> date:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def report_day_from_context(context: Any) -> date:
    """Day D reported by a run: the date of its data interval start, in UTC.

    With the one-day CronTriggerTimetable the run with logical date D+1 has the
    interval [D, D+1). A run without a data interval (a manual trigger without
    a logical date) reports the day before it was triggered.
    """
    start = context.get("data_interval_start")
    if start is None:
        run_after = getattr(context.get("dag_run"), "run_after", None) or datetime.now(timezone.utc)
        start = run_after - timedelta(days=1)
    return start.astimezone(timezone.utc).date()


def report_base_dir() -> Path:
    """``$STOCKFLOW_REPORT_DIR``, else ``reports/`` under the Airflow home."""
    configured = os.environ.get("STOCKFLOW_REPORT_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    home = os.environ.get("AIRFLOW_HOME") or os.path.join("~", "airflow")
    return (Path(home).expanduser() / "reports").resolve()


def _to_json_list(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, (str, bytes, bytearray)):
        value = json.loads(value)
    return list(value or [])


# --------------------------------------------------------------------------- database


def _read_figures(cur, day: date) -> dict[str, Any]:
    cur.execute(SALES_SQL, (day,))
    total_units, total_revenue, order_count, sales_as_of = cur.fetchone()
    cur.execute(TOP_SELLERS_SQL, (day, TOP_N))
    top = [
        {"product_id": pid, "name": name, "units": int(units), "revenue": money(revenue)}
        for pid, name, units, revenue in cur.fetchall()
    ]
    cur.execute(LOW_STOCK_SQL)
    low = [
        {"product_id": pid, "name": name, "quantity_on_hand": int(qoh), "reorder_level": int(level)}
        for pid, name, qoh, level in cur.fetchall()
    ]
    cur.execute(RECONCILE_SQL)
    differences = cur.fetchall()
    for table, key, actual, expected in differences[:20]:
        log.warning("reconcile: %s %s: %s, expected %s", table, key, actual, expected)
    if len(differences) > 20:
        log.warning("reconcile: %d more differences (run `stockflow reconcile`)", len(differences) - 20)
    return {
        "reconciled": not differences,
        "total_units": int(total_units),
        "total_revenue": Decimal(total_revenue).quantize(_CENT),
        "order_count": int(order_count),
        "top_sellers": top,
        "low_stock": low,
        "sales_as_of": sales_as_of,
    }


def _same_content(row: tuple, fig: dict[str, Any]) -> bool:
    total_units, total_revenue, order_count, top, low = row[:5]
    return (
        row[8] == fig["reconciled"]
        and int(total_units) == fig["total_units"]
        and Decimal(total_revenue) == fig["total_revenue"]
        and int(order_count) == fig["order_count"]
        and _to_json_list(top) == fig["top_sellers"]
        and _to_json_list(low) == fig["low_stock"]
    )


def store_report(conn, day: date) -> tuple[Report, bool]:
    """Read day D's figures and upsert its ``reports`` row, in one snapshot.

    Returns the report as stored and whether this call issued a new revision
    (False when the stored report already had exactly this content: then
    only ``sales_as_of`` moves on, revision and generated_at stay).

    The caller must hold the day's lock (see :func:`day_lock`).
    """
    cur = conn.cursor()
    cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    try:
        fig = _read_figures(cur, day)
        cur.execute(EXISTING_SQL, (day,))
        existing = cur.fetchone()
        top_json = json.dumps(fig["top_sellers"])
        low_json = json.dumps(fig["low_stock"])
        changed = True
        if existing is None:
            cur.execute(
                INSERT_SQL,
                (day, fig["total_units"], fig["total_revenue"], fig["order_count"],
                 top_json, low_json, fig["sales_as_of"], fig["reconciled"]),
            )
            generated_at, revision = cur.fetchone()
        elif not _same_content(existing, fig):
            cur.execute(
                REVISE_SQL,
                (fig["total_units"], fig["total_revenue"], fig["order_count"],
                 top_json, low_json, fig["sales_as_of"], fig["reconciled"], day),
            )
            generated_at, revision = cur.fetchone()
        else:
            changed = False
            generated_at, revision = existing[5], existing[6]
            if existing[7] != fig["sales_as_of"]:
                cur.execute(TOUCH_SQL, (fig["sales_as_of"], day))
        cur.execute("COMMIT")
    except BaseException:
        try:
            cur.execute("ROLLBACK")
        finally:
            raise
    finally:
        cur.close()
    report = Report(
        report_date=day,
        total_units=fig["total_units"],
        total_revenue=fig["total_revenue"],
        order_count=fig["order_count"],
        top_sellers=fig["top_sellers"],
        low_stock=fig["low_stock"],
        generated_at=generated_at,
        revision=int(revision),
        sales_as_of=fig["sales_as_of"],
        reconciled=fig["reconciled"],
    )
    return report, changed


class day_lock:
    """Session-level advisory lock on one report day (context manager).

    Held across the database transaction *and* the file writes, so two runs
    for the same day (the daily run, a reissue, a manual re-run) never
    interleave, and the files always match the row.
    """

    def __init__(self, conn, day: date):
        self.conn, self.key = conn, (day - _EPOCH).days

    def __enter__(self):
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT pg_advisory_lock({_LOCK_SQL_KEY}, %s)", (self.key,))
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            with self.conn.cursor() as cur:
                cur.execute(f"SELECT pg_advisory_unlock({_LOCK_SQL_KEY}, %s)", (self.key,))
        except Exception:
            # Closing the connection releases the lock anyway; keep the
            # original error, if any.
            if exc_type is None:
                raise
        return False


def find_stale_days(conn, limit: int = 200) -> list[date]:
    """Days with a report that sales data arrived for after it was generated."""
    with conn.cursor() as cur:
        cur.execute(STALE_SQL, (limit,))
        return [row[0] for row in cur.fetchall()]


# --------------------------------------------------------------------------- files


def summary_dict(report: Report) -> dict[str, Any]:
    return {
        "report_date": report.report_date.isoformat(),
        "total_units": report.total_units,
        "total_revenue": money(report.total_revenue),
        "order_count": report.order_count,
        "top_sellers": report.top_sellers,
        "low_stock": report.low_stock,
        "generated_at": iso_utc(report.generated_at),
        "revision": report.revision,
        "revised_at": iso_utc(report.revised_at),
        "reconciled": report.reconciled,
    }


def _csv(header: tuple[str, ...], rows: list[tuple]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def render_files(report: Report) -> dict[str, str]:
    """File name -> text content for the day's directory."""
    from stockflow_report.html_page import render_html

    top_rows = [
        (rank, t["product_id"], t["name"], t["units"], t["revenue"])
        for rank, t in enumerate(report.top_sellers, start=1)
    ]
    low_rows = [
        (x["product_id"], x["name"], x["quantity_on_hand"], x["reorder_level"])
        for x in report.low_stock
    ]
    return {
        "top_sellers.csv": _csv(TOP_SELLERS_HEADER, top_rows),
        "low_stock.csv": _csv(LOW_STOCK_HEADER, low_rows),
        "report.html": render_html(report),
        "summary.json": json.dumps(summary_dict(report), indent=2, ensure_ascii=False) + "\n",
    }


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_report_dir(base: Path, report: Report) -> Path:
    """Write (or replace) ``base/D/``; readers never see a half-written file.

    Every file is first written and fsynced in a temporary directory next to
    the target, then renamed into place: the whole directory at once when the
    day is new, else file by file (each rename is atomic), summary.json last.
    """
    files = render_files(report)
    base.mkdir(parents=True, exist_ok=True)
    target = base / report.report_date.isoformat()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=base))
    try:
        for name in REPORT_FILES:
            with open(tmp / name, "w", encoding="utf-8", newline="") as fh:
                fh.write(files[name])
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)
        _fsync_dir(tmp)
        try:
            os.rename(tmp, target)  # new day: all files appear at once
        except OSError:
            if not target.is_dir():
                raise
            for name in REPORT_FILES:
                os.replace(tmp / name, target / name)
            tmp.rmdir()
        _fsync_dir(target)
        _fsync_dir(base)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- entry points


def generate_report(conn, day: date | str, base_dir: Path | str | None = None) -> dict[str, Any]:
    """Issue (or re-issue) day D's report: the ``reports`` row and the files.

    ``conn`` is a DB-API connection to the stockflow database; it is switched
    to autocommit (transactions are explicit). Returns a small, JSON-able
    summary (fine for XCom).
    """
    day = parse_day(day)
    base = Path(base_dir).resolve() if base_dir is not None else report_base_dir()
    conn.autocommit = True
    with day_lock(conn, day):
        report, changed = store_report(conn, day)
        target = write_report_dir(base, report)
    log.info(
        "report %s: revision %d %s (%d units, %s revenue, %d orders, %d top sellers, %d low stock, %s) -> %s",
        day, report.revision, "issued" if changed else "unchanged, files rewritten",
        report.total_units, money(report.total_revenue), report.order_count,
        len(report.top_sellers), len(report.low_stock),
        "reconciled" if report.reconciled else "RECONCILIATION FAILED", target,
    )
    return {
        "report_date": day.isoformat(),
        "revision": report.revision,
        "changed": changed,
        "generated_at": iso_utc(report.generated_at),
        "reconciled": report.reconciled,
        "dir": str(target),
        "files": [str(target / name) for name in REPORT_FILES],
    }


def _hook_conn(conn_id: str = POSTGRES_CONN_ID):
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id=conn_id).get_conn()


def run_report(day: date | str, conn_id: str = POSTGRES_CONN_ID) -> dict[str, Any]:
    """Task body: generate day D's report through the Airflow connection."""
    conn = _hook_conn(conn_id)
    try:
        return generate_report(conn, day)
    finally:
        conn.close()


def run_find_stale(limit: int = 200, conn_id: str = POSTGRES_CONN_ID) -> list[str]:
    """Task body: ISO dates of reports that late data made stale."""
    conn = _hook_conn(conn_id)
    try:
        conn.autocommit = True
        days = find_stale_days(conn, limit)
    finally:
        conn.close()
    if days:
        log.info("%d stale report(s): %s", len(days), ", ".join(d.isoformat() for d in days))
    else:
        log.info("no stale reports")
    return [d.isoformat() for d in days]
