-- Practice settings beyond the name.
ALTER TABLE practice ADD COLUMN auto_chart INTEGER NOT NULL DEFAULT 0;
ALTER TABLE practice ADD COLUMN archive_for_everyone INTEGER NOT NULL DEFAULT 0;
-- 'everyone': every staff user may invite patients; 'chosen': administrators and the users
-- marked may_invite.
ALTER TABLE practice ADD COLUMN invite_policy TEXT NOT NULL DEFAULT 'everyone'
    CHECK (invite_policy IN ('everyone', 'chosen'));
ALTER TABLE practice ADD COLUMN auto_invite INTEGER NOT NULL DEFAULT 0;

ALTER TABLE staff ADD COLUMN may_invite INTEGER NOT NULL DEFAULT 0;

CREATE INDEX patient_by_email ON patient (email COLLATE NOCASE);
CREATE INDEX patient_by_birth ON patient (date_of_birth);
CREATE INDEX invitation_by_status ON invitation (patient_id, role, status);

-- One-time password links (reset by the user, or sent by an administrator).
CREATE TABLE password_reset (
    token_hash      TEXT    PRIMARY KEY,
    audience        TEXT    NOT NULL CHECK (audience IN ('staff', 'portal')),
    principal_id    INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    used_at         INTEGER,
    created_at      INTEGER NOT NULL
);
CREATE INDEX password_reset_by_principal ON password_reset (audience, principal_id, created_at);

-- Every email is a row here, written in the transaction of the event that causes it, and sent
-- afterwards by the mail worker. Bodies never carry health information or PINs.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    kind            TEXT    NOT NULL,
    recipient       TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    body_text       TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'queued'
                            CHECK (state IN ('queued', 'sending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NOT NULL DEFAULT '',
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);

-- Append-only record of access to patient information and of security events. Each entry
-- carries the SHA-256 of the previous entry and of its own content, so an edit, deletion or
-- reordering is detectable.
CREATE TABLE audit_event (
    id              INTEGER PRIMARY KEY,
    at              INTEGER NOT NULL,
    actor_kind      TEXT    NOT NULL,   -- staff, portal, system, anonymous
    actor_id        INTEGER,
    action          TEXT    NOT NULL,
    patient_id      INTEGER,
    object          TEXT    NOT NULL DEFAULT '',
    outcome         TEXT    NOT NULL DEFAULT 'ok',
    client          TEXT    NOT NULL DEFAULT '',
    prev_hash       TEXT    NOT NULL,
    hash            TEXT    NOT NULL
);
CREATE INDEX audit_by_time ON audit_event (at);
CREATE INDEX audit_by_patient ON audit_event (patient_id, at);
CREATE INDEX audit_by_actor ON audit_event (actor_kind, actor_id, at);
