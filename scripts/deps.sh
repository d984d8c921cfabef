#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages stockflow needs to build, test and run
# locally, when missing: a C toolchain, cmake + libcurl + libssl (the bundled
# librdkafka, with TLS and SASL/SCRAM; mimalloc), the openssl command (the
# SASL_SSL test makes its CA with it), PostgreSQL (server and client), python3-venv (Airflow, compose check),
# and Java 17+ with Maven for Apache Kafka (scripts/kafka.sh assembles the
# broker from Maven Central), unless java and mvn are already on the PATH.
# Idempotent and quick when everything is there. Uses sudo when not root.
set -euo pipefail
need=()
for pkg in build-essential cmake libcurl4-openssl-dev libssl-dev openssl pkg-config zlib1g-dev postgresql postgresql-client python3-venv; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
echo "deps: apt-get install ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${need[@]}" >/dev/null
