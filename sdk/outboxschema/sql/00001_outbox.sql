-- +goose Up
-- +goose StatementBegin
CREATE SCHEMA IF NOT EXISTS {{.Schema}};

-- uuid_generate_v7 makes time-ordered ids for rows inserted without one (plain SQL,
-- other languages); the Go SDK makes its own UUIDv7 ids.
CREATE FUNCTION {{.Schema}}.uuid_generate_v7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $fn$
  SELECT encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              placing substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
              FROM 1 FOR 6),
      52, 1), 53, 1),
    'hex')::uuid
$fn$;

-- One row per event. No index may cover delivered_at: the relay's "mark delivered"
-- update must stay a HOT update (no index entries written), and fillfactor 50
-- leaves room in each page for a new version of every row in it. At 85 only about
-- one update in four of 500-byte rows was HOT, and marking cost 2.3x the CPU
-- (docs/performance.md); the table ends up no larger, since non-HOT versions
-- go to new pages anyway.
CREATE TABLE {{.Schema}}.events (
  id             uuid        NOT NULL DEFAULT {{.Schema}}.uuid_generate_v7() PRIMARY KEY,
  aggregate_type text        NOT NULL CHECK (aggregate_type <> ''),
  aggregate_id   text        NOT NULL CHECK (aggregate_id <> ''),
  event_type     text        NOT NULL CHECK (event_type <> ''),
  schema_version text        NOT NULL DEFAULT '1.0',
  payload        bytea       NOT NULL,
  content_type   text        NOT NULL DEFAULT 'application/json',
  headers        jsonb       NOT NULL DEFAULT '{}'::jsonb,
  tenant_id      text,
  occurred_at    timestamptz NOT NULL DEFAULT now(),
  created_at     timestamptz NOT NULL DEFAULT now(),
  delivered_at   timestamptz
) WITH (fillfactor = 50);

CREATE INDEX events_created_at_idx ON {{.Schema}}.events (created_at);

-- One row per (event, route) that exhausted its retries or failed permanently.
CREATE TABLE {{.Schema}}.dead_letters (
  id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  event_id            uuid        NOT NULL,
  aggregate_type      text        NOT NULL,
  aggregate_id        text        NOT NULL,
  event_type          text        NOT NULL,
  schema_version      text        NOT NULL,
  payload             bytea       NOT NULL,
  content_type        text        NOT NULL,
  headers             jsonb       NOT NULL DEFAULT '{}'::jsonb,
  tenant_id           text,
  occurred_at         timestamptz NOT NULL,
  created_at          timestamptz NOT NULL,
  route               text        NOT NULL,
  sink                text        NOT NULL,
  destination         text        NOT NULL,
  attempts            integer     NOT NULL,
  last_error          text        NOT NULL,
  errors              jsonb       NOT NULL DEFAULT '[]'::jsonb,
  first_failed_at     timestamptz NOT NULL,
  last_failed_at      timestamptz NOT NULL,
  -- none: not replayed; requested: an operator asked for a replay; delivering:
  -- the active relay is sending it; replayed: delivered again; failed: the
  -- replay failed too (attempts and errors were added).
  replay_status       text        NOT NULL DEFAULT 'none'
                      CHECK (replay_status IN ('none', 'requested', 'delivering', 'replayed', 'failed')),
  replay_requested_at timestamptz,
  replayed_at         timestamptz,
  replay_count        integer     NOT NULL DEFAULT 0,
  UNIQUE (event_id, route)
);

CREATE INDEX dead_letters_last_failed_at_idx ON {{.Schema}}.dead_letters (last_failed_at);
CREATE INDEX dead_letters_replay_idx ON {{.Schema}}.dead_letters (id) WHERE replay_status IN ('requested', 'delivering');

-- The relay's own bookkeeping: whether the rows visible in a new slot's snapshot
-- have all been handled (a relay that dies mid-way starts the snapshot again).
CREATE TABLE {{.Schema}}.relay_state (
  slot             text        PRIMARY KEY,
  snapshot_pending boolean     NOT NULL,
  -- the relay that holds the slot now: host, pid and version
  holder           text,
  holder_since     timestamptz,
  updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Inserts only: the relay's own updates and deletes never come back to it.
CREATE PUBLICATION {{.Publication}} FOR TABLE {{.Schema}}.events WITH (publish = 'insert');
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DROP PUBLICATION IF EXISTS {{.Publication}};
DROP TABLE IF EXISTS {{.Schema}}.relay_state;
DROP TABLE IF EXISTS {{.Schema}}.dead_letters;
DROP TABLE IF EXISTS {{.Schema}}.events;
DROP FUNCTION IF EXISTS {{.Schema}}.uuid_generate_v7();
-- +goose StatementEnd
