"""Concurrent generations of one day (daily run, reissue, manual re-run at
once) are serialised: one row, a consistent revision, complete files."""

from __future__ import annotations

import threading

import psycopg

from sf_testdata import DAY, expected_report, read_json, report_row, seed
from stockflow_report import generate_report


def _generate_concurrently(pg_url, report_dir, n: int) -> list[dict]:
    results, errors = [], []
    barrier = threading.Barrier(n)

    def work():
        try:
            with psycopg.connect(pg_url) as conn:
                barrier.wait()
                results.append(generate_report(conn, DAY, report_dir))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(results) == n
    return results


def test_concurrent_generations(db, pg_url, report_dir):
    seed(db)
    results = _generate_concurrently(pg_url, report_dir, 4)
    assert sum(r["changed"] for r in results) == 1  # one issued it, the others found it current
    row = report_row(db)
    assert row["revision"] == 1
    assert db.execute("SELECT count(*) FROM reports").fetchone()[0] == 1

    db.execute("UPDATE inventory SET quantity_on_hand = 0 WHERE product_id = 'p01'")
    results = _generate_concurrently(pg_url, report_dir, 3)
    assert sum(r["changed"] for r in results) == 1
    row = report_row(db)
    assert row["revision"] == 2
    summary = read_json(report_dir / DAY.isoformat() / "summary.json")
    assert summary["revision"] == 2
    assert summary["low_stock"] == expected_report(stock={"p01": 0})["low_stock"] == row["low_stock"]
    assert sorted(p.name for p in report_dir.iterdir()) == [DAY.isoformat()]
