"""Unit tests of the shared report code (no Airflow run, no database)."""

from __future__ import annotations

import html
import json
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from stockflow_report.core import Report, iso_utc, money, render_files, report_base_dir, write_report_dir
from sf_testdata import read_csv

NASTY = 'a "b" <c> & \'d\', e\nf'


def _report(revision=1, top=None, low=None) -> Report:
    return Report(
        report_date=date(2026, 3, 1),
        total_units=7,
        total_revenue=Decimal("0.30"),
        order_count=3,
        top_sellers=top if top is not None else [
            {"product_id": "<p1>", "name": NASTY, "units": 5, "revenue": "0.10"},
            {"product_id": "p2", "name": "B", "units": 2, "revenue": "0.20"},
        ],
        low_stock=low if low is not None else [
            {"product_id": "<p1>", "name": NASTY, "quantity_on_hand": -2, "reorder_level": 0},
        ],
        generated_at=datetime(2026, 3, 2, 0, 0, 1, 5, tzinfo=timezone.utc),
        revision=revision,
        sales_as_of=datetime(2026, 3, 1, 23, 0, tzinfo=timezone.utc),
    )


def test_money_is_exact_with_two_decimals():
    assert money(Decimal("0.1") + Decimal("0.2")) == "0.30"
    assert money(Decimal("12.5")) == "12.50"
    assert money(0) == "0.00"
    assert money(Decimal("123456789012345.67")) == "123456789012345.67"
    with pytest.raises(TypeError):
        money(0.1)


def test_iso_utc():
    assert iso_utc(datetime(2026, 3, 2, 1, 2, 3, 4, tzinfo=timezone.utc)) == "2026-03-02T01:02:03.000004Z"
    assert iso_utc(None) is None


def test_files_escape_and_quote():
    files = render_files(_report())
    page = files["report.html"]
    assert NASTY not in page and "<p1>" not in page and "<c>" not in page
    assert html.escape(NASTY) in page and "&lt;p1&gt;" in page
    summary = json.loads(files["summary.json"])
    assert summary["top_sellers"][0]["name"] == NASTY
    assert summary["total_revenue"] == "0.30"
    assert summary["generated_at"] == "2026-03-02T00:00:01.000005Z"
    assert summary["revision"] == 1 and summary["revised_at"] is None


def test_revised_report_says_so():
    files = render_files(_report(revision=3))
    summary = json.loads(files["summary.json"])
    assert summary["revision"] == 3 and summary["revised_at"] == summary["generated_at"]
    assert "Revision 3" in files["report.html"] and summary["revised_at"] in files["report.html"]


def test_write_report_dir_replaces_files(tmp_path):
    first = write_report_dir(tmp_path, _report())
    assert read_csv(first / "top_sellers.csv")[1] == ["1", "<p1>", NASTY, "5", "0.10"]
    assert read_csv(first / "low_stock.csv")[1] == ["<p1>", NASTY, "-2", "0"]
    second = write_report_dir(tmp_path, _report(revision=2, top=[], low=[]))
    assert second == first
    assert read_csv(second / "top_sellers.csv") == [["rank", "product_id", "name", "units", "revenue"]]
    assert json.loads((second / "summary.json").read_text())["revision"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-03-01"]  # no temp dirs left


def test_report_base_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("STOCKFLOW_REPORT_DIR", str(tmp_path / "x"))
    assert report_base_dir() == tmp_path / "x"
    monkeypatch.delenv("STOCKFLOW_REPORT_DIR")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    assert report_base_dir() == tmp_path / "home" / "reports"
