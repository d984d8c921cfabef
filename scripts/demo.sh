#!/usr/bin/env bash
# The end-to-end demo on a fresh Debian/Ubuntu machine (README):
# installs what is missing, starts PostgreSQL and Apache Kafka on
# loopback, builds stockflow, creates the schema, catalog and topics,
# produces a day of simulated traffic (with duplicates and bad messages),
# runs the stream processor until it has committed everything, shows what
# happened, and runs the Airflow daily report for that day.
#
#   DEMO_EVENTS=20000     how many messages to produce
#   DEMO_DAY=YYYY-MM-DD   the day the traffic happens on (default: yesterday, UTC)
#   DEMO_SKIP_AIRFLOW=1   skip the Airflow report (it installs Airflow into .venv/airflow on first use)
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS="${DEMO_EVENTS:-20000}"
DAY="${DEMO_DAY:-$(date -u -d yesterday +%F)}"

scripts/deps.sh
scripts/services.sh up >/dev/null
eval "$(scripts/services.sh env)"
export DATABASE_URL KAFKA_BROKERS

echo "demo: building stockflow (release; the first build takes a few minutes)"
cargo build --release --locked --quiet --bin stockflow
sf="${CARGO_TARGET_DIR:-target}/release/stockflow"

topics_out="$($sf topics --partitions 3)"
echo "$topics_out"
if grep -q "created" <<<"$topics_out" \
    && [ "$(psql -X -tA "$DATABASE_URL" -c "SELECT EXISTS (SELECT 1 FROM events_log)" 2>/dev/null)" = t ]; then
    # New topics (Kafka's data directory was deleted, or tansu, which keeps
    # topics in memory, restarted) next to a database that logged the old
    # topics: stockflow run
    # would refuse to resume, and the old log's (topic, partition, offset)
    # keys collide with the new topics'. The demo starts over with a fresh
    # database in the private demo cluster.
    db="${DATABASE_URL##*/}"; db="${db%%\?*}"
    echo "demo: the topics are new but database $db logged older ones: recreating it"
    psql -X -q "${DATABASE_URL%/*}/postgres" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" -c "CREATE DATABASE \"$db\""
fi
$sf migrate --roles
$sf seed --products 500 --suppliers 40
# The processor logs in as stockflow_run, a member of stockflow_processor
# (least privilege: its own tables, no DDL; README "Roles").
psql -X -q "$DATABASE_URL" -c "DO \$\$ BEGIN CREATE ROLE stockflow_run LOGIN IN ROLE stockflow_processor; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$"
run_url="${DATABASE_URL/\/\/postgres@/\/\/stockflow_run@}"
echo "demo: producing $EVENTS events on $DAY (2% exact duplicates, 1% invalid: every rejection code)"
$sf produce --count "$EVENTS" --start "$DAY" --days 1 --duplicate-ratio 0.02 --invalid-ratio 0.01
echo "demo: stockflow run --workers 2 --exit-when-idle 2"
DATABASE_URL="$run_url" RUST_LOG="${RUST_LOG:-warn,stockflow::run=info}" $sf run --workers 2 --exit-when-idle 2

psql -X -q "$DATABASE_URL" <<'SQL'
\pset footer off
\echo
\echo '== what happened to every message'
SELECT status, coalesce(error_code, '-') AS code, count(*) AS messages
FROM events_log GROUP BY 1, 2 ORDER BY 1, 2;
\echo '== stock of the ten best sellers'
SELECT p.product_id, p.name, i.quantity_on_hand, p.reorder_level, s.units AS units_sold
FROM (SELECT product_id, sum(units) AS units FROM sales_daily GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10) s
JOIN products p USING (product_id) JOIN inventory i USING (product_id)
ORDER BY s.units DESC, p.product_id;
\echo '== low stock (quantity_on_hand <= reorder_level), first 15'
SELECT product_id, name, quantity_on_hand, reorder_level FROM low_stock ORDER BY product_id LIMIT 15;
SELECT count(*) AS low_stock_products FROM low_stock;
\echo '== dead-letter records by code'
SELECT error_code AS code, count(*) FROM events_log WHERE status = 'rejected' GROUP BY 1 ORDER BY 1;
\echo '== sales per day and channel'
SELECT day, source, sum(units) AS units, sum(revenue) AS revenue, sum(order_count) AS orders
FROM sales_daily GROUP BY 1, 2 ORDER BY 1, 2;
\echo '== reconciliation: opening stock + applied events = stock on hand'
SELECT count(*) FILTER (WHERE balanced) AS balanced, count(*) FILTER (WHERE NOT balanced) AS unbalanced
FROM inventory_reconciliation;
SQL

if [ "${DEMO_SKIP_AIRFLOW:-0}" != 1 ]; then
    echo
    echo "demo: Airflow daily report for $DAY (installs Airflow into .venv/airflow on first use)"
    scripts/airflow.sh report "$DAY"
fi
