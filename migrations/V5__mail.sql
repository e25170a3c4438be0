-- When the mail thread claimed a row for sending (state 'sending').
ALTER TABLE outbox ADD COLUMN claimed_at INTEGER;
-- What the mail server last said, for administrators.
ALTER TABLE outbox ADD COLUMN server_reply TEXT NOT NULL DEFAULT '';
