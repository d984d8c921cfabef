-- Second edition, history at scale (issue 14): the tables that grow with
-- every event are partitioned by the day of their commit, so the indexes
-- the processor writes stay the size of one day; old days can be archived
-- to files and dropped (`stockflow archive`), their sums kept in
-- `archived_rollup` so that reconcile and stock-as-of stay exact.

-- 1. Partitioned events_log and orders ----------------------------------------

DROP VIEW inventory_reconciliation;
ALTER TABLE dlq_redrives DROP CONSTRAINT dlq_redrives_log_id_fkey;
ALTER TABLE events_log RENAME TO events_log_v6;
ALTER TABLE orders RENAME TO orders_v6;
ALTER INDEX events_log_pkey RENAME TO events_log_v6_pkey;
ALTER INDEX orders_pkey RENAME TO orders_v6_pkey;
ALTER INDEX events_log_epoch RENAME TO events_log_v6_epoch;
ALTER INDEX events_log_applied_occurred_at RENAME TO events_log_v6_applied_occurred_at;
ALTER INDEX events_log_applied_event_id RENAME TO events_log_v6_applied_event_id;
ALTER INDEX events_log_rejected_code RENAME TO events_log_v6_rejected_code;
ALTER INDEX events_log_rejected_processed_at RENAME TO events_log_v6_rejected_processed_at;
ALTER INDEX orders_occurred_at RENAME TO orders_v6_occurred_at;
ALTER INDEX orders_order_id RENAME TO orders_v6_order_id;
ALTER INDEX orders_product_id RENAME TO orders_v6_product_id;

-- Same columns and checks as before (V1, V2, V4). No key spans the whole
-- table any more: a unique index of a partitioned table must hold the
-- partition key, which would make it unique per instant, not per message.
-- What was unique stays unique as follows:
--   * one row per (topic, partition, offset): the commit writes a message's
--     row in the transaction that moves `source_offsets` past it, and a
--     retried commit whose offsets are already stored writes nothing;
--   * one applied row per event_id: the dedup state (memory inside the
--     horizon, a look-up in every held partition beyond it) decides; each
--     day's partition also has a unique index on its applied event_ids
--     (`stockflow_ensure_partitions`), the database's own backstop inside
--     a day.
CREATE TABLE events_log (
    log_id          bigint GENERATED ALWAYS AS IDENTITY,
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
    delta           bigint,
    occurred_at     timestamptz,
    content_hash    bytea,
    epoch           bigint,
    processed_at    timestamptz NOT NULL DEFAULT now(),
    quantity_after  bigint,
    raw_is_base64   boolean NOT NULL DEFAULT false,
    kafka_timestamp timestamptz,
    kafka_key       bytea,
    CHECK ((status = 'applied') = (error_code IS NULL)),
    CHECK (status = 'rejected' OR (event_id IS NOT NULL AND product_id IS NOT NULL
                                   AND delta IS NOT NULL AND content_hash IS NOT NULL)),
    PRIMARY KEY (log_id, processed_at)
) PARTITION BY RANGE (processed_at);

CREATE INDEX events_log_message ON events_log (topic, kafka_partition, kafka_offset);
CREATE INDEX events_log_epoch ON events_log (epoch);
CREATE INDEX events_log_applied_occurred_at ON events_log (occurred_at) WHERE status = 'applied';
CREATE INDEX events_log_rejected_code ON events_log (error_code) WHERE status = 'rejected';
CREATE INDEX events_log_rejected_processed_at ON events_log (processed_at) WHERE status = 'rejected';

-- `processed_at`: the commit's time, as in events_log (the partition key;
-- the same value as the event's events_log row).
CREATE TABLE orders (
    event_id     text NOT NULL,
    order_id     text NOT NULL,
    product_id   text NOT NULL REFERENCES products (product_id),
    quantity     integer NOT NULL CHECK (quantity BETWEEN 1 AND 1000000),
    unit_price   numeric(12, 2) NOT NULL CHECK (unit_price >= 0),
    source       text NOT NULL CHECK (source IN ('online', 'store')),
    customer_id  text,
    store_id     text,
    occurred_at  timestamptz NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((source = 'online') = (customer_id IS NOT NULL)),
    CHECK ((source = 'store') = (store_id IS NOT NULL))
) PARTITION BY RANGE (processed_at);

