-- One file per message, stored once per content under blobs/sha256/ beside the database.
CREATE TABLE attachment (
    id              INTEGER PRIMARY KEY,
    message_id      INTEGER NOT NULL UNIQUE REFERENCES message (id),
    sha256          TEXT    NOT NULL,
    size            INTEGER NOT NULL,
    media_type      TEXT    NOT NULL,
    -- The name the sender's file had, cleaned for display. Never used as a path.
    file_name       TEXT    NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX attachment_by_hash ON attachment (sha256);

-- Attachments filed into the chart, without copying the bytes.
ALTER TABLE chart_document ADD COLUMN attachment_id INTEGER REFERENCES attachment (id);
CREATE UNIQUE INDEX chart_document_by_attachment ON chart_document (attachment_id)
    WHERE attachment_id IS NOT NULL;
