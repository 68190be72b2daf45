-- Rule state checkpoints (issue 13). The stream worker used to keep rule state in a
-- changelogged Faust table: every changed device state went to Kafka as its own record
-- after every batch (the embedded broker could only take one record per request), which
-- bound the worker to about 540 messages/s, kept every state version in the broker's
-- memory and made a worker that joined the group re-read the whole changelog.
--
-- Now rule state lives in the worker's memory and is checkpointed here every few seconds
-- (stream/checkpoints.py): per Kafka partition, the states changed since the last
-- checkpoint and the next offset of each source topic that state reflects, in one
-- transaction. A worker that takes a partition loads its states and seeks the source
-- topics to those offsets; the records after them are processed again (idempotent
-- sinks, deterministic transition ids). Plain tables on PostgreSQL and TimescaleDB alike.
CREATE TABLE stream_partitions (
  app_id    text        NOT NULL,  -- the stream application (its Kafka consumer group)
  partition integer     NOT NULL,
  -- Raised by each worker that takes the partition; a checkpoint is written only under
  -- the epoch its worker got, so a worker that lost the partition cannot overwrite the
  -- newer owner's checkpoint.
  epoch     bigint      NOT NULL,
  owner     text        NOT NULL,  -- host:pid of the worker holding the epoch
  offsets   jsonb       NOT NULL DEFAULT '{}',  -- topic -> next offset to read
  saved_at  timestamptz,
  PRIMARY KEY (app_id, partition)
);

CREATE TABLE stream_state (
  app_id    text    NOT NULL,
  key       text    NOT NULL,  -- site/device/<rules>
  partition integer NOT NULL,
  state     text    NOT NULL,  -- JSON (stream.engine)
  PRIMARY KEY (app_id, key)
);
CREATE INDEX stream_state_partition ON stream_state (app_id, partition);
