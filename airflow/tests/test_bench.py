"""Benchmark: daily_report on a day with 100 000 orders over 1 000 products.

Skipped unless STOCKFLOW_BENCH=1 (``scripts/airflow.sh bench`` sets it).
Fills products/inventory/orders/sales_daily with generate_series, then times
``dag.test()`` of daily_report and, for comparison, the report code alone.
"""

from __future__ import annotations

import os
import time
from decimal import Decimal

import psycopg
import pytest

from sf_testdata import DAY, LOGICAL_DATE, read_json, report_row

pytestmark = pytest.mark.skipif(
    not os.environ.get("STOCKFLOW_BENCH"), reason="benchmark: set STOCKFLOW_BENCH=1 (scripts/airflow.sh bench)"
)

N_PRODUCTS = int(os.environ.get("STOCKFLOW_BENCH_PRODUCTS", "1000"))
N_ORDERS = int(os.environ.get("STOCKFLOW_BENCH_ORDERS", "100000"))
HISTORY_DAYS = int(os.environ.get("STOCKFLOW_BENCH_HISTORY_DAYS", "365"))


def _fill(db) -> None:
    db.execute(
        """
        INSERT INTO products (product_id, name, category, price, reorder_level)
        SELECT 'P' || lpad(i::text, 5, '0'), 'Product ' || i, 'cat' || (i %% 10),
               (1 + i %% 50) + 0.99, i %% 20
        FROM generate_series(1, %s) AS i
        """,
        (N_PRODUCTS,),
    )
    # Every tenth product has no inventory row (counts as 0 on hand).
    db.execute(
        """
        INSERT INTO inventory (product_id, quantity_on_hand)
        SELECT product_id, (hashtext(product_id) & 255) - 20 FROM products
        WHERE right(product_id, 1) <> '0'
        """
    )
    db.execute(
        """
        INSERT INTO orders (event_id, order_id, product_id, quantity, unit_price, source,
                            customer_id, store_id, occurred_at)
        SELECT 'ev-' || i, 'o-' || i, p.product_id, 1 + i %% 5, p.price,
               CASE WHEN i %% 3 = 0 THEN 'store' ELSE 'online' END,
               CASE WHEN i %% 3 = 0 THEN NULL ELSE 'c' || (i %% 5000) END,
               CASE WHEN i %% 3 = 0 THEN 's' || (i %% 40) END,
               %s::timestamptz + (i * 86399.0 / %s) * interval '1 second'
        FROM generate_series(1, %s) AS i
        JOIN products p ON p.product_id = 'P' || lpad((1 + (i * 7919) %% %s)::text, 5, '0')
        """,
        (DAY.isoformat() + "T00:00:00Z", N_ORDERS, N_ORDERS, N_PRODUCTS),
    )
    db.execute(
        """
        INSERT INTO sales_daily (day, product_id, source, units, revenue, order_count)
        SELECT (occurred_at AT TIME ZONE 'UTC')::date, product_id, source,
               sum(quantity), sum(quantity * unit_price), count(*)
        FROM orders GROUP BY 1, 2, 3
        """
    )
    # A year of history in sales_daily (the stale-report scan reads it).
    db.execute(
        """
        INSERT INTO sales_daily (day, product_id, source, units, revenue, order_count)
        SELECT %s::date - d, s.product_id, s.source, s.units, s.revenue, s.order_count
        FROM sales_daily s, generate_series(1, %s) AS d
        WHERE s.day = %s
        """,
        (DAY, HISTORY_DAYS, DAY),
    )
    db.execute("ANALYZE")


def test_bench_daily_report(db, report_dir, run_dag, pg_url):
    t0 = time.perf_counter()
    _fill(db)
    fill_s = time.perf_counter() - t0
    n_orders = db.execute("SELECT count(*) FROM orders").fetchone()[0]
    n_rows = db.execute("SELECT count(*) FROM sales_daily").fetchone()[0]

    t0 = time.perf_counter()
    dr = run_dag("daily_report", LOGICAL_DATE)
    dag_s = time.perf_counter() - t0
    assert dr.state == "success"

    # Check against a full scan of orders (what the report must equal).
    units, revenue, count = db.execute(
        "SELECT sum(quantity), sum(quantity * unit_price), count(*) FROM orders"
        " WHERE occurred_at >= %s::date::timestamp AT TIME ZONE 'UTC'"
        " AND occurred_at < (%s::date + 1)::timestamp AT TIME ZONE 'UTC'",
        (DAY, DAY),
    ).fetchone()
    row = report_row(db)
    assert (row["total_units"], row["total_revenue"], row["order_count"]) == (units, revenue, count)
    assert len(row["top_sellers"]) == 10
    summary = read_json(report_dir / DAY.isoformat() / "summary.json")
    assert Decimal(summary["total_revenue"]) == revenue

    # The report code alone (no Airflow), a re-run with unchanged content.
    from stockflow_report import generate_report

    with psycopg.connect(pg_url) as conn:
        t0 = time.perf_counter()
        generate_report(conn, DAY, report_dir)
        core_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    assert run_dag("reissue_stale_reports").state == "success"
    reissue_s = time.perf_counter() - t0

    print(
        f"\nBENCH fill {fill_s:.1f}s: {n_orders} orders, {N_PRODUCTS} products, {n_rows} sales_daily rows"
        f" ({HISTORY_DAYS} days of history)\n"
        f"BENCH daily_report dag.test(): {dag_s:.2f}s\n"
        f"BENCH report code alone (generate_report): {core_s * 1000:.0f} ms\n"
        f"BENCH reissue_stale_reports dag.test() (nothing stale): {reissue_s:.2f}s\n"
        f"BENCH low stock: {len(row['low_stock'])} products"
    )
