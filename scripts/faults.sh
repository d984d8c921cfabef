#!/usr/bin/env bash
# The fault suite: every fault the processor must survive, each checked
# against an independent reference (nothing lost, nothing applied twice,
# every output message exactly once under read_committed):
#
#   scripts/faults.sh [short|long]
#
#   kill -9 of the processor at random moments during live traffic
#       (tests/crash.rs; long: 20 kills during 200 000 events, 2 workers)
#   PostgreSQL killed (pg_ctl stop -m immediate) and restarted, frozen
#       (SIGSTOP; long: 30 s), out of disk space (tests/db_faults.rs)
#   the broker killed and restarted, down at the start (tests/broker_faults.rs)
#   SIGTERM while PostgreSQL or the broker is down (tests/outage_stop.rs)
#
# short (the default) is what CI runs as part of scripts/test.sh. Starts
# the local PostgreSQL and Kafka like the test command (or uses
# DATABASE_URL and KAFKA_BROKERS when both are set). Needs root for the
# disk-space fault (it mounts a small tmpfs).
set -euo pipefail
cd "$(dirname "$0")/.."
form="${1:-short}"
case "$form" in
    short|long) ;;
    *) echo "faults: usage: scripts/faults.sh [short|long]" >&2; exit 2 ;;
esac
if [ -z "${DATABASE_URL:-}" ] || [ -z "${KAFKA_BROKERS:-}" ]; then
    scripts/services.sh up >/dev/null
    eval "$(scripts/services.sh env)"
    export DATABASE_URL KAFKA_BROKERS
fi
export STOCKFLOW_FAULTS="$form"
echo "faults: $form form"
start=$(date +%s)
log="$(mktemp)"
set +e
cargo test --locked --test crash --test db_faults --test broker_faults --test outage_stop -- --nocapture 2>&1 \
    | tee "$log" \
    | grep --line-buffered -E "^test |test result|Checked|crash test|frozen|filled|ended|^thread|panicked|assert"
status=${PIPESTATUS[0]}
set -e
echo "faults: the whole output is in $log"
echo "faults: $form form done in $(( $(date +%s) - start )) s (exit $status)"
exit "$status"
