"""report.html: one self-contained page (inline CSS and SVG, no network)."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stockflow_report.core import Report

CSS = """
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 0; background: #f4f6f8; color: #1d2730; }
main { max-width: 960px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 32px 0 10px; }
.meta { color: #5b6b78; margin: 0 0 20px; }
.badge { display: inline-block; background: #fff4d6; color: #7a5200; border-radius: 10px;
         padding: 1px 9px; font-size: 13px; margin-left: 6px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr)); gap: 12px; }
.card { background: #fff; border-radius: 8px; padding: 14px 16px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.card .label { color: #5b6b78; font-size: 13px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 26px; font-weight: 600; font-variant-numeric: tabular-nums; }
.panel { background: #fff; border-radius: 8px; padding: 14px 16px; box-shadow: 0 1px 2px rgba(0,0,0,.08);
         overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #e3e8ec; }
th { font-size: 13px; color: #5b6b78; text-transform: uppercase; letter-spacing: .04em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.low td.num.qoh { color: #b42318; font-weight: 600; }
.empty { color: #5b6b78; font-style: italic; }
svg text { font: 13px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; fill: #1d2730; }
svg .bar { fill: #2f7dd3; }
svg .value { fill: #1d2730; font-variant-numeric: tabular-nums; }
footer { margin-top: 32px; color: #8595a2; font-size: 12px; }
"""

LABEL_CHARS = 32


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def bar_chart_svg(top_sellers: list[dict]) -> str:
    """Horizontal bar chart of units sold, as inline SVG."""
    if not top_sellers:
        return '<p class="empty">No sales recorded for this day.</p>'
    label_w, bar_w, value_w, row_h, gap = 260, 520, 110, 24, 8
    width = label_w + bar_w + value_w
    height = len(top_sellers) * (row_h + gap) + gap
    peak = max(int(t["units"]) for t in top_sellers) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-label="Top sellers by units sold">'
    ]
    for i, t in enumerate(top_sellers):
        y = gap + i * (row_h + gap)
        w = max(1, round(bar_w * int(t["units"]) / peak))
        label = f'{i + 1}. {_short(str(t["name"]))}'
        tip = f'{t["name"]} ({t["product_id"]}): {t["units"]} units, {t["revenue"]}'
        parts.append(
            f'<g><title>{_e(tip)}</title>'
            f'<text x="{label_w - 8}" y="{y + row_h / 2 + 4:.0f}" text-anchor="end">{_e(label)}</text>'
            f'<rect class="bar" x="{label_w}" y="{y}" width="{w}" height="{row_h}" rx="3"/>'
            f'<text class="value" x="{label_w + w + 6}" y="{y + row_h / 2 + 4:.0f}">{_e(t["units"])}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _top_table(top_sellers: list[dict]) -> str:
    if not top_sellers:
        return ""
    rows = "".join(
        f'<tr><td class="num">{rank}</td><td>{_e(t["product_id"])}</td><td>{_e(t["name"])}</td>'
        f'<td class="num">{_e(t["units"])}</td><td class="num">{_e(t["revenue"])}</td></tr>'
        for rank, t in enumerate(top_sellers, start=1)
    )
    return (
        '<table><thead><tr><th class="num">Rank</th><th>Product</th><th>Name</th>'
        '<th class="num">Units</th><th class="num">Revenue</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def _low_table(low_stock: list[dict]) -> str:
    if not low_stock:
        return '<p class="empty">No product is at or below its reorder level.</p>'
    rows = "".join(
        f'<tr class="low"><td>{_e(x["product_id"])}</td><td>{_e(x["name"])}</td>'
        f'<td class="num qoh">{_e(x["quantity_on_hand"])}</td><td class="num">{_e(x["reorder_level"])}</td></tr>'
        for x in low_stock
    )
    return (
        '<table><thead><tr><th>Product</th><th>Name</th><th class="num">On hand</th>'
        '<th class="num">Reorder level</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def _time(value, element_id: str) -> str:
    """<time> with the exact RFC 3339 instant (as in summary.json) and a readable text."""
    from stockflow_report.core import iso_utc

    iso = iso_utc(value)
    readable = f"{iso[:10]} {iso[11:19]} UTC"
    return f'<time id="{element_id}" datetime="{_e(iso)}">{_e(readable)}</time>'


def _reconciled_text(reconciled: bool | None) -> str:
    """The reconciliation's outcome for people (contract 5.7)."""
    if reconciled is None:
        return "not checked"
    return "yes" if reconciled else "NO: run stockflow reconcile"


def render_html(report: Report) -> str:
    from stockflow_report.core import money

    day = report.report_date.isoformat()
    if report.revised_at is not None:
        status = (
            f'Revision {report.revision}<span class="badge">revised</span> '
            f"&middot; last revised {_time(report.revised_at, 'revised-at')}"
        )
    else:
        status = f"Revision {report.revision} &middot; generated {_time(report.generated_at, 'generated-at')}"
    cards = [
        ("Units sold", str(report.total_units), "total-units"),
        ("Revenue", money(report.total_revenue), "total-revenue"),
        ("Orders", str(report.order_count), "order-count"),
        ("Low-stock products", str(len(report.low_stock)), "low-stock-count"),
        ("Reconciled", _reconciled_text(report.reconciled), "reconciled"),
    ]
    cards_html = "".join(
        f'<div class="card"><div class="label">{_e(label)}</div>'
        f'<div class="value" id="{key}">{_e(value)}</div></div>'
        for label, value, key in cards
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stockflow daily report {_e(day)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<h1>Daily report <span id="report-date">{_e(day)}</span></h1>
<p class="meta">UTC day {_e(day)} &middot; {status}</p>
<section class="cards">{cards_html}</section>
<h2>Top sellers</h2>
<div class="panel">{bar_chart_svg(report.top_sellers)}{_top_table(report.top_sellers)}</div>
<h2>Low stock</h2>
<div class="panel">{_low_table(report.low_stock)}</div>
<footer>stockflow &middot; figures from sales_daily; low stock = quantity on hand &le; reorder level, at generation time.</footer>
</main>
</body>
</html>
"""
