"""Late data: reissue_stale_reports regenerates reports whose day changed."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

from sf_testdata import (
    DAY,
    LOGICAL_DATE,
    ORDERS,
    UTC,
    Order,
    expected_report,
    insert_orders,
    late_orders,
    parse_ts,
    read_csv,
    read_json,
    rebuild_sales_daily,
    report_row,
    seed,
    snapshot_files,
)


def _ok(dr):
    assert dr.state == "success", f"DAG run ended {dr.state}"


def _apply_late_data(db) -> list[Order]:
    late = late_orders()
    with db.cursor() as cur:
        insert_orders(cur, late)
        rebuild_sales_daily(cur)  # changed rows get updated_at = now()
    return ORDERS + late


def test_late_data_reissues_report(db, report_dir, run_dag):
    seed(db)
    _ok(run_dag("daily_report", LOGICAL_DATE))
    first_row = report_row(db)
    day_dir = report_dir / DAY.isoformat()
    first_files = snapshot_files(day_dir)
    first_inodes = {p.name: p.stat().st_ino for p in day_dir.iterdir()}

    # Nothing is stale yet.
    _ok(run_dag("reissue_stale_reports"))
    assert report_row(db) == first_row
    assert snapshot_files(day_dir) == first_files

    orders = _apply_late_data(db)
    exp = expected_report(orders)
    assert exp["top_sellers"][0]["product_id"] == "p09"

    _ok(run_dag("reissue_stale_reports"))
    row = report_row(db)
    assert row["revision"] == 2
    assert row["generated_at"] > first_row["generated_at"]
    assert row["total_units"] == exp["total_units"] == first_row["total_units"] + 43
    assert row["total_revenue"] == Decimal(exp["total_revenue"])
    assert row["order_count"] == exp["order_count"] == first_row["order_count"] + 2
    assert row["top_sellers"] == exp["top_sellers"]
    max_updated = db.execute("SELECT max(updated_at) FROM sales_daily WHERE day = %s", (DAY,)).fetchone()[0]
    assert row["sales_as_of"] == max_updated > first_row["sales_as_of"]
    assert db.execute("SELECT count(*) FROM reports").fetchone()[0] == 1

    files = snapshot_files(day_dir)
    assert sorted(files) == sorted(first_files)
    for name in ("summary.json", "top_sellers.csv", "report.html"):
        assert files[name] != first_files[name], f"{name} did not change"
    assert files["low_stock.csv"] == first_files["low_stock.csv"]  # stock did not change
    # every file was replaced (renamed into place), not edited in place
    assert all(p.stat().st_ino != first_inodes[p.name] for p in day_dir.iterdir())
    summary = read_json(day_dir / "summary.json")
    for key in ("total_units", "total_revenue", "order_count", "top_sellers", "low_stock"):
        assert summary[key] == exp[key], key
    assert summary["revision"] == 2
    assert parse_ts(summary["revised_at"]) == parse_ts(summary["generated_at"]) == row["generated_at"]
    assert read_csv(day_dir / "top_sellers.csv")[1][:4] == ["1", "p09", "Washer", "49"]
    page = (day_dir / "report.html").read_text(encoding="utf-8")
    assert "Revision 2" in page and summary["revised_at"] in page
    assert f'id="total-units">{exp["total_units"]}<' in page

    # A second reissue run finds nothing to do.
    _ok(run_dag("reissue_stale_reports"))
    assert report_row(db) == row
    assert snapshot_files(day_dir) == files


def test_change_with_older_timestamp_is_still_caught(db, report_dir, run_dag):
    """A processor transaction that began before the report read the data but
    committed after it leaves updated_at older than sales_as_of; the changed
    totals still mark the report stale."""
    seed(db)
    _ok(run_dag("daily_report", LOGICAL_DATE))
    first = report_row(db)
    db.execute(
        "UPDATE sales_daily SET units = units + 1, revenue = revenue + 0.10, order_count = order_count + 1,"
        " updated_at = %s WHERE day = %s AND product_id = 'p02' AND source = 'online'",
        (first["sales_as_of"] - timedelta(seconds=5), DAY),
    )
    _ok(run_dag("reissue_stale_reports"))
    row = report_row(db)
    assert row["revision"] == 2
    assert row["total_units"] == first["total_units"] + 1
    assert row["total_revenue"] == first["total_revenue"] + Decimal("0.10")
    _ok(run_dag("reissue_stale_reports"))
    assert report_row(db) == row


def test_timestamp_bump_without_change_keeps_revision(db, report_dir, run_dag):
    seed(db)
    _ok(run_dag("daily_report", LOGICAL_DATE))
    first = report_row(db)
    files = snapshot_files(report_dir / DAY.isoformat())
    db.execute("UPDATE sales_daily SET updated_at = now() WHERE day = %s AND product_id = 'p01'", (DAY,))
    _ok(run_dag("reissue_stale_reports"))
    row = report_row(db)
    assert row["sales_as_of"] > first["sales_as_of"]  # the watermark moved on ...
    assert (row["revision"], row["generated_at"]) == (first["revision"], first["generated_at"])  # ... nothing else
    assert snapshot_files(report_dir / DAY.isoformat()) == files
    _ok(run_dag("reissue_stale_reports"))
    assert report_row(db) == row


def test_reissue_only_touches_existing_reports(db, report_dir, run_dag):
    seed(db)
    _ok(run_dag("daily_report", LOGICAL_DATE))
    other = date(2026, 11, 20)
    # Sales for a day that has no report, and late data for the reported day.
    with db.cursor() as cur:
        insert_orders(cur, [Order("x-1", "x-o1", "p01", 2, Decimal("2.50"), "online",
                                  datetime(2026, 11, 20, 12, tzinfo=UTC))])
        rebuild_sales_daily(cur)
    _ok(run_dag("reissue_stale_reports"))
    assert report_row(db, other) is None
    assert not (report_dir / other.isoformat()).exists()
    assert report_row(db)["revision"] == 1  # D itself did not change
