//! Who did what, appended to the tamper-evident audit log in the transaction of the act.

use crate::db::audit::{self, Entry};
use rusqlite::Connection;

/// The one acting: a staff user, a portal account, or Carepost itself.
#[derive(Clone, Debug)]
pub struct Actor {
    pub kind: &'static str,
    pub id: Option<i64>,
    /// The client's address, for the log.
    pub client: String,
}

impl Actor {
    pub fn staff(id: i64, client: &str) -> Actor {
        Actor {
            kind: "staff",
            id: Some(id),
            client: client.to_owned(),
        }
    }

    pub fn portal(id: i64, client: &str) -> Actor {
        Actor {
            kind: "portal",
            id: Some(id),
            client: client.to_owned(),
        }
    }

    pub fn anonymous(client: &str) -> Actor {
        Actor {
            kind: "anonymous",
            id: None,
            client: client.to_owned(),
        }
    }

    pub fn system() -> Actor {
        Actor {
            kind: "system",
            id: None,
            client: String::new(),
        }
    }

    pub fn staff_id(&self) -> Option<i64> {
        (self.kind == "staff").then_some(self.id).flatten()
    }
}

/// Records one event. `object` names what was acted on (an id, a setting); never health
/// information, a password, a token or a PIN.
pub fn record(
    conn: &Connection,
    actor: &Actor,
    action: &str,
    patient_id: Option<i64>,
    object: &str,
    now: i64,
) -> rusqlite::Result<()> {
    record_outcome(conn, actor, action, patient_id, object, "ok", now)
}

pub fn record_outcome(
    conn: &Connection,
    actor: &Actor,
    action: &str,
    patient_id: Option<i64>,
    object: &str,
    outcome: &str,
    now: i64,
) -> rusqlite::Result<()> {
    audit::append(
        conn,
        &Entry {
            at: now,
            actor_kind: actor.kind,
            actor_id: actor.id,
            action,
            patient_id,
            object,
            outcome,
            client: &actor.client,
        },
    )
}
