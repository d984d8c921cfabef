-- What the stream processor needs beyond V1.

-- Stock level of the product right after the commit that applied this event
-- (what its inventory_updates message carried), so that messages can be
-- re-published after a crash exactly as they were first meant.
ALTER TABLE events_log ADD COLUMN quantity_after bigint;
-- raw_event holds 'base64:' + base64 when the value was not UTF-8 (or held
-- a NUL, which text cannot store); this flag says so unambiguously.
ALTER TABLE events_log ADD COLUMN raw_is_base64 boolean NOT NULL DEFAULT false;
-- The Kafka message timestamp (producer create time), for lag and latency.
ALTER TABLE events_log ADD COLUMN kafka_timestamp timestamptz;

-- Re-publishing after a crash reads the rows of unpublished epochs.
CREATE INDEX events_log_epoch ON events_log (epoch);
-- Start-up loads the recent applied ids into the dedup horizon.
CREATE INDEX events_log_applied_occurred_at ON events_log (occurred_at) WHERE status = 'applied';

-- One row: the last epoch whose inventory_updates and dlq messages the
-- broker acknowledged. Epochs after it are re-published on start.
CREATE TABLE stream_progress (
    id              integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    published_epoch bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO stream_progress (id, published_epoch) VALUES (1, 0);
