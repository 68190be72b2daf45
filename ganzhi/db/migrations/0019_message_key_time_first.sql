-- stream_messages' key with the time first: (time, msg_id) instead of (msg_id, time).
-- The same columns, so the same uniqueness: a replayed or redelivered message still finds
-- its (msg_id, time) taken. Message ids are random (uuid4), so an index led by msg_id
-- takes each batch's ids at random leaf pages all over a day's index; led by the time
-- (each message's earliest reading, close to now for live data) they go to the index's
-- newest pages. Measured on PostgreSQL 15 (benchmarks/message_ids.py, docs/performance.md):
-- with 100,000 / 2 million / 6 million ids already in the day's table, a batch's ids went
-- in 1.4x / 2.1x / 3.3x as fast; under the old key the rate fell as the index grew, under
-- this one it stays flat. Nothing reads stream_messages by msg_id alone (only the sink's
-- COPY and INSERT … ON CONFLICT touch it).
--
-- The same SQL on both flavours: on plain PostgreSQL the key of every daily partition is
-- rebuilt, on TimescaleDB that of every chunk (stream_messages is not compressed). That
-- takes a lock on stream_messages for the length of the rebuild: the stream sink waits
-- for it (its batches are retried), nothing is lost.
ALTER TABLE stream_messages DROP CONSTRAINT stream_messages_pkey;
ALTER TABLE stream_messages ADD PRIMARY KEY (time, msg_id);
