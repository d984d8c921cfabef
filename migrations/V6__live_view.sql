-- The live web view (`stockflow serve`).

-- What each running `stockflow run` process last said about itself, once a
-- second: the view's pipeline health reads it. A row older than a few
-- seconds means the process is gone, or cannot reach PostgreSQL.
CREATE TABLE processor_status (
    process                 integer PRIMARY KEY CHECK (process >= 0),
    started_at              timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL,
    workers                 integer NOT NULL CHECK (workers > 0),
    -- 1 while waiting for an unavailable dependency (the `waiting` metric).
    waiting_kafka           boolean NOT NULL,
    waiting_postgres        boolean NOT NULL,
    -- Messages behind the input partitions' ends, summed over the workers.
    consumer_lag_messages   bigint NOT NULL,
    -- Commit time minus the oldest Kafka timestamp of the last commit.
    lag_seconds             double precision NOT NULL,
    last_committed_epoch    bigint NOT NULL
);

-- The view's "rejected in the last 24 hours" reads recent rejected rows only.
CREATE INDEX events_log_rejected_processed_at ON events_log (processed_at) WHERE status = 'rejected';

-- The view's "commits in the last minute".
CREATE INDEX epochs_committed_at ON epochs (committed_at);
