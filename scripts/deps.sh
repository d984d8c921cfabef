#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages stockflow needs to build, test and run
# locally, when missing: a C toolchain, cmake + libssl (the bundled
# librdkafka, with TLS and SASL/SCRAM, built without libcurl, though one of its
# files includes curl's header under `#ifdef` of a macro defined as 0; mimalloc), the openssl command (the
# SASL_SSL test makes its CA with it), PostgreSQL (server and client), python3-venv (Airflow, compose check),
# Java 17+ with Maven for Apache Kafka (scripts/kafka.sh assembles the
# broker from Maven Central), unless java and mvn are already on the PATH;
# Chromium, and Node.js with npm unless on the PATH, for the live view's
# browser test (its driver, playwright-core, comes from the npm registry
# into tests/browser/node_modules, pinned by package-lock.json); and
# Prometheus for promtool (the alert rules' check); procps (kill, pgrep:
# the fault tests signal processes and find a private server's children).
# Idempotent and quick when everything is there. Uses sudo when not root.
set -euo pipefail
need=()
for pkg in build-essential cmake libssl-dev libcurl4-openssl-dev openssl pkg-config zlib1g-dev postgresql postgresql-client python3-venv chromium prometheus procps; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v npm >/dev/null || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    echo "deps: apt-get install ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
browser="$(dirname "$0")/../tests/browser"
# npm ci writes node_modules/.package-lock.json last: newer than the lock
# file means installed from it.
if [ ! "$browser/node_modules/.package-lock.json" -nt "$browser/package-lock.json" ]; then
    echo "deps: npm ci in tests/browser" >&2
    (cd "$browser" && npm ci --no-audit --no-fund --silent)
fi
# cargo-machete, the unused-dependency check of scripts/test.sh (built from
# crates.io once per machine, about a minute; pinned so the check is stable).
MACHETE_VERSION=0.9.2
if ! cargo machete --version 2>/dev/null | grep -q "$MACHETE_VERSION"; then
    echo "deps: cargo install cargo-machete $MACHETE_VERSION" >&2
    cargo install --quiet --locked cargo-machete --version "$MACHETE_VERSION"
fi
