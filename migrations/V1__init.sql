-- stockflow schema, version 1.
-- Never edit this file once applied: add V2__..., V3__... instead.
-- Contract tables (products, suppliers, inventory, orders, events_log,
-- sales_daily, reports) keep the contract's column names; everything else
-- here is stockflow's own bookkeeping.

-- Reference data -------------------------------------------------------------

CREATE TABLE suppliers (
    supplier_id text PRIMARY KEY CHECK (char_length(supplier_id) BETWEEN 1 AND 128),
    name        text NOT NULL,
    contact     text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    product_id    text PRIMARY KEY CHECK (char_length(product_id) BETWEEN 1 AND 128),
    name          text NOT NULL,
    category      text NOT NULL,
    price         numeric(12, 2) NOT NULL CHECK (price >= 0),
    reorder_level integer NOT NULL DEFAULT 0 CHECK (reorder_level >= 0),
    -- The supplier that usually restocks this product (the simulation uses
    -- it); restocks from any known supplier are accepted.
    supplier_id   text REFERENCES suppliers (supplier_id),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX products_created_at ON products (created_at);
CREATE INDEX suppliers_created_at ON suppliers (created_at);

-- Stock ---------------------------------------------------------------------

CREATE TABLE inventory (
    product_id       text PRIMARY KEY REFERENCES products (product_id),
    quantity_on_hand bigint NOT NULL,
    -- Opening balance, as seeded: quantity_on_hand = opening_quantity + the
    -- sum of events_log.delta over the product's applied events (see the
    -- view inventory_reconciliation). A product first seen by the processor
    -- opens at 0.
    opening_quantity bigint NOT NULL DEFAULT 0,
    last_updated     timestamptz NOT NULL DEFAULT now()
);

-- Audit log: one row per applied event_id, one row per rejected message ------

CREATE TABLE events_log (
    log_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        text,
    topic           text NOT NULL,
    kafka_partition integer NOT NULL CHECK (kafka_partition >= 0),
    kafka_offset    bigint NOT NULL CHECK (kafka_offset >= 0),
    raw_event       text,
    status          text NOT NULL CHECK (status IN ('applied', 'rejected')),
    error_code      text CHECK (error_code IN (
                        'malformed_json', 'schema_violation', 'wrong_topic',
                        'invalid_quantity', 'invalid_price', 'unknown_product',
                        'unknown_supplier', 'conflicting_duplicate')),
    error_detail    text,
    event_type      text,
    product_id      text,
    -- Signed change this event made to quantity_on_hand (applied rows only).
    delta           bigint,
    occurred_at     timestamptz,
    -- 128-bit fingerprint of the event's contract content, used to tell a
    -- plain duplicate from a conflicting one across restarts.
    content_hash    bytea,
    epoch           bigint,
    processed_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'applied') = (error_code IS NULL)),
    CHECK (status = 'rejected' OR (event_id IS NOT NULL AND product_id IS NOT NULL
                                   AND delta IS NOT NULL AND content_hash IS NOT NULL)),
    -- One row per Kafka message: a replay after a crash can never add a second.
    UNIQUE (topic, kafka_partition, kafka_offset)
);

-- Each event_id is applied at most once, ever.
CREATE UNIQUE INDEX events_log_applied_event_id ON events_log (event_id) WHERE status = 'applied';
CREATE INDEX events_log_rejected_code ON events_log (error_code) WHERE status = 'rejected';

-- Sales ---------------------------------------------------------------------

CREATE TABLE orders (
    event_id    text PRIMARY KEY,
    order_id    text NOT NULL,
    product_id  text NOT NULL REFERENCES products (product_id),
    quantity    integer NOT NULL CHECK (quantity BETWEEN 1 AND 1000000),
    unit_price  numeric(12, 2) NOT NULL CHECK (unit_price >= 0),
    source      text NOT NULL CHECK (source IN ('online', 'store')),
    customer_id text,
    store_id    text,
    occurred_at timestamptz NOT NULL,
    CHECK ((source = 'online') = (customer_id IS NOT NULL)),
    CHECK ((source = 'store') = (store_id IS NOT NULL))
);

CREATE INDEX orders_occurred_at ON orders (occurred_at);
CREATE INDEX orders_order_id ON orders (order_id);
CREATE INDEX orders_product_id ON orders (product_id);

CREATE TABLE sales_daily (
    day         date NOT NULL,
    product_id  text NOT NULL REFERENCES products (product_id),
    source      text NOT NULL CHECK (source IN ('online', 'store')),
    units       bigint NOT NULL CHECK (units >= 0),
    revenue     numeric(16, 2) NOT NULL CHECK (revenue >= 0),
    -- Number of applied sale events behind this row (the report's order_count).
    order_count bigint NOT NULL DEFAULT 0 CHECK (order_count >= 0),
    -- When the stream processor last changed this row: a report for `day`
    -- generated before this instant is stale (late data) and gets re-issued.
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, product_id, source)
);

CREATE INDEX sales_daily_updated_at ON sales_daily (updated_at);

-- Daily reports (written by the Airflow DAG) ---------------------------------

CREATE TABLE reports (
    report_date   date PRIMARY KEY,
    total_units   bigint NOT NULL,
    total_revenue numeric(16, 2) NOT NULL,
    order_count   bigint NOT NULL,
    top_sellers   jsonb NOT NULL,
    low_stock     jsonb NOT NULL,
    generated_at  timestamptz NOT NULL DEFAULT now(),
    -- 1 for the first issue; incremented each time late data re-issues it.
    revision      integer NOT NULL DEFAULT 1 CHECK (revision >= 1),
    -- Latest sales_daily.updated_at for the day that this report has seen.
    sales_as_of   timestamptz
);

-- Stream processor progress ----------------------------------------------------

-- Next offset to read per input partition, committed in the same transaction
-- as the effects of the messages before it.
CREATE TABLE source_offsets (
    topic           text NOT NULL,
    kafka_partition integer NOT NULL CHECK (kafka_partition >= 0),
    next_offset     bigint NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition)
);

-- Views -----------------------------------------------------------------------

-- Opening balance + applied deltas must equal the stock on hand.
CREATE VIEW inventory_reconciliation AS
SELECT i.product_id,
       i.opening_quantity,
       COALESCE(e.applied_delta, 0) AS applied_delta,
       i.quantity_on_hand,
       i.opening_quantity + COALESCE(e.applied_delta, 0) = i.quantity_on_hand AS balanced
FROM inventory i
LEFT JOIN (
    SELECT product_id, sum(delta) AS applied_delta
    FROM events_log
    WHERE status = 'applied'
    GROUP BY product_id
) e USING (product_id);

CREATE VIEW low_stock AS
SELECT p.product_id, p.name, COALESCE(i.quantity_on_hand, 0) AS quantity_on_hand, p.reorder_level
FROM products p
LEFT JOIN inventory i USING (product_id)
WHERE COALESCE(i.quantity_on_hand, 0) <= p.reorder_level;
