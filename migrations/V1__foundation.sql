-- The practice itself: exactly one row once setup is done.
CREATE TABLE practice (
    id                  INTEGER PRIMARY KEY CHECK (id = 1),
    name                TEXT    NOT NULL,
    phone               TEXT    NOT NULL DEFAULT '',
    messaging_enabled   INTEGER NOT NULL DEFAULT 0,
    is_demo             INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL
);

-- The one-time first-run setup link; only its hash is kept.
CREATE TABLE setup_token (
    token_hash  TEXT    PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);

CREATE TABLE staff (
    id              INTEGER PRIMARY KEY,
    email           TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    name            TEXT    NOT NULL,
    degree          TEXT    NOT NULL DEFAULT '',
    access_level    INTEGER NOT NULL CHECK (access_level BETWEEN 1 AND 4),
    is_admin        INTEGER NOT NULL DEFAULT 0,
    active          INTEGER NOT NULL DEFAULT 1,
    password_hash   TEXT    NOT NULL,
    created_at      INTEGER NOT NULL
);

CREATE TABLE patient (
    id              INTEGER PRIMARY KEY,
    first_name      TEXT    NOT NULL,
    last_name       TEXT    NOT NULL,
    date_of_birth   TEXT    NOT NULL,          -- YYYY-MM-DD
    email           TEXT    NOT NULL DEFAULT '',
    phone           TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL
);
CREATE INDEX patient_by_name ON patient (last_name COLLATE NOCASE, first_name COLLATE NOCASE);

-- A portal login: a patient, a parent, or a caregiver. It reaches patient records only through
-- portal_access rows.
CREATE TABLE portal_account (
    id              INTEGER PRIMARY KEY,
    email           TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    name            TEXT    NOT NULL,
    password_hash   TEXT    NOT NULL,
    created_at      INTEGER NOT NULL
);

CREATE TABLE portal_access (
    id              INTEGER PRIMARY KEY,
    account_id      INTEGER NOT NULL REFERENCES portal_account (id),
    patient_id      INTEGER NOT NULL REFERENCES patient (id),
    role            TEXT    NOT NULL CHECK (role IN ('self', 'caregiver')),
    relationship    TEXT    NOT NULL DEFAULT '',
    status          TEXT    NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER,
    UNIQUE (account_id, patient_id)
);
CREATE INDEX portal_access_by_patient ON portal_access (patient_id);

-- A portal invitation: a one-time link (only its hash kept) and a 6-digit PIN that staff hand to
-- the patient. The PIN is kept readable because the patient page shows it to staff; alone it
-- opens nothing without the link.
CREATE TABLE invitation (
    id              INTEGER PRIMARY KEY,
    patient_id      INTEGER NOT NULL REFERENCES patient (id),
    role            TEXT    NOT NULL CHECK (role IN ('self', 'caregiver')),
    email           TEXT    NOT NULL,
    phone           TEXT    NOT NULL DEFAULT '',
    caregiver_name  TEXT    NOT NULL DEFAULT '',
    relationship    TEXT    NOT NULL DEFAULT '',
    token_hash      TEXT    NOT NULL UNIQUE,
    pin             TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'used', 'cancelled', 'locked')),
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    expires_at      INTEGER NOT NULL,
    created_by      INTEGER REFERENCES staff (id),
    created_at      INTEGER NOT NULL
);
CREATE INDEX invitation_by_patient ON invitation (patient_id);

-- Server-side sessions, keyed by the SHA-256 of the cookie token.
CREATE TABLE session (
    token_hash          TEXT    PRIMARY KEY,
    audience            TEXT    NOT NULL CHECK (audience IN ('staff', 'portal')),
    principal_id        INTEGER NOT NULL,
    csrf_token          TEXT    NOT NULL,
    acting_patient_id   INTEGER REFERENCES patient (id),
    created_at          INTEGER NOT NULL,
    last_seen_at        INTEGER NOT NULL
);
CREATE INDEX session_by_principal ON session (audience, principal_id);

-- Failed sign-ins, counted per address typed whether or not an account has it, so that the
-- throttle itself never reveals which addresses exist.
CREATE TABLE login_throttle (
    audience        TEXT    NOT NULL,
    email           TEXT    NOT NULL COLLATE NOCASE,
    failures        INTEGER NOT NULL,
    locked_until    INTEGER NOT NULL,
    last_failure_at INTEGER NOT NULL,
    PRIMARY KEY (audience, email)
);
