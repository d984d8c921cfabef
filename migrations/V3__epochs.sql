-- One row per committed epoch: what it held and when its transaction
-- finished (clock_timestamp() taken by its last statement, just before
-- COMMIT). Operators read throughput and latency from it; the latency
-- benchmark joins it with events_log.kafka_timestamp.
CREATE TABLE epochs (
    epoch        bigint PRIMARY KEY,
    messages     integer NOT NULL CHECK (messages >= 0),
    applied      integer NOT NULL CHECK (applied >= 0),
    duplicates   integer NOT NULL CHECK (duplicates >= 0),
    rejected     integer NOT NULL CHECK (rejected >= 0),
    started_at   timestamptz NOT NULL,
    committed_at timestamptz NOT NULL
);
