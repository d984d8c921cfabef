#!/usr/bin/env bash
# The test command (README): formatting, lints, every test against the real
# services named by DATABASE_URL / KAFKA_BROKERS (start them with
# scripts/services.sh up), the compose file check and the Airflow tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${DATABASE_URL:-}" ] || [ -z "${KAFKA_BROKERS:-}" ]; then
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

echo "test: docker-compose.yml against the Compose JSON Schema"
if [ ! -x .venv/tools/bin/python ]; then
    python3 -m venv .venv/tools
    .venv/tools/bin/pip install --quiet pyyaml jsonschema
fi
.venv/tools/bin/python scripts/validate_compose.py

if [ -x scripts/airflow.sh ]; then
    echo "test: Airflow DAG tests"
    scripts/airflow.sh test
fi