CREATE INDEX orders_occurred_at ON orders (occurred_at);
CREATE INDEX orders_order_id ON orders (order_id);
CREATE INDEX orders_product_id ON orders (product_id);

-- The partitions of one UTC day of both tables, with the per-day unique
-- indexes, for every day from `from_day` to `to_day`; returns how many
-- partitions it created. Owned by the schema's owner and run with its
-- rights (SECURITY DEFINER), so that the processor, which has no DDL of
-- its own, can make sure the coming days exist (at start and when its
-- commits reach a new day). A day that has been archived
-- (`archived_partitions`) is never made again: a commit dated there
-- fails rather than writing history nobody would see.
CREATE FUNCTION stockflow_ensure_partitions(from_day date, to_day date)
    RETURNS integer
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path FROM CURRENT
    AS $$
DECLARE
    d date;
    made integer := 0;
    lo timestamptz;
    hi timestamptz;
    t text;
BEGIN
    FOR d IN SELECT g::date FROM generate_series(from_day, to_day, interval '1 day') g LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM archived_partitions a WHERE a.day = d);
        lo := d::timestamp AT TIME ZONE 'UTC';
        hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
        FOREACH t IN ARRAY ARRAY['events_log', 'orders'] LOOP
            CONTINUE WHEN to_regclass(t || '_' || to_char(d, 'YYYYMMDD')) IS NOT NULL;
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                               t || '_' || to_char(d, 'YYYYMMDD'), t, lo, hi);
                IF t = 'events_log' THEN
                    EXECUTE format('CREATE UNIQUE INDEX %I ON %I (event_id) WHERE status = ''applied''',
                                   t || '_' || to_char(d, 'YYYYMMDD') || '_applied_event_id',
                                   t || '_' || to_char(d, 'YYYYMMDD'));
                ELSE
                    EXECUTE format('CREATE UNIQUE INDEX %I ON %I (event_id)',
                                   t || '_' || to_char(d, 'YYYYMMDD') || '_event_id',
                                   t || '_' || to_char(d, 'YYYYMMDD'));
                END IF;
                made := made + 1;
            EXCEPTION WHEN duplicate_table OR unique_violation THEN
                NULL; -- made meanwhile by a concurrent call
            END;
        END LOOP;
    END LOOP;
    RETURN made;
END
$$;

-- 2. Archives ---------------------------------------------------------------

-- One row per archived (and dropped) partition: its day and its file.
-- The days archived are always the oldest ones (`stockflow archive
-- --before DATE` takes every day before DATE).
CREATE TABLE archived_partitions (
    table_name  text NOT NULL CHECK (table_name IN ('events_log', 'orders')),
    day         date NOT NULL,
    -- The archive's directory, as given to `stockflow archive --to`.
    location    text NOT NULL,
    -- The file, relative to `location`.
    file        text NOT NULL,
    rows        bigint NOT NULL CHECK (rows >= 0),
    -- SHA-256 of the file, lower-case hex.
    sha256      text NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, day)
);

-- The sums of the archived applied events, at the grain reconcile needs:
-- per product, kind, event hour and commit hour (the opening balances of
-- every archived boundary, rolled forward, with the sales and hours they
-- carried). `first_occurred_at`/`last_occurred_at` bound the events inside
-- an event hour, so that stock-as-of knows whether an instant inside that
-- hour splits them (it can then not be answered exactly).
CREATE TABLE archived_rollup (
    product_id        text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('online', 'store', 'restock')),
    ev_hour           timestamptz NOT NULL,
    commit_hour       timestamptz NOT NULL,
    delta             bigint NOT NULL,
    events            bigint NOT NULL,
    -- Sum of quantity x unit_price of the sales (NULL for restocks).
    revenue           numeric,
    -- Applied sales that had no orders row when archived.
    no_order          bigint NOT NULL DEFAULT 0,
    first_occurred_at timestamptz NOT NULL,
    last_occurred_at  timestamptz NOT NULL,
    PRIMARY KEY (product_id, kind, ev_hour, commit_hour)
);
CREATE INDEX archived_rollup_ev_hour ON archived_rollup (ev_hour);

-- The first instant of commit time still held in events_log: midnight
-- (UTC) after the last day archived; NULL when nothing was ever archived.
CREATE FUNCTION history_held_from() RETURNS timestamptz
    LANGUAGE sql STABLE
    RETURN (SELECT (max(day) + 1)::timestamp AT TIME ZONE 'UTC' FROM archived_partitions);

