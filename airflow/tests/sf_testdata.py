"""A known day of stockflow data, and the report expected for it.

Orders are inserted into ``orders`` and ``sales_daily`` is derived from them
with the same aggregation the stream processor maintains (UTC day of
``occurred_at``, per product and source). The expected report is computed
here in Python, independently, from the order list and the contract's rules.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

DAGS_DIR = Path(__file__).resolve().parents[1] / "dags"
UTC = timezone.utc
DAY = date(2026, 11, 24)
# CronTriggerTimetable("@daily", interval=1 day): the run at D+1 reports D.
LOGICAL_DATE = datetime(2026, 11, 25, tzinfo=UTC)

MUG_NAME = 'Mug "Best" <Coffee> & Tea, 350ml'

# product_id, name, price, reorder_level, quantity_on_hand (None: no inventory row)
PRODUCTS = [
    ("p01", "Widget", "2.50", 10, 50),
    ("p02", "Gadget", "0.10", 10, 10),  # low: equal
    ("p03", "Gizmo", "1.99", 10, 11),
    ("p04", "Doohickey", "3.00", 3, None),  # low: no inventory row = 0
    ("p05", "Sprocket", "0.20", 0, 100),
    ("p06", "Flange", "4.75", 0, 100),
    ("p07", "Grommet", "0.05", 0, 100),
    ("p08", "Bracket", "12.00", 0, 100),
    ("p09", "Washer", "0.01", 1, 0),  # low
    ("p10", "Nut", "0.33", 0, 100),
    ("Z1", "Zebra plush", "9.99", 0, None),  # low: 0 <= 0
    ("a1", "Café crème", "3.30", 5, -3),  # low: backorder
    ("mug", MUG_NAME, "7.77", 20, 5),  # low
]

# Units sold on DAY per (product, source). Ties: p02/p03 (30), Z1/a1 (20,
# code-point order puts "Z1" first), p07/p08/p09 (9) across ranks 9..11.
UNITS_ON_DAY = {
    ("p01", "online"): 25,
    ("p01", "store"): 15,
    ("p02", "online"): 30,
    ("p03", "store"): 30,
    ("Z1", "online"): 20,
    ("a1", "online"): 12,
    ("a1", "store"): 8,
    ("mug", "store"): 16,
    ("p05", "online"): 15,
    ("p06", "online"): 12,
    ("p07", "store"): 9,
    ("p08", "online"): 9,
    ("p09", "online"): 9,
    ("p10", "store"): 5,
}


@dataclass
class Order:
    event_id: str
    order_id: str
    product_id: str
    quantity: int
    unit_price: Decimal
    source: str
    occurred_at: datetime


def _orders() -> list[Order]:
    orders: list[Order] = []
    n = 0

    def add(pid: str, qty: int, price: str, source: str, at: datetime) -> None:
        nonlocal n
        n += 1
        orders.append(Order(f"ev-{n:05d}", f"o-{n:05d}", pid, qty, Decimal(price), source, at))

    prices = {p[0]: p[2] for p in PRODUCTS}
    base = datetime(2026, 11, 24, 0, 0, 0, tzinfo=UTC)
    for i, ((pid, source), units) in enumerate(sorted(UNITS_ON_DAY.items())):
        # Split into orders of 1..4 units spread over the day, with a price
        # that varies by cents (sums that binary floats get wrong).
        left, k = units, 0
        while left:
            qty = min(left, 1 + (k + i) % 4)
            price = Decimal(prices[pid]) + Decimal(k % 3) / 100
            at = base + timedelta(minutes=37 * (k + 1) + i)
            add(pid, qty, str(price), source, at)
            left -= qty
            k += 1
    # Edges of the UTC day.
    add("p10", 1, "0.33", "online", datetime(2026, 11, 24, 0, 0, 0, tzinfo=UTC))  # first instant: counts
    add("p10", 1, "0.33", "online", datetime(2026, 11, 24, 23, 59, 59, 999000, tzinfo=UTC))  # counts
    add("p10", 1, "0.33", "store", datetime(2026, 11, 25, 1, 30, tzinfo=timezone(timedelta(hours=2))))  # 23:30Z: counts
    add("p04", 50, "3.00", "online", datetime(2026, 11, 25, 0, 0, 0, tzinfo=UTC))  # next day
    add("p04", 50, "3.00", "store", datetime(2026, 11, 23, 23, 59, 59, tzinfo=UTC))  # day before
    add("p04", 7, "3.00", "online", datetime(2026, 11, 24, 23, 0, tzinfo=timezone(timedelta(hours=-5))))  # 04:00Z next day
    return orders


ORDERS = _orders()


def late_orders() -> list[Order]:
    """Sales for DAY that arrive after its report was issued."""
    at = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
    return [
        # p09 jumps from 9 units (rank 11, out) to 49 (rank 1)
        Order("late-1", "late-o1", "p09", 40, Decimal("0.01"), "store", at),
        Order("late-2", "late-o2", "p04", 3, Decimal("3.00"), "online", at),  # new product on D
    ]


def seed(conn, orders: list[Order] | None = None) -> None:
    """Insert PRODUCTS, their inventory, the orders, and sales_daily from them."""
    orders = ORDERS if orders is None else orders
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO products (product_id, name, category, price, reorder_level) VALUES (%s, %s, 'test', %s, %s)",
            [(pid, name, Decimal(price), level) for pid, name, price, level, _ in PRODUCTS],
        )
        cur.executemany(
            "INSERT INTO inventory (product_id, quantity_on_hand) VALUES (%s, %s)",
            [(pid, qoh) for pid, _, _, _, qoh in PRODUCTS if qoh is not None],
        )
        insert_orders(cur, orders)
        rebuild_sales_daily(cur)


def insert_orders(cur, orders: list[Order]) -> None:
    cur.executemany(
        "INSERT INTO orders (event_id, order_id, product_id, quantity, unit_price, source, customer_id, store_id, occurred_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [
            (o.event_id, o.order_id, o.product_id, o.quantity, o.unit_price, o.source,
             "cust" if o.source == "online" else None, "store-1" if o.source == "store" else None, o.occurred_at)
            for o in orders
        ],
    )


def rebuild_sales_daily(cur) -> None:
    """What the stream processor maintains: one row per (UTC day, product, source)."""
    cur.execute(
        """
        INSERT INTO sales_daily (day, product_id, source, units, revenue, order_count, updated_at)
        SELECT (occurred_at AT TIME ZONE 'UTC')::date, product_id, source,
               sum(quantity), sum(quantity * unit_price), count(*), now()
        FROM orders
        GROUP BY 1, 2, 3
        ON CONFLICT (day, product_id, source) DO UPDATE
        SET units = EXCLUDED.units, revenue = EXCLUDED.revenue,
            order_count = EXCLUDED.order_count, updated_at = now()
        WHERE (sales_daily.units, sales_daily.revenue, sales_daily.order_count)
              IS DISTINCT FROM (EXCLUDED.units, EXCLUDED.revenue, EXCLUDED.order_count)
        """
    )


def make_reconcilable(cur) -> None:
    """Give the seeded orders the history the processor would have written.

    For each order an applied ``events_log`` row with the order's commit
    time (the processor writes both in one transaction); ``sales_hourly`` and
    ``stock_hourly`` from those rows; an inventory row for every product with
    sales, its opening stock set so that opening + deltas = on hand. Then
    ``reconcile_differences()`` finds nothing (contract 5.5).
    """
    cur.execute(
        """
        INSERT INTO events_log (event_id, topic, kafka_partition, kafka_offset, status, event_type,
                                product_id, delta, occurred_at, content_hash, epoch, processed_at)
        SELECT o.event_id, CASE o.source WHEN 'online' THEN 'online_orders' ELSE 'store_sales' END, 0,
               row_number() OVER (PARTITION BY o.source ORDER BY o.event_id), 'applied',
               CASE o.source WHEN 'online' THEN 'online_order' ELSE 'store_sale' END,
               o.product_id, -o.quantity, o.occurred_at, sha256(o.event_id::bytea), 1, o.processed_at
        FROM orders o
        WHERE NOT EXISTS (SELECT 1 FROM events_log e WHERE e.event_id = o.event_id)
        """
    )
    cur.execute("DELETE FROM sales_hourly")
    cur.execute(
        """
        INSERT INTO sales_hourly (hour, product_id, source, units, revenue, order_count)
        SELECT date_trunc('hour', occurred_at, 'UTC'), product_id, source, sum(quantity),
               sum(quantity * unit_price), count(*)
        FROM orders GROUP BY 1, 2, 3
        """
    )
    cur.execute("DELETE FROM stock_hourly")
    cur.execute(
        """
        INSERT INTO stock_hourly (axis, hour, product_id, delta, events)
        SELECT 'event', date_trunc('hour', occurred_at, 'UTC'), product_id, sum(delta), count(*)
        FROM events_log WHERE status = 'applied' GROUP BY 2, 3
        UNION ALL
        SELECT 'commit', date_trunc('hour', processed_at, 'UTC'), product_id, sum(delta), count(*)
        FROM events_log WHERE status = 'applied' GROUP BY 2, 3
        """
    )
    cur.execute(
        """
        INSERT INTO inventory (product_id, quantity_on_hand)
        SELECT DISTINCT product_id, 0 FROM events_log WHERE status = 'applied'
        ON CONFLICT (product_id) DO NOTHING
        """
    )
    cur.execute(
        """
        UPDATE inventory i SET opening_quantity = i.quantity_on_hand - d.delta
        FROM (SELECT product_id, sum(delta) AS delta FROM events_log WHERE status = 'applied' GROUP BY 1) d
        WHERE d.product_id = i.product_id
        """
    )


def expected_report(orders: list[Order] | None = None, day: date = DAY,
                    stock: dict[str, int | None] | None = None) -> dict:
    """The report per contract section 4, computed from scratch in Python."""
    orders = ORDERS if orders is None else orders
    on_day = [o for o in orders if o.occurred_at.astimezone(UTC).date() == day]
    units: dict[str, int] = {}
    revenue: dict[str, Decimal] = {}
    for o in on_day:
        units[o.product_id] = units.get(o.product_id, 0) + o.quantity
        revenue[o.product_id] = revenue.get(o.product_id, Decimal(0)) + o.quantity * o.unit_price
    names = {p[0]: p[1] for p in PRODUCTS}
    ranked = sorted((pid for pid in units if units[pid] > 0), key=lambda pid: (-units[pid], pid))[:10]
    levels = {p[0]: p[3] for p in PRODUCTS}
    on_hand = {p[0]: p[4] for p in PRODUCTS}
    if stock:
        on_hand.update(stock)
    low = [
        {"product_id": pid, "name": names[pid], "quantity_on_hand": on_hand[pid] or 0, "reorder_level": levels[pid]}
        for pid in sorted(names)
        if (on_hand[pid] or 0) <= levels[pid]
    ]
    total_revenue = sum((o.quantity * o.unit_price for o in on_day), Decimal(0))
    return {
        "report_date": day.isoformat(),
        "total_units": sum(o.quantity for o in on_day),
        "total_revenue": f"{total_revenue:.2f}",
        "order_count": len(on_day),
        "top_sellers": [
            {"product_id": pid, "name": names[pid], "units": units[pid], "revenue": f"{revenue[pid]:.2f}"}
            for pid in ranked
        ],
        "low_stock": low,
    }


# --------------------------------------------------------------------------- reading outputs


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def report_row(conn, day: date = DAY) -> dict | None:
    cur = conn.execute(
        "SELECT report_date, total_units, total_revenue, order_count, top_sellers, low_stock,"
        " generated_at, revision, sales_as_of, reconciled FROM reports WHERE report_date = %s",
        (day,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    keys = [d.name for d in cur.description]
    return dict(zip(keys, row))


def snapshot_files(day_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(day_dir.iterdir())}


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def csv_text(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()
