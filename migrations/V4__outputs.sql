-- Second edition: exactly-once outputs, stock alerts, hourly sales.

-- The one definition of "low" (contract 5.3): at or below the reorder level.
-- The low_stock view, the commit's alert check and the inventory_updates
-- flag all call it.
CREATE FUNCTION stock_is_low(quantity_on_hand bigint, reorder_level integer) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN quantity_on_hand <= reorder_level;

CREATE OR REPLACE VIEW low_stock AS
SELECT p.product_id, p.name, COALESCE(i.quantity_on_hand, 0) AS quantity_on_hand, p.reorder_level
FROM products p
LEFT JOIN inventory i USING (product_id)
WHERE stock_is_low(COALESCE(i.quantity_on_hand, 0), p.reorder_level);

-- The key of the input message (NULL when it had none or an empty one),
-- kept for rejected messages: their dlq record carries it, also when it is
-- re-sent after a crash, and a redrive re-sends it unchanged.
ALTER TABLE events_log ADD COLUMN kafka_key bytea;

-- Fencing on the database side: each `stockflow run` (process 0) takes the
-- next generation at start, and every commit checks it still holds it. A
-- processor started later takes over; the older one stops at its next
-- commit instead of interleaving its commits with the newer one's.
ALTER TABLE stream_progress ADD COLUMN generation bigint NOT NULL DEFAULT 0;

-- One row per crossing of a reorder level, in commit order per product.
CREATE TABLE stock_alerts (
    alert_id         text PRIMARY KEY,
    product_id       text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('low', 'recovered')),
    quantity_on_hand bigint NOT NULL,
    reorder_level    integer NOT NULL,
    -- The commit's time: events_log.processed_at of the same commit.
    raised_at        timestamptz NOT NULL,
    -- The commit (epoch) that raised it: re-publishing after a crash reads
    -- the alerts of the commits whose messages are not in Kafka yet.
    epoch            bigint NOT NULL
);
CREATE INDEX stock_alerts_epoch ON stock_alerts (epoch);
CREATE INDEX stock_alerts_product ON stock_alerts (product_id, raised_at);

-- Whether the last alert of a product said low: the state a commit compares
-- the committed stock with. No row: not low (a product not yet known).
CREATE TABLE stock_alert_state (
    product_id text PRIMARY KEY REFERENCES products ON DELETE CASCADE,
    low        boolean NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Sales per UTC hour, maintained in the same transaction as sales_daily;
-- the hours of a day sum to the day's row.
CREATE TABLE sales_hourly (
    hour        timestamptz NOT NULL CHECK (extract(epoch FROM hour)::bigint % 3600 = 0),
    product_id  text NOT NULL REFERENCES products,
    source      text NOT NULL CHECK (source IN ('online', 'store')),
    units       bigint NOT NULL,
    revenue     numeric NOT NULL,
    order_count bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (hour, product_id, source)
);
