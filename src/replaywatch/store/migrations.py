"""Database migrations: numbered, idempotent, applied in order under an advisory lock.

``{schema}`` is replaced by the quoted schema name.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
CREATE TABLE IF NOT EXISTS {schema}.step_projection (
    run_id          text        NOT NULL,
    step_id         text        NOT NULL,
    base_attempt    int,
    current_attempt int,
    max_attempt     int         NOT NULL,
    last_status     text,
    last_verdict    text,
    comparisons     int         NOT NULL DEFAULT 0,
    base            json,        -- {"attempt", "output_snapshot", "tool_events"?}: text kept as sent
    current         json,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step_id)
);

-- The consumer's next offset per input partition: the commit point of the pipeline.
CREATE TABLE IF NOT EXISTS {schema}.consumer_offset (
    group_id    text   NOT NULL,
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
);

-- Events waiting to be published, keyed by the input record that caused them.
CREATE TABLE IF NOT EXISTS {schema}.outbox (
    group_id      text   NOT NULL,
    topic         text   NOT NULL,
    partition     int    NOT NULL,
    source_offset bigint NOT NULL,
    event_id      uuid   NOT NULL,
    key           bytea,
    value         bytea  NOT NULL,
    verdict       text   NOT NULL,
    PRIMARY KEY (group_id, topic, partition, source_offset)
);

-- Every comparison made, for `replaywatch report`.
CREATE TABLE IF NOT EXISTS {schema}.comparison (
    event_id         uuid        PRIMARY KEY,
    run_id           text        NOT NULL,
    step_id          text        NOT NULL,
    baseline_attempt int         NOT NULL,
    current_attempt  int         NOT NULL,
    verdict          text        NOT NULL,
    token_delta      double precision,
    cost_delta       double precision,
    diff_kind        text,
    diff_sha256      text,
    diff_uri         text,
    detected_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS comparison_run ON {schema}.comparison (run_id, step_id);

-- One batch, one statement (base/current null: unchanged): advance each partition's offset only from the position
-- the caller holds (a fence against a consumer that lost its partitions), then write
-- projections, outbox rows and comparisons. Any failure rolls all of it back.
CREATE OR REPLACE FUNCTION {schema}.commit_batch(
    p_group text, p_topic text,
    o_partition int[], o_expected bigint[], o_next bigint[],
    s_run text[], s_step text[], s_base_attempt int[], s_current_attempt int[], s_max int[],
    s_status text[], s_verdict text[], s_comparisons int[], s_base json[], s_current json[],
    e_partition int[], e_offset bigint[], e_event uuid[], e_key bytea[], e_value bytea[], e_verdict text[],
    c_run text[], c_step text[], c_base int[], c_current int[], c_token double precision[],
    c_cost double precision[], c_kind text[], c_sha text[], c_uri text[], c_detected timestamptz[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    i int;
    n int;
BEGIN
    FOR i IN 1 .. coalesce(array_length(o_partition, 1), 0) LOOP
        IF o_expected[i] IS NULL THEN
            INSERT INTO {schema}.consumer_offset VALUES (p_group, p_topic, o_partition[i], o_next[i])
            ON CONFLICT DO NOTHING;
        ELSE
            UPDATE {schema}.consumer_offset SET next_offset = o_next[i]
            WHERE group_id = p_group AND topic = p_topic AND partition = o_partition[i]
              AND next_offset = o_expected[i];
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n <> 1 THEN
            RAISE EXCEPTION 'replaywatch_fenced: partition % of % moved on', o_partition[i], p_topic
                USING ERRCODE = 'RW001';
        END IF;
    END LOOP;

    INSERT INTO {schema}.step_projection AS p
        (run_id, step_id, base_attempt, current_attempt, max_attempt, last_status, last_verdict,
         comparisons, base, current, updated_at)
    SELECT r, s, ba, ca, m, st, v, c, b, cu, now()
    FROM unnest(s_run, s_step, s_base_attempt, s_current_attempt, s_max, s_status, s_verdict,
                s_comparisons, s_base, s_current) AS t(r, s, ba, ca, m, st, v, c, b, cu)
    ON CONFLICT (run_id, step_id) DO UPDATE SET
        base_attempt = excluded.base_attempt, current_attempt = excluded.current_attempt,
        max_attempt = excluded.max_attempt, last_status = excluded.last_status,
        last_verdict = excluded.last_verdict, comparisons = excluded.comparisons,
        base = coalesce(excluded.base, p.base), current = coalesce(excluded.current, p.current),
        updated_at = now();

    INSERT INTO {schema}.outbox (group_id, topic, partition, source_offset, event_id, key, value, verdict)
    SELECT p_group, p_topic, pa, so, ev, k, va, ve
    FROM unnest(e_partition, e_offset, e_event, e_key, e_value, e_verdict) AS t(pa, so, ev, k, va, ve)
    ON CONFLICT DO NOTHING;

    INSERT INTO {schema}.comparison
    SELECT ev, r, s, b, cu, ve, tk, co, k, sh, u, d
    FROM unnest(e_event, c_run, c_step, c_base, c_current, e_verdict, c_token, c_cost, c_kind, c_sha,
                c_uri, c_detected) AS t(ev, r, s, b, cu, ve, tk, co, k, sh, u, d)
    ON CONFLICT (event_id) DO NOTHING;
END;
$$;
""",
    ),
    (
        2,
        """
-- Steps are keyed by sha256(run_id NUL step_id): ids of up to 4 KB each (1,024
-- characters of 4 bytes) exceed a btree row (~2.7 KB), and NUL never occurs in an id.
ALTER TABLE {schema}.step_projection ADD COLUMN IF NOT EXISTS step_key bytea;
UPDATE {schema}.step_projection
   SET step_key = sha256(convert_to(run_id, 'UTF8') || '\\x00'::bytea || convert_to(step_id, 'UTF8'))
 WHERE step_key IS NULL;
ALTER TABLE {schema}.step_projection ALTER COLUMN step_key SET NOT NULL;
ALTER TABLE {schema}.step_projection DROP CONSTRAINT IF EXISTS step_projection_pkey;
ALTER TABLE {schema}.step_projection ADD PRIMARY KEY (step_key);
-- hash indexes: no size limit on the key, equality is all `report` asks
CREATE INDEX IF NOT EXISTS step_projection_run ON {schema}.step_projection USING hash (run_id);
DROP INDEX IF EXISTS {schema}.comparison_run;
CREATE INDEX IF NOT EXISTS comparison_run_hash ON {schema}.comparison USING hash (run_id);

DROP FUNCTION IF EXISTS {schema}.commit_batch(
    text, text, int[], bigint[], bigint[], text[], text[], int[], int[], int[], text[], text[], int[], json[],
    json[], int[], bigint[], uuid[], bytea[], bytea[], text[], text[], text[], int[], int[], double precision[],
    double precision[], text[], text[], text[], timestamptz[]);

-- One batch, one statement (base/current null: unchanged): advance each partition's
-- offset only from the position the caller holds (a fence against a consumer that lost
-- its partitions), then write projections, outbox rows and comparisons. Any failure
-- rolls all of it back.
CREATE OR REPLACE FUNCTION {schema}.commit_batch(
    p_group text, p_topic text,
    o_partition int[], o_expected bigint[], o_next bigint[],
    s_key bytea[], s_run text[], s_step text[], s_base_attempt int[], s_current_attempt int[], s_max int[],
    s_status text[], s_verdict text[], s_comparisons int[], s_base json[], s_current json[],
    e_partition int[], e_offset bigint[], e_event uuid[], e_key bytea[], e_value bytea[], e_verdict text[],
    c_run text[], c_step text[], c_base int[], c_current int[], c_token double precision[],
    c_cost double precision[], c_kind text[], c_sha text[], c_uri text[], c_detected timestamptz[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    i int;
    n int;
BEGIN
    FOR i IN 1 .. coalesce(array_length(o_partition, 1), 0) LOOP
        IF o_expected[i] IS NULL THEN
            INSERT INTO {schema}.consumer_offset VALUES (p_group, p_topic, o_partition[i], o_next[i])
            ON CONFLICT DO NOTHING;
        ELSE
            UPDATE {schema}.consumer_offset SET next_offset = o_next[i]
            WHERE group_id = p_group AND topic = p_topic AND partition = o_partition[i]
              AND next_offset = o_expected[i];
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n <> 1 THEN
            RAISE EXCEPTION 'replaywatch_fenced: partition % of % moved on', o_partition[i], p_topic
                USING ERRCODE = 'RW001';
        END IF;
    END LOOP;

    INSERT INTO {schema}.step_projection AS p
        (step_key, run_id, step_id, base_attempt, current_attempt, max_attempt, last_status, last_verdict,
         comparisons, base, current, updated_at)
    SELECT k, r, s, ba, ca, m, st, v, c, b, cu, now()
    FROM unnest(s_key, s_run, s_step, s_base_attempt, s_current_attempt, s_max, s_status, s_verdict,
                s_comparisons, s_base, s_current) AS t(k, r, s, ba, ca, m, st, v, c, b, cu)
    ON CONFLICT (step_key) DO UPDATE SET
        base_attempt = excluded.base_attempt, current_attempt = excluded.current_attempt,
        max_attempt = excluded.max_attempt, last_status = excluded.last_status,
        last_verdict = excluded.last_verdict, comparisons = excluded.comparisons,
        base = coalesce(excluded.base, p.base), current = coalesce(excluded.current, p.current),
        updated_at = now();

    INSERT INTO {schema}.outbox (group_id, topic, partition, source_offset, event_id, key, value, verdict)
    SELECT p_group, p_topic, pa, so, ev, k, va, ve
    FROM unnest(e_partition, e_offset, e_event, e_key, e_value, e_verdict) AS t(pa, so, ev, k, va, ve)
    ON CONFLICT DO NOTHING;

    INSERT INTO {schema}.comparison
    SELECT ev, r, s, b, cu, ve, tk, co, k, sh, u, d
    FROM unnest(e_event, c_run, c_step, c_base, c_current, e_verdict, c_token, c_cost, c_kind, c_sha,
                c_uri, c_detected) AS t(ev, r, s, b, cu, ve, tk, co, k, sh, u, d)
    ON CONFLICT (event_id) DO NOTHING;
END;
$$;
""",
    ),
    (
        3,
        """
-- Optimistic concurrency on steps: a writer updates a step only from the version it
-- read (its cache may be stale when a backfill or a rebuild wrote the step meanwhile).
ALTER TABLE {schema}.step_projection ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 1;

-- The W3C trace context an event carries in its headers (traceparent).
ALTER TABLE {schema}.outbox ADD COLUMN IF NOT EXISTS trace text;

-- The history says what was published: a re-scoring supersedes an event with another,
-- under other settings; ``origin`` is the first event of the pair, ``seq`` orders them.
ALTER TABLE {schema}.comparison ADD COLUMN IF NOT EXISTS origin uuid;
ALTER TABLE {schema}.comparison ADD COLUMN IF NOT EXISTS supersedes uuid;
ALTER TABLE {schema}.comparison ADD COLUMN IF NOT EXISTS settings_fingerprint text;
ALTER TABLE {schema}.comparison ADD COLUMN IF NOT EXISTS seq bigserial;
UPDATE {schema}.comparison SET origin = event_id WHERE origin IS NULL;
CREATE INDEX IF NOT EXISTS comparison_origin ON {schema}.comparison (origin, seq);

-- Backfill, re-scoring and rebuild jobs: the range each reads (end offsets as taken when
-- it first started) and whether it finished; its checkpoint is its consumer_offset rows.
CREATE TABLE IF NOT EXISTS {schema}.replay_job (
    job_id      text        PRIMARY KEY,
    kind        text        NOT NULL,
    spec_hash   text        NOT NULL,
    spec        jsonb       NOT NULL,
    ranges      jsonb       NOT NULL,
    state       text        NOT NULL DEFAULT 'running',
    summary     jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX IF NOT EXISTS replay_job_spec ON {schema}.replay_job (spec_hash, state);

DROP FUNCTION IF EXISTS {schema}.commit_batch(
    text, text, int[], bigint[], bigint[], bytea[], text[], text[], int[], int[], int[], text[], text[], int[],
    json[], json[], int[], bigint[], uuid[], bytea[], bytea[], text[], text[], text[], int[], int[],
    double precision[], double precision[], text[], text[], text[], timestamptz[]);

-- One batch, one statement. (1) Each partition's offset advances only from the position
-- the caller holds (a fence against a consumer that lost its partitions: RW001). (2) Each
-- step is written only from the version the caller read (0: no row), else RW002 and
-- nothing is written (base/current null: unchanged). (3) Outbox rows, but none for an
-- event the history already holds: an event is said once, whoever makes it; their ids
-- are returned. (4) The history. Any failure rolls all of it back.
CREATE OR REPLACE FUNCTION {schema}.commit_batch(
    p_group text, p_topic text,
    o_partition int[], o_expected bigint[], o_next bigint[],
    s_key bytea[], s_run text[], s_step text[], s_base_attempt int[], s_current_attempt int[], s_max int[],
    s_status text[], s_verdict text[], s_comparisons int[], s_base json[], s_current json[],
    s_expected bigint[], s_version bigint[],
    e_partition int[], e_offset bigint[], e_event uuid[], e_key bytea[], e_value bytea[], e_verdict text[],
    e_trace text[],
    c_run text[], c_step text[], c_base int[], c_current int[], c_token double precision[],
    c_cost double precision[], c_kind text[], c_sha text[], c_uri text[], c_detected timestamptz[],
    c_origin uuid[], c_supersedes uuid[], c_settings text[]
) RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
    i int;
    n int;
    updated int;
    inserted int;
    said uuid[];
BEGIN
    FOR i IN 1 .. coalesce(array_length(o_partition, 1), 0) LOOP
        IF o_expected[i] IS NULL THEN
            INSERT INTO {schema}.consumer_offset VALUES (p_group, p_topic, o_partition[i], o_next[i])
            ON CONFLICT DO NOTHING;
        ELSE
            UPDATE {schema}.consumer_offset SET next_offset = o_next[i]
            WHERE group_id = p_group AND topic = p_topic AND partition = o_partition[i]
              AND next_offset = o_expected[i];
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n <> 1 THEN
            RAISE EXCEPTION 'replaywatch_fenced: partition % of % moved on', o_partition[i], p_topic
                USING ERRCODE = 'RW001';
        END IF;
    END LOOP;

    UPDATE {schema}.step_projection AS p SET
        base_attempt = t.ba, current_attempt = t.ca, max_attempt = t.m, last_status = t.st,
        last_verdict = t.v, comparisons = t.c, base = coalesce(t.b, p.base),
        current = coalesce(t.cu, p.current), version = t.nv, updated_at = now()
    FROM unnest(s_key, s_base_attempt, s_current_attempt, s_max, s_status, s_verdict, s_comparisons,
                s_base, s_current, s_expected, s_version) AS t(k, ba, ca, m, st, v, c, b, cu, ev, nv)
    WHERE t.ev > 0 AND p.step_key = t.k AND p.version = t.ev;
    GET DIAGNOSTICS updated = ROW_COUNT;
    INSERT INTO {schema}.step_projection
        (step_key, run_id, step_id, base_attempt, current_attempt, max_attempt, last_status, last_verdict,
         comparisons, base, current, version, updated_at)
    SELECT k, r, s, ba, ca, m, st, v, c, b, cu, nv, now()
    FROM unnest(s_key, s_run, s_step, s_base_attempt, s_current_attempt, s_max, s_status, s_verdict,
                s_comparisons, s_base, s_current, s_expected, s_version)
         AS t(k, r, s, ba, ca, m, st, v, c, b, cu, ev, nv)
    WHERE t.ev = 0
    ON CONFLICT (step_key) DO NOTHING;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    IF updated + inserted <> coalesce(array_length(s_key, 1), 0) THEN
        RAISE EXCEPTION 'replaywatch_stale: % of % steps changed since they were read',
            coalesce(array_length(s_key, 1), 0) - updated - inserted, coalesce(array_length(s_key, 1), 0)
            USING ERRCODE = 'RW002';
    END IF;

    SELECT coalesce(array_agg(h.event_id), '{}') INTO said
    FROM {schema}.comparison h WHERE h.event_id = ANY(e_event);
    INSERT INTO {schema}.outbox (group_id, topic, partition, source_offset, event_id, key, value, verdict, trace)
    SELECT p_group, p_topic, pa, so, ev, k, va, ve, tr
    FROM unnest(e_partition, e_offset, e_event, e_key, e_value, e_verdict, e_trace) AS t(pa, so, ev, k, va, ve, tr)
    WHERE NOT ev = ANY(said)
    ON CONFLICT DO NOTHING;

    INSERT INTO {schema}.comparison (event_id, run_id, step_id, baseline_attempt, current_attempt, verdict,
        token_delta, cost_delta, diff_kind, diff_sha256, diff_uri, detected_at, origin, supersedes,
        settings_fingerprint)
    SELECT ev, r, s, b, cu, ve, tk, co, k, sh, u, d, coalesce(og, ev), sup, fp
    FROM unnest(e_event, c_run, c_step, c_base, c_current, e_verdict, c_token, c_cost, c_kind, c_sha,
                c_uri, c_detected, c_origin, c_supersedes, c_settings)
         AS t(ev, r, s, b, cu, ve, tk, co, k, sh, u, d, og, sup, fp)
    ON CONFLICT (event_id) DO NOTHING;
    RETURN said;
END;
$$;
""",
    ),
    (
        4,
        """
-- How often each ignore rule matched: statistics for `replaywatch report
-- --rules`, added to by each watcher every few seconds (not part of the commit).
CREATE TABLE IF NOT EXISTS {schema}.ignore_rule_stats (
    group_id    text        NOT NULL,
    policy      text        NOT NULL,
    rule        text        NOT NULL,
    comparisons bigint      NOT NULL DEFAULT 0,
    matches     bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, policy, rule)
);

-- The web view's recent comparisons and last hour, newest first.
CREATE INDEX IF NOT EXISTS comparison_detected ON {schema}.comparison (detected_at DESC);
""",
    ),
    (
        5,
        """
-- Where each partition's outbox publisher stands: every event of a lower source offset
-- is published. Kept beside the outbox because Kafka expires the offsets of a group with
-- no members (the publisher's progress group) after offsets.retention.minutes: a
-- publisher start takes the larger of this and Kafka's progress.
CREATE TABLE IF NOT EXISTS {schema}.publisher_position (
    group_id        text        NOT NULL,
    topic           text        NOT NULL,
    partition       int         NOT NULL,
    published_upto  bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
""",
    ),
    (
        6,
        """
-- Pruning by age (store/retention.py): the steps not updated for a while.
CREATE INDEX IF NOT EXISTS step_projection_updated ON {schema}.step_projection (updated_at);
""",
    ),
    (
        7,
        """
-- Noise envelopes (envelope/): one row per input partition and cohort, written by the
-- batch's statement with its projections, so a replay of the same offsets meets the
-- same envelopes. Operator actions on them (reset) are recorded.
CREATE TABLE IF NOT EXISTS {schema}.envelope (
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   int         NOT NULL,
    cohort      text        NOT NULL,
    state       jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition, cohort)
);
CREATE TABLE IF NOT EXISTS {schema}.envelope_action (
    id          bigserial   PRIMARY KEY,
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    action      text        NOT NULL,
    cohort      text        NOT NULL,
    effective   jsonb       NOT NULL,
    by_user     text,
    reason      text,
    at          timestamptz NOT NULL DEFAULT now()
);

DROP FUNCTION IF EXISTS {schema}.commit_batch(
    text, text, int[], bigint[], bigint[], bytea[], text[], text[], int[], int[], int[], text[], text[], int[],
    json[], json[], bigint[], bigint[], int[], bigint[], uuid[], bytea[], bytea[], text[], text[],
    text[], text[], int[], int[], double precision[], double precision[], text[], text[], text[], timestamptz[],
    uuid[], uuid[], text[]);

-- As before, and (5) the envelopes the batch changed, unless an operator acted on
-- envelopes since the batch read them (RW003: it is prepared again, knowing the action).
CREATE OR REPLACE FUNCTION {schema}.commit_batch(
    p_group text, p_topic text,
    o_partition int[], o_expected bigint[], o_next bigint[],
    s_key bytea[], s_run text[], s_step text[], s_base_attempt int[], s_current_attempt int[], s_max int[],
    s_status text[], s_verdict text[], s_comparisons int[], s_base json[], s_current json[],
    s_expected bigint[], s_version bigint[],
    e_partition int[], e_offset bigint[], e_event uuid[], e_key bytea[], e_value bytea[], e_verdict text[],
    e_trace text[],
    c_run text[], c_step text[], c_base int[], c_current int[], c_token double precision[],
    c_cost double precision[], c_kind text[], c_sha text[], c_uri text[], c_detected timestamptz[],
    c_origin uuid[], c_supersedes uuid[], c_settings text[],
    n_partition int[], n_cohort text[], n_state text[], n_actions_seen bigint
) RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
    i int;
    n int;
    updated int;
    inserted int;
    said uuid[];
BEGIN
    FOR i IN 1 .. coalesce(array_length(o_partition, 1), 0) LOOP
        IF o_expected[i] IS NULL THEN
            INSERT INTO {schema}.consumer_offset VALUES (p_group, p_topic, o_partition[i], o_next[i])
            ON CONFLICT DO NOTHING;
        ELSE
            UPDATE {schema}.consumer_offset SET next_offset = o_next[i]
            WHERE group_id = p_group AND topic = p_topic AND partition = o_partition[i]
              AND next_offset = o_expected[i];
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n <> 1 THEN
            RAISE EXCEPTION 'replaywatch_fenced: partition % of % moved on', o_partition[i], p_topic
                USING ERRCODE = 'RW001';
        END IF;
    END LOOP;

    UPDATE {schema}.step_projection AS p SET
        base_attempt = t.ba, current_attempt = t.ca, max_attempt = t.m, last_status = t.st,
        last_verdict = t.v, comparisons = t.c, base = coalesce(t.b, p.base),
        current = coalesce(t.cu, p.current), version = t.nv, updated_at = now()
    FROM unnest(s_key, s_base_attempt, s_current_attempt, s_max, s_status, s_verdict, s_comparisons,
                s_base, s_current, s_expected, s_version) AS t(k, ba, ca, m, st, v, c, b, cu, ev, nv)
    WHERE t.ev > 0 AND p.step_key = t.k AND p.version = t.ev;
    GET DIAGNOSTICS updated = ROW_COUNT;
    INSERT INTO {schema}.step_projection
        (step_key, run_id, step_id, base_attempt, current_attempt, max_attempt, last_status, last_verdict,
         comparisons, base, current, version, updated_at)
    SELECT k, r, s, ba, ca, m, st, v, c, b, cu, nv, now()
    FROM unnest(s_key, s_run, s_step, s_base_attempt, s_current_attempt, s_max, s_status, s_verdict,
                s_comparisons, s_base, s_current, s_expected, s_version)
         AS t(k, r, s, ba, ca, m, st, v, c, b, cu, ev, nv)
    WHERE t.ev = 0
    ON CONFLICT (step_key) DO NOTHING;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    IF updated + inserted <> coalesce(array_length(s_key, 1), 0) THEN
        RAISE EXCEPTION 'replaywatch_stale: % of % steps changed since they were read',
            coalesce(array_length(s_key, 1), 0) - updated - inserted, coalesce(array_length(s_key, 1), 0)
            USING ERRCODE = 'RW002';
    END IF;

    SELECT coalesce(array_agg(h.event_id), '{}') INTO said
    FROM {schema}.comparison h WHERE h.event_id = ANY(e_event);
    INSERT INTO {schema}.outbox (group_id, topic, partition, source_offset, event_id, key, value, verdict, trace)
    SELECT p_group, p_topic, pa, so, ev, k, va, ve, tr
    FROM unnest(e_partition, e_offset, e_event, e_key, e_value, e_verdict, e_trace) AS t(pa, so, ev, k, va, ve, tr)
    WHERE NOT ev = ANY(said)
    ON CONFLICT DO NOTHING;

    INSERT INTO {schema}.comparison (event_id, run_id, step_id, baseline_attempt, current_attempt, verdict,
        token_delta, cost_delta, diff_kind, diff_sha256, diff_uri, detected_at, origin, supersedes,
        settings_fingerprint)
    SELECT ev, r, s, b, cu, ve, tk, co, k, sh, u, d, coalesce(og, ev), sup, fp
    FROM unnest(e_event, c_run, c_step, c_base, c_current, e_verdict, c_token, c_cost, c_kind, c_sha,
                c_uri, c_detected, c_origin, c_supersedes, c_settings)
         AS t(ev, r, s, b, cu, ve, tk, co, k, sh, u, d, og, sup, fp)
    ON CONFLICT (event_id) DO NOTHING;
    IF n_actions_seen IS NOT NULL AND EXISTS (
        SELECT 1 FROM {schema}.envelope_action
        WHERE group_id = p_group AND topic = p_topic AND id > n_actions_seen
    ) THEN
        RAISE EXCEPTION 'replaywatch_envelope_action: an operator acted on envelopes of % since they were read',
            p_topic USING ERRCODE = 'RW003';
    END IF;
    INSERT INTO {schema}.envelope AS v (group_id, topic, partition, cohort, state, updated_at)
    SELECT p_group, p_topic, pa, co, st::jsonb, now()
    FROM unnest(n_partition, n_cohort, n_state) AS t(pa, co, st)
    ON CONFLICT (group_id, topic, partition, cohort) DO UPDATE SET state = excluded.state, updated_at = now();
    RETURN said;
END;
$$;
""",
    ),
    (
        8,
        """
-- Drift rates (rates/): each comparison counted in its base window of event time, per
-- cohort and policy, by the batch's statement with its projections (counts added: a
-- fenced commit never adds twice); each partition's clock beside its offsets. The rest
-- is the closer's: windows published per width and version, alert states and alerts,
-- and the records waiting for the rates and alerts topics.
ALTER TABLE {schema}.comparison ADD COLUMN IF NOT EXISTS cohort text;
ALTER TABLE {schema}.comparison ADD COLUMN IF NOT EXISTS policy text;
ALTER TABLE {schema}.comparison ADD COLUMN IF NOT EXISTS occurred_at timestamptz;
ALTER TABLE {schema}.comparison ADD COLUMN IF NOT EXISTS paths text;
CREATE INDEX IF NOT EXISTS comparison_cohort ON {schema}.comparison (cohort, occurred_at) WHERE cohort IS NOT NULL;
ALTER TABLE {schema}.outbox ADD COLUMN IF NOT EXISTS headers text;
CREATE SEQUENCE IF NOT EXISTS {schema}.rate_window_seq;
CREATE TABLE IF NOT EXISTS {schema}.rate_window (
    topic     text   NOT NULL,
    cohort    text   NOT NULL,
    policy    text   NOT NULL,
    start_ms  bigint NOT NULL,
    counts    int[]  NOT NULL,
    seq       bigint NOT NULL,
    PRIMARY KEY (topic, cohort, policy, start_ms)
);
CREATE INDEX IF NOT EXISTS rate_window_changed ON {schema}.rate_window (topic, seq);
CREATE INDEX IF NOT EXISTS rate_window_start ON {schema}.rate_window (topic, start_ms);
CREATE TABLE IF NOT EXISTS {schema}.rate_clock (
    group_id  text  NOT NULL,
    topic     text  NOT NULL,
    partition  int         NOT NULL,
    state      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
CREATE TABLE IF NOT EXISTS {schema}.rate_published (
    topic     text   NOT NULL,
    cohort    text   NOT NULL,
    policy    text   NOT NULL,
    width_ms  bigint NOT NULL,
    start_ms  bigint NOT NULL,
    version   int    NOT NULL,
    counts    int[]  NOT NULL,
    PRIMARY KEY (topic, cohort, policy, width_ms, start_ms)
);
CREATE INDEX IF NOT EXISTS rate_published_start ON {schema}.rate_published (topic, width_ms, start_ms);
CREATE TABLE IF NOT EXISTS {schema}.rate_alert_state (
    topic   text  NOT NULL,
    cohort  text  NOT NULL,
    policy  text  NOT NULL,
    state   jsonb NOT NULL,
    PRIMARY KEY (topic, cohort, policy)
);
CREATE TABLE IF NOT EXISTS {schema}.rate_alert (
    alert_id    uuid   PRIMARY KEY,
    topic       text   NOT NULL,
    cohort      text   NOT NULL,
    policy      text   NOT NULL,
    opened_ms   bigint NOT NULL,
    resolved_ms bigint,
    opened      jsonb  NOT NULL,
    resolved    jsonb
);
CREATE INDEX IF NOT EXISTS rate_alert_cohort ON {schema}.rate_alert (topic, cohort, opened_ms);
CREATE TABLE IF NOT EXISTS {schema}.rate_cursor (
    topic     text   PRIMARY KEY,
    seq       bigint NOT NULL,
    judged_ms bigint
);
CREATE TABLE IF NOT EXISTS {schema}.rate_outbox (
    seq         bigserial PRIMARY KEY,
    topic       text      NOT NULL,
    destination text      NOT NULL,
    key         bytea,
    value       bytea     NOT NULL,
    headers     text
);

DROP FUNCTION IF EXISTS {schema}.commit_batch(
    text, text, int[], bigint[], bigint[], bytea[], text[], text[], int[], int[], int[], text[], text[],
    int[], json[], json[], bigint[], bigint[], int[], bigint[], uuid[], bytea[], bytea[], text[], text[],
    text[], text[], int[], int[], double precision[], double precision[], text[], text[], text[],
    timestamptz[], uuid[], uuid[], text[], int[], text[], text[], bigint);

-- As before, and (6) the rates' window counts and partition clocks; the outbox keeps an
-- event's extra headers, the history each comparison's cohort, policy, event time and
-- deciding paths.
CREATE OR REPLACE FUNCTION {schema}.commit_batch(
    p_group text, p_topic text,
    o_partition int[], o_expected bigint[], o_next bigint[],
    s_key bytea[], s_run text[], s_step text[], s_base_attempt int[], s_current_attempt int[], s_max int[],
    s_status text[], s_verdict text[], s_comparisons int[], s_base json[], s_current json[],
    s_expected bigint[], s_version bigint[],
    e_partition int[], e_offset bigint[], e_event uuid[], e_key bytea[], e_value bytea[], e_verdict text[],
    e_trace text[],
    c_run text[], c_step text[], c_base int[], c_current int[], c_token double precision[],
    c_cost double precision[], c_kind text[], c_sha text[], c_uri text[], c_detected timestamptz[],
    c_origin uuid[], c_supersedes uuid[], c_settings text[],
    n_partition int[], n_cohort text[], n_state text[], n_actions_seen bigint,
    e_headers text[], c_cohort text[], c_policy text[], c_occurred timestamptz[], c_paths text[],
    w_cohort text[], w_policy text[], w_start bigint[], w_counts text[], k_partition int[], k_state text[]
) RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
    i int;
    n int;
    updated int;
    inserted int;
    said uuid[];
BEGIN
    FOR i IN 1 .. coalesce(array_length(o_partition, 1), 0) LOOP
        IF o_expected[i] IS NULL THEN
            INSERT INTO {schema}.consumer_offset VALUES (p_group, p_topic, o_partition[i], o_next[i])
            ON CONFLICT DO NOTHING;
        ELSE
            UPDATE {schema}.consumer_offset SET next_offset = o_next[i]
            WHERE group_id = p_group AND topic = p_topic AND partition = o_partition[i]
              AND next_offset = o_expected[i];
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n <> 1 THEN
            RAISE EXCEPTION 'replaywatch_fenced: partition % of % moved on', o_partition[i], p_topic
                USING ERRCODE = 'RW001';
        END IF;
    END LOOP;

    UPDATE {schema}.step_projection AS p SET
        base_attempt = t.ba, current_attempt = t.ca, max_attempt = t.m, last_status = t.st,
        last_verdict = t.v, comparisons = t.c, base = coalesce(t.b, p.base),
        current = coalesce(t.cu, p.current), version = t.nv, updated_at = now()
    FROM unnest(s_key, s_base_attempt, s_current_attempt, s_max, s_status, s_verdict, s_comparisons,
                s_base, s_current, s_expected, s_version) AS t(k, ba, ca, m, st, v, c, b, cu, ev, nv)
    WHERE t.ev > 0 AND p.step_key = t.k AND p.version = t.ev;
    GET DIAGNOSTICS updated = ROW_COUNT;
    INSERT INTO {schema}.step_projection
        (step_key, run_id, step_id, base_attempt, current_attempt, max_attempt, last_status, last_verdict,
         comparisons, base, current, version, updated_at)
    SELECT k, r, s, ba, ca, m, st, v, c, b, cu, nv, now()
    FROM unnest(s_key, s_run, s_step, s_base_attempt, s_current_attempt, s_max, s_status, s_verdict,
                s_comparisons, s_base, s_current, s_expected, s_version)
         AS t(k, r, s, ba, ca, m, st, v, c, b, cu, ev, nv)
    WHERE t.ev = 0
    ON CONFLICT (step_key) DO NOTHING;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    IF updated + inserted <> coalesce(array_length(s_key, 1), 0) THEN
        RAISE EXCEPTION 'replaywatch_stale: % of % steps changed since they were read',
            coalesce(array_length(s_key, 1), 0) - updated - inserted, coalesce(array_length(s_key, 1), 0)
            USING ERRCODE = 'RW002';
    END IF;

    SELECT coalesce(array_agg(h.event_id), '{}') INTO said
    FROM {schema}.comparison h WHERE h.event_id = ANY(e_event);
    INSERT INTO {schema}.outbox (group_id, topic, partition, source_offset, event_id, key, value, verdict, trace,
        headers)
    SELECT p_group, p_topic, pa, so, ev, k, va, ve, tr, hd
    FROM unnest(e_partition, e_offset, e_event, e_key, e_value, e_verdict, e_trace, e_headers)
         AS t(pa, so, ev, k, va, ve, tr, hd)
    WHERE NOT ev = ANY(said)
    ON CONFLICT DO NOTHING;

    INSERT INTO {schema}.comparison (event_id, run_id, step_id, baseline_attempt, current_attempt, verdict,
        token_delta, cost_delta, diff_kind, diff_sha256, diff_uri, detected_at, origin, supersedes,
        settings_fingerprint, cohort, policy, occurred_at, paths)
    SELECT ev, r, s, b, cu, ve, tk, co, k, sh, u, d, coalesce(og, ev), sup, fp, ch, po, oc, pa
    FROM unnest(e_event, c_run, c_step, c_base, c_current, e_verdict, c_token, c_cost, c_kind, c_sha,
                c_uri, c_detected, c_origin, c_supersedes, c_settings, c_cohort, c_policy, c_occurred, c_paths)
         AS t(ev, r, s, b, cu, ve, tk, co, k, sh, u, d, og, sup, fp, ch, po, oc, pa)
    ON CONFLICT (event_id) DO NOTHING;
    IF n_actions_seen IS NOT NULL AND EXISTS (
        SELECT 1 FROM {schema}.envelope_action
        WHERE group_id = p_group AND topic = p_topic AND id > n_actions_seen
    ) THEN
        RAISE EXCEPTION 'replaywatch_envelope_action: an operator acted on envelopes of % since they were read',
            p_topic USING ERRCODE = 'RW003';
    END IF;
    INSERT INTO {schema}.envelope AS v (group_id, topic, partition, cohort, state, updated_at)
    SELECT p_group, p_topic, pa, co, st::jsonb, now()
    FROM unnest(n_partition, n_cohort, n_state) AS t(pa, co, st)
    ON CONFLICT (group_id, topic, partition, cohort) DO UPDATE SET state = excluded.state, updated_at = now();
    -- (6) what the batch adds to the windows of event time, and the partitions' clocks
    INSERT INTO {schema}.rate_window AS w (topic, cohort, policy, start_ms, counts, seq)
    SELECT p_topic, co, po, st, cn::int[], nextval('{schema}.rate_window_seq')
    FROM unnest(w_cohort, w_policy, w_start, w_counts) AS t(co, po, st, cn) ORDER BY co, po, st
    ON CONFLICT (topic, cohort, policy, start_ms) DO UPDATE SET
        counts = (SELECT array_agg(coalesce(x.a, 0) + coalesce(x.b, 0) ORDER BY x.o)
                  FROM unnest(w.counts, excluded.counts) WITH ORDINALITY AS x(a, b, o)),
        seq = excluded.seq;
    INSERT INTO {schema}.rate_clock AS k (group_id, topic, partition, state)
    SELECT p_group, p_topic, pa, st::jsonb FROM unnest(k_partition, k_state) AS t(pa, st)
    ON CONFLICT (group_id, topic, partition) DO UPDATE SET state = excluded.state, updated_at = now();
    RETURN said;
END;
$$;
""",
    ),
)