-- 3. Move the existing rows --------------------------------------------------

SELECT stockflow_ensure_partitions(d, d)
FROM (SELECT DISTINCT (processed_at AT TIME ZONE 'UTC')::date AS d FROM events_log_v6) days;
SELECT stockflow_ensure_partitions((now() AT TIME ZONE 'UTC')::date, (now() AT TIME ZONE 'UTC')::date + 7);

INSERT INTO events_log (log_id, event_id, topic, kafka_partition, kafka_offset, raw_event, status,
                        error_code, error_detail, event_type, product_id, delta, occurred_at,
                        content_hash, epoch, processed_at, quantity_after, raw_is_base64,
                        kafka_timestamp, kafka_key)
OVERRIDING SYSTEM VALUE
SELECT log_id, event_id, topic, kafka_partition, kafka_offset, raw_event, status,
       error_code, error_detail, event_type, product_id, delta, occurred_at,
       content_hash, epoch, processed_at, quantity_after, raw_is_base64,
       kafka_timestamp, kafka_key
FROM events_log_v6;
SELECT setval(pg_get_serial_sequence('events_log', 'log_id'),
              greatest((SELECT max(log_id) FROM events_log_v6), 0) + 1, false);

INSERT INTO orders (event_id, order_id, product_id, quantity, unit_price, source, customer_id,
                    store_id, occurred_at, processed_at)
SELECT o.event_id, o.order_id, o.product_id, o.quantity, o.unit_price, o.source, o.customer_id,
       o.store_id, o.occurred_at, e.processed_at
FROM orders_v6 o
JOIN events_log_v6 e ON e.event_id = o.event_id AND e.status = 'applied';

DROP TABLE orders_v6;
DROP TABLE events_log_v6;

-- 4. What reads the history ---------------------------------------------------

-- Opening balance + applied deltas (held and archived) = stock on hand.
CREATE VIEW inventory_reconciliation AS
SELECT i.product_id,
       i.opening_quantity,
       COALESCE(e.applied_delta, 0) AS applied_delta,
       i.quantity_on_hand,
       i.opening_quantity + COALESCE(e.applied_delta, 0) = i.quantity_on_hand AS balanced
FROM inventory i
LEFT JOIN (
    SELECT product_id, sum(delta) AS applied_delta
    FROM (SELECT product_id, delta FROM events_log WHERE status = 'applied'
          UNION ALL
          SELECT product_id, delta FROM archived_rollup) d
    GROUP BY product_id
) e USING (product_id);

-- As in V5, over the held events and the archived sums. An instant that
-- cannot be answered exactly is an error (SQLSTATE 22023) naming why:
-- in commit time, one before the oldest instant held; in event time, one
-- inside an hour whose archived events lie on both sides of it (the
-- archive kept their sum per hour, not each one).
CREATE OR REPLACE FUNCTION stock_as_of(t timestamptz, processed boolean DEFAULT false)
    RETURNS TABLE (product_id text, quantity_on_hand bigint)
    LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    held timestamptz := history_held_from();
    h timestamptz := date_trunc('hour', t, 'UTC');
    split record;
