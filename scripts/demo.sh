#!/usr/bin/env bash
# The end-to-end demo on a fresh Debian/Ubuntu machine (README):
# installs what is missing, starts PostgreSQL and the Kafka-API broker on
# loopback, builds stockflow, creates the schema, catalog and topics,
# produces a day of simulated traffic (with duplicates and bad messages),
# and shows what landed.
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS="${DEMO_EVENTS:-20000}"
DAY="${DEMO_DAY:-$(date -u -d yesterday +%F)}"

need=()
for pkg in cmake libcurl4-openssl-dev libssl-dev pkg-config zlib1g-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    echo "demo: installing ${need[*]}"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

scripts/services.sh up >/dev/null
eval "$(scripts/services.sh env)"
export DATABASE_URL KAFKA_BROKERS

echo "demo: building stockflow (release)"
cargo build --release --locked --quiet --bin stockflow
sf=target/release/stockflow

$sf migrate
$sf seed --products 500 --suppliers 40
$sf topics --partitions 3
echo "demo: producing $EVENTS events for $DAY (1% duplicates, 1% invalid)"
$sf produce --count "$EVENTS" --start "$DAY" --days 1 --duplicate-ratio 0.01 --invalid-ratio 0.01

psql -X -q "$DATABASE_URL" <<'SQL'
\echo
\echo 'catalog:'
SELECT (SELECT count(*) FROM products) AS products,
       (SELECT count(*) FROM suppliers) AS suppliers,
       (SELECT sum(quantity_on_hand) FROM inventory) AS units_on_hand;
SQL
