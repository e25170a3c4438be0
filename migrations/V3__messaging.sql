-- A conversation between one patient (and their caregivers) and the practice.
CREATE TABLE thread (
    id                  INTEGER PRIMARY KEY,
    patient_id          INTEGER NOT NULL REFERENCES patient (id),
    subject             TEXT    NOT NULL,
    started_by          TEXT    NOT NULL CHECK (started_by IN ('staff', 'portal')),
    created_at          INTEGER NOT NULL,
    -- Messages the patient can see (internal notes excluded), and the newest of them.
    visible_count       INTEGER NOT NULL DEFAULT 0,
    last_visible_at     INTEGER NOT NULL,
    -- The newest message from the practice, for the portal's unread marker.
    last_staff_message_id INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX thread_by_patient ON thread (patient_id, last_visible_at DESC, id DESC);

-- Messages are never edited or deleted.
CREATE TABLE message (
    id                  INTEGER PRIMARY KEY,
    thread_id           INTEGER NOT NULL REFERENCES thread (id),
    sender_kind         TEXT    NOT NULL CHECK (sender_kind IN ('staff', 'portal')),
    sender_staff_id     INTEGER REFERENCES staff (id),
    sender_account_id   INTEGER REFERENCES portal_account (id),
    -- For portal senders: 'self' or 'caregiver' at the time of sending.
    sender_role         TEXT    NOT NULL DEFAULT '',
    body                TEXT    NOT NULL,
    link_url            TEXT    NOT NULL DEFAULT '',
    -- An internal note (a forward's note): never shown to the patient.
    internal            INTEGER NOT NULL DEFAULT 0,
    idempotency_key     TEXT,
    created_at          INTEGER NOT NULL,
    CHECK ((sender_kind = 'staff') = (sender_staff_id IS NOT NULL)),
    CHECK ((sender_kind = 'portal') = (sender_account_id IS NOT NULL))
);
CREATE INDEX message_by_thread ON message (thread_id, id);
CREATE UNIQUE INDEX message_by_idempotency_key ON message (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Each staff member's view of a thread addressed to, shared with or sent by them.
CREATE TABLE thread_staff (
    thread_id           INTEGER NOT NULL REFERENCES thread (id),
    staff_id            INTEGER NOT NULL REFERENCES staff (id),
    unread              INTEGER NOT NULL DEFAULT 0,
    archived            INTEGER NOT NULL DEFAULT 0,
    has_sent            INTEGER NOT NULL DEFAULT 0,
    last_activity_at    INTEGER NOT NULL,
    PRIMARY KEY (thread_id, staff_id)
);
CREATE INDEX thread_staff_box ON thread_staff (staff_id, archived, last_activity_at DESC, thread_id DESC);
CREATE INDEX thread_staff_sent ON thread_staff (staff_id, has_sent, last_activity_at DESC, thread_id DESC);
CREATE INDEX thread_staff_unread ON thread_staff (staff_id) WHERE unread = 1 AND archived = 0;

-- How far each portal account has read each thread.
CREATE TABLE thread_portal_read (
    thread_id           INTEGER NOT NULL REFERENCES thread (id),
    account_id          INTEGER NOT NULL REFERENCES portal_account (id),
    last_read_message_id INTEGER NOT NULL,
    PRIMARY KEY (thread_id, account_id)
) WITHOUT ROWID;

-- The patient's chart documents: messages filed by staff (attachments join later).
CREATE TABLE chart_document (
    id                  INTEGER PRIMARY KEY,
    patient_id          INTEGER NOT NULL REFERENCES patient (id),
    message_id          INTEGER REFERENCES message (id),
    category            TEXT    NOT NULL DEFAULT 'message',
    title               TEXT    NOT NULL,
    filed_by            INTEGER REFERENCES staff (id),
    filed_at            INTEGER NOT NULL,
    UNIQUE (message_id)
);
CREATE INDEX chart_document_by_patient ON chart_document (patient_id, filed_at DESC);
