-- +goose Up
-- +goose StatementBegin
-- event_seq is the dead-lettered event's events.seq: replays are claimed in
-- that order, the order the stream and a new slot's snapshot deliver a key's
-- events in. The dead letters' own ids follow the order in which events
-- failed, which is not always the key's order: an event delivered before a
-- crash, then re-sent and dead-lettered after it, fails after a later event
-- of its key had failed. The relay fills it from the event's row when it
-- writes the dead letter; NULL for a dead letter whose event row was gone
-- when this migration ran (those were written first and are replayed first).
ALTER TABLE {{.Schema}}.dead_letters ADD COLUMN event_seq bigint;
UPDATE {{.Schema}}.dead_letters d SET event_seq = e.seq FROM {{.Schema}}.events e WHERE e.id = d.event_id;
CREATE INDEX dead_letters_replay_seq_idx ON {{.Schema}}.dead_letters (event_seq, id) WHERE replay_status IN ('requested', 'delivering');
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DROP INDEX IF EXISTS {{.Schema}}.dead_letters_replay_seq_idx;
ALTER TABLE {{.Schema}}.dead_letters DROP COLUMN IF EXISTS event_seq;
-- +goose StatementEnd
