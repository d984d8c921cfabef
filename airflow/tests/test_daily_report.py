"""daily_report end to end: dag.test() against the real PostgreSQL."""

from __future__ import annotations

import html
import json
import re
from datetime import date, datetime, timedelta
from decimal import Decimal

from sf_testdata import (
    DAY,
    LOGICAL_DATE,
    MUG_NAME,
    UTC,
    expected_report,
    make_reconcilable,
    parse_ts,
    read_csv,
    read_json,
    report_row,
    seed,
    snapshot_files,
)

FILES = ["low_stock.csv", "report.html", "summary.json", "top_sellers.csv"]


def _assert_success(dr):
    assert dr.state == "success", f"DAG run ended {dr.state}"


def test_report_end_to_end(db, report_dir, run_dag):
    seed(db)
    exp = expected_report()
    # Sanity of the fixture itself: the interesting cases are really there.
    assert [t["product_id"] for t in exp["top_sellers"]] == [
        "p01", "p02", "p03", "Z1", "a1", "mug", "p05", "p06", "p07", "p08"]
    assert [x["product_id"] for x in exp["low_stock"]] == ["Z1", "a1", "mug", "p02", "p04", "p09"]

    _assert_success(run_dag("daily_report", LOGICAL_DATE))

    # --- reports row
    row = report_row(db)
    assert row is not None
    assert db.execute("SELECT count(*) FROM reports").fetchone()[0] == 1
    assert row["total_units"] == exp["total_units"]
    assert row["total_revenue"] == Decimal(exp["total_revenue"])
    assert row["order_count"] == exp["order_count"]
    assert row["top_sellers"] == exp["top_sellers"]
    assert row["low_stock"] == exp["low_stock"]
    assert row["revision"] == 1
    max_updated = db.execute("SELECT max(updated_at) FROM sales_daily WHERE day = %s", (DAY,)).fetchone()[0]
    assert row["sales_as_of"] == max_updated
    assert abs(datetime.now(UTC) - row["generated_at"]) < timedelta(minutes=5)

    day_dir = report_dir / DAY.isoformat()
    assert sorted(p.name for p in day_dir.iterdir()) == FILES
    # no temporary leftovers next to the day directories
    assert [p.name for p in report_dir.iterdir()] == [DAY.isoformat()]

    # --- summary.json
    summary = read_json(day_dir / "summary.json")
    for key in ("report_date", "total_units", "total_revenue", "order_count", "top_sellers", "low_stock"):
        assert summary[key] == exp[key], key
    assert re.fullmatch(r"\d+\.\d{2}", summary["total_revenue"])
    assert parse_ts(summary["generated_at"]) == row["generated_at"]
    assert summary["revision"] == 1
    assert summary["revised_at"] is None
    assert summary["top_sellers"] == row["top_sellers"] and summary["low_stock"] == row["low_stock"]

    # --- top_sellers.csv
    rows = read_csv(day_dir / "top_sellers.csv")
    assert rows[0] == ["rank", "product_id", "name", "units", "revenue"]
    assert rows[1:] == [
        [str(rank), t["product_id"], t["name"], str(t["units"]), t["revenue"]]
        for rank, t in enumerate(exp["top_sellers"], start=1)
    ]
    assert MUG_NAME in [r[2] for r in rows[1:]]  # quotes, comma, <, & survive CSV

    # --- low_stock.csv
    rows = read_csv(day_dir / "low_stock.csv")
    assert rows[0] == ["product_id", "name", "quantity_on_hand", "reorder_level"]
    assert rows[1:] == [
        [x["product_id"], x["name"], str(x["quantity_on_hand"]), str(x["reorder_level"])]
        for x in exp["low_stock"]
    ]

    # --- report.html
    page = (day_dir / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert DAY.isoformat() in page
    assert f'id="total-units">{exp["total_units"]}<' in page
    assert f'id="total-revenue">{exp["total_revenue"]}<' in page
    assert f'id="order-count">{exp["order_count"]}<' in page
    assert "<svg" in page and page.count('class="bar"') == len(exp["top_sellers"])
    assert html.escape(MUG_NAME) in page
    assert "<Coffee>" not in page  # every DB text is escaped
    for x in exp["low_stock"]:
        assert f"<td>{html.escape(x['product_id'])}</td>" in page
    # self-contained: no scripts, no external resources
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page


def test_rerun_is_idempotent(db, report_dir, run_dag):
    seed(db)
    _assert_success(run_dag("daily_report", LOGICAL_DATE))
    day_dir = report_dir / DAY.isoformat()
    first_files = snapshot_files(day_dir)
    first_row = report_row(db)

    _assert_success(run_dag("daily_report", LOGICAL_DATE))
    assert db.execute("SELECT count(*) FROM reports").fetchone()[0] == 1
    assert report_row(db) == first_row  # same content: same revision and generated_at
    assert snapshot_files(day_dir) == first_files
    assert [p.name for p in report_dir.iterdir()] == [DAY.isoformat()]

    # A damaged or missing file is rewritten by a re-run.
    (day_dir / "top_sellers.csv").write_text("garbage")
    (day_dir / "report.html").unlink()
    _assert_success(run_dag("daily_report", LOGICAL_DATE))
    assert snapshot_files(day_dir) == first_files


def test_rerun_after_stock_change_issues_revision(db, report_dir, run_dag):
    seed(db)
    _assert_success(run_dag("daily_report", LOGICAL_DATE))
    first = report_row(db)
    db.execute("UPDATE inventory SET quantity_on_hand = 1 WHERE product_id = 'p01'")  # now low
    db.execute("UPDATE inventory SET quantity_on_hand = 500 WHERE product_id = 'mug'")  # no longer low

    _assert_success(run_dag("daily_report", LOGICAL_DATE))
    row = report_row(db)
    exp = expected_report(stock={"p01": 1, "mug": 500})
    assert row["low_stock"] == exp["low_stock"]
    assert row["revision"] == 2 and row["generated_at"] > first["generated_at"]
    summary = read_json(report_dir / DAY.isoformat() / "summary.json")
    assert summary["low_stock"] == exp["low_stock"]
    assert summary["revision"] == 2
    assert parse_ts(summary["revised_at"]) == row["generated_at"]
    rows = read_csv(report_dir / DAY.isoformat() / "low_stock.csv")
    assert [r[0] for r in rows[1:]] == [x["product_id"] for x in exp["low_stock"]]


def test_day_without_sales(db, report_dir, run_dag):
    seed(db, orders=[])
    _assert_success(run_dag("daily_report", LOGICAL_DATE))
    row = report_row(db)
    assert (row["total_units"], row["total_revenue"], row["order_count"]) == (0, Decimal("0.00"), 0)
    assert row["top_sellers"] == [] and row["sales_as_of"] is None
    day_dir = report_dir / DAY.isoformat()
    summary = read_json(day_dir / "summary.json")
    assert summary["total_revenue"] == "0.00" and summary["top_sellers"] == []
    assert summary["low_stock"] == expected_report(orders=[])["low_stock"]
    assert read_csv(day_dir / "top_sellers.csv") == [["rank", "product_id", "name", "units", "revenue"]]
    assert "No sales recorded" in (day_dir / "report.html").read_text(encoding="utf-8")


def test_default_report_dir_is_under_airflow_home(db, monkeypatch, run_dag, tmp_path):
    monkeypatch.delenv("STOCKFLOW_REPORT_DIR", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))  # only the report dir reads it at run time
    seed(db, orders=[])
    other_day = date(2026, 1, 31)
    _assert_success(run_dag("daily_report", datetime(2026, 2, 1, tzinfo=UTC)))
    summary = json.loads((tmp_path / "reports" / "2026-01-31" / "summary.json").read_text())
    assert summary["report_date"] == other_day.isoformat()
    assert report_row(db, other_day)["revision"] == 1


def test_reconciliation_outcome_is_stored_and_shown(db, report_dir, run_dag):
    """Contract 5.7: reports.reconciled, also in summary.json and the HTML."""
    seed(db)
    make_reconcilable(db.cursor())
    _assert_success(run_dag("daily_report", LOGICAL_DATE))
    row = report_row(db)
    assert row["reconciled"] is True
    day_dir = report_dir / DAY.isoformat()
    assert read_json(day_dir / "summary.json")["reconciled"] is True
    page = (day_dir / "report.html").read_text(encoding="utf-8")
    assert re.search(r'id="reconciled">yes<', page), page

    # Stock changed by plain SQL behind the processor's back: the next run
    # finds it, says so, and issues a revision.
    db.execute("UPDATE inventory SET quantity_on_hand = quantity_on_hand + 1 WHERE product_id = 'p05'")
    _assert_success(run_dag("daily_report", LOGICAL_DATE))
    row = report_row(db)
    assert row["reconciled"] is False and row["revision"] == 2
    assert read_json(day_dir / "summary.json")["reconciled"] is False
    page = (day_dir / "report.html").read_text(encoding="utf-8")
    assert re.search(r'id="reconciled">NO: run stockflow reconcile<', page), page