BEGIN
    IF held IS NOT NULL AND processed AND t < held THEN
        RAISE EXCEPTION '% is before the oldest instant held in commit time (%): older commits are archived',
            to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            to_char(held AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
            USING ERRCODE = '22023';
    END IF;
    IF held IS NOT NULL AND NOT processed THEN
        SELECT min(a.first_occurred_at) AS lo, max(a.last_occurred_at) AS hi INTO split
        FROM archived_rollup a
        WHERE a.ev_hour = h AND a.first_occurred_at <= t AND a.last_occurred_at > t;
        IF split.lo IS NOT NULL THEN
            RAISE EXCEPTION '% falls among archived events of that hour (% to %): the archive keeps their sum per hour; ask for an instant before the first or at or after the last',
                to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                to_char(split.lo AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                to_char(split.hi AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                USING ERRCODE = '22023';
        END IF;
    END IF;
    RETURN QUERY
    WITH deltas AS (
        SELECT s.product_id, s.delta
        FROM stock_hourly s
        WHERE s.axis = CASE WHEN processed THEN 'commit' ELSE 'event' END AND s.hour < h
        UNION ALL
        SELECT e.product_id, e.delta
        FROM events_log e
        WHERE NOT processed AND e.status = 'applied' AND e.occurred_at >= h AND e.occurred_at <= t
        UNION ALL
        SELECT a.product_id, a.delta
        FROM archived_rollup a
        WHERE NOT processed AND a.ev_hour = h AND a.last_occurred_at <= t
        UNION ALL
        SELECT e.product_id, e.delta
        FROM epochs x JOIN events_log e ON e.epoch = x.epoch
        WHERE processed AND x.started_at >= h AND x.started_at <= t
          AND e.status = 'applied' AND e.processed_at >= h AND e.processed_at <= t),
    sums AS (SELECT d.product_id, sum(d.delta) AS delta FROM deltas d GROUP BY d.product_id)
    SELECT p.product_id, (coalesce(i.opening_quantity, 0) + coalesce(s.delta, 0))::bigint
    FROM products p
    LEFT JOIN inventory i ON i.product_id = p.product_id
    LEFT JOIN sums s ON s.product_id = p.product_id;
END
$$;

-- As in V5, with the archived events' sums (archived_rollup) standing in
-- for the events archived. Orders are joined on their commit time too, so
-- that each day's partitions join with each other only.
CREATE OR REPLACE FUNCTION reconcile_differences()
    RETURNS TABLE (table_name text, key text, actual text, expected text)
    LANGUAGE sql STABLE
    SET work_mem = '256MB'
    SET enable_partitionwise_join = on
    SET enable_partitionwise_aggregate = on
    AS $$
    WITH g AS MATERIALIZED (
        -- One pass over the applied events held, grouped as finely as any
        -- check needs, plus the archived events' sums at the same grain.
        SELECT product_id, source, ev_hour, commit_hour, sum(delta) AS delta, sum(events) AS events,
               sum(revenue) AS revenue, sum(no_order) AS no_order
        FROM (
            SELECT e.product_id,
                   CASE e.event_type WHEN 'online_order' THEN 'online' WHEN 'store_sale' THEN 'store' END AS source,
                   date_trunc('hour', e.occurred_at, 'UTC') AS ev_hour,
                   date_trunc('hour', e.processed_at, 'UTC') AS commit_hour,
                   sum(e.delta) AS delta,
                   count(*) AS events,
                   sum(-e.delta * o.unit_price) AS revenue,
                   count(*) FILTER (WHERE e.event_type <> 'supplier_restock' AND o.event_id IS NULL) AS no_order
            FROM events_log e
            LEFT JOIN orders o ON o.event_id = e.event_id AND o.processed_at = e.processed_at
                              AND e.event_type <> 'supplier_restock'
            WHERE e.status = 'applied'
            GROUP BY 1, 2, 3, 4
            UNION ALL
            SELECT a.product_id, nullif(a.kind, 'restock'), a.ev_hour, a.commit_hour, a.delta, a.events,
                   a.revenue, a.no_order
            FROM archived_rollup a) held_and_archived
        GROUP BY 1, 2, 3, 4),
    stock AS (SELECT product_id, sum(delta) AS delta FROM g GROUP BY 1),
    hourly_expected AS (
        SELECT ev_hour AS hour, product_id, source, -sum(delta) AS units,
               coalesce(sum(revenue), 0) AS revenue, sum(events) AS order_count
        FROM g WHERE source IS NOT NULL GROUP BY 1, 2, 3),
    daily_expected AS (
        SELECT (hour AT TIME ZONE 'UTC')::date AS day, product_id, source, sum(units) AS units,
               sum(revenue) AS revenue, sum(order_count) AS order_count
        FROM hourly_expected GROUP BY 1, 2, 3),
    hours_of_days AS (
        SELECT (hour AT TIME ZONE 'UTC')::date AS day, product_id, source, sum(units) AS units,
               sum(revenue) AS revenue, sum(order_count) AS order_count
        FROM sales_hourly GROUP BY 1, 2, 3),
    sh_expected AS (
        SELECT 'event'::text AS axis, ev_hour AS hour, product_id, sum(delta) AS delta, sum(events) AS events
        FROM g GROUP BY 2, 3
        UNION ALL
        SELECT 'commit', commit_hour, product_id, sum(delta), sum(events) FROM g GROUP BY 2, 3)
    SELECT 'inventory', 'product_id=' || k.product_id,
           'quantity_on_hand=' || coalesce(i.quantity_on_hand::text, 'none'),
           'quantity_on_hand=' || (coalesce(i.opening_quantity, 0) + coalesce(s.delta, 0))::text
               || ' (opening ' || coalesce(i.opening_quantity, 0) || ' + applied deltas ' || coalesce(s.delta, 0) || ')'
    FROM (SELECT product_id FROM inventory UNION SELECT product_id FROM stock) k
    LEFT JOIN inventory i ON i.product_id = k.product_id
    LEFT JOIN stock s ON s.product_id = k.product_id
    WHERE coalesce(i.quantity_on_hand, 0) IS DISTINCT FROM coalesce(i.opening_quantity, 0) + coalesce(s.delta, 0)
       OR (i.product_id IS NULL AND s.delta IS NOT NULL)
    UNION ALL
    SELECT 'sales_hourly',
           'hour=' || to_char(coalesce(a.hour, x.hour) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:00:00"Z"')
               || ' product_id=' || coalesce(a.product_id, x.product_id) || ' source=' || coalesce(a.source, x.source),
           CASE WHEN a.hour IS NULL THEN 'no row'
                ELSE format('units=%s revenue=%s order_count=%s', a.units, a.revenue, a.order_count) END,
           CASE WHEN x.hour IS NULL THEN 'no applied sales'
                ELSE format('units=%s revenue=%s order_count=%s', x.units, x.revenue, x.order_count) END
    FROM sales_hourly a
    FULL JOIN hourly_expected x ON x.hour = a.hour AND x.product_id = a.product_id AND x.source = a.source
    WHERE (a.units, a.revenue, a.order_count) IS DISTINCT FROM (x.units, x.revenue, x.order_count)
    UNION ALL
    SELECT 'sales_daily',
           'day=' || coalesce(a.day, x.day) || ' product_id=' || coalesce(a.product_id, x.product_id)
               || ' source=' || coalesce(a.source, x.source),
           CASE WHEN a.day IS NULL THEN 'no row'
                ELSE format('units=%s revenue=%s order_count=%s', a.units, a.revenue, a.order_count) END,
           CASE WHEN x.day IS NULL THEN 'no applied sales'
                ELSE format('units=%s revenue=%s order_count=%s', x.units, x.revenue, x.order_count) END
    FROM sales_daily a
    FULL JOIN daily_expected x ON x.day = a.day AND x.product_id = a.product_id AND x.source = a.source
    WHERE (a.units, a.revenue, a.order_count) IS DISTINCT FROM (x.units, x.revenue, x.order_count)
    UNION ALL
    SELECT 'sales_daily (sum of its sales_hourly)',
           'day=' || coalesce(a.day, x.day) || ' product_id=' || coalesce(a.product_id, x.product_id)
               || ' source=' || coalesce(a.source, x.source),
           CASE WHEN a.day IS NULL THEN 'no row'
                ELSE format('units=%s revenue=%s order_count=%s', a.units, a.revenue, a.order_count) END,
           CASE WHEN x.day IS NULL THEN 'no hours'
                ELSE format('units=%s revenue=%s order_count=%s', x.units, x.revenue, x.order_count) END
    FROM sales_daily a
    FULL JOIN hours_of_days x ON x.day = a.day AND x.product_id = a.product_id AND x.source = a.source
    WHERE (a.units, a.revenue, a.order_count) IS DISTINCT FROM (x.units, x.revenue, x.order_count)
    UNION ALL
    SELECT 'stock_hourly',
           'axis=' || coalesce(a.axis, x.axis)
               || ' hour=' || to_char(coalesce(a.hour, x.hour) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:00:00"Z"')
               || ' product_id=' || coalesce(a.product_id, x.product_id),
           CASE WHEN a.axis IS NULL THEN 'no row' ELSE format('delta=%s events=%s', a.delta, a.events) END,
           CASE WHEN x.axis IS NULL THEN 'no applied events' ELSE format('delta=%s events=%s', x.delta, x.events) END
    FROM stock_hourly a
    FULL JOIN sh_expected x ON x.axis = a.axis AND x.hour = a.hour AND x.product_id = a.product_id
    WHERE (a.delta, a.events) IS DISTINCT FROM (x.delta, x.events)
    UNION ALL
    SELECT 'orders', 'product_id=' || product_id, 'missing=' || sum(no_order), 'missing=0'
    FROM g WHERE no_order > 0 GROUP BY product_id
$$;
