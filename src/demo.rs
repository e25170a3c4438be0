//! The demo practice: seeded once into an empty data folder, so an evaluator can try every part
//! of Carepost at once. It goes through the same storage code as the product.

use crate::crypto;
use crate::db::accounts::{self, NewStaff};
use crate::db::patients::{self, NewInvitation, NewPatient};
use crate::db::practice;
use rusqlite::{Connection, TransactionBehavior};

pub const PRACTICE_NAME: &str = "Demo Family Practice";

pub struct DemoStaff {
    pub email: &'static str,
    pub name: &'static str,
    pub degree: &'static str,
    pub level: u8,
    pub admin: bool,
}

pub const STAFF: &[DemoStaff] = &[
    DemoStaff {
        email: "admin@demo.test",
        name: "Avery Admin",
        degree: "Practice manager",
        level: 1,
        admin: true,
    },
    DemoStaff {
        email: "dr.lee@demo.test",
        name: "Dr. Morgan Lee",
        degree: "MD",
        level: 4,
        admin: false,
    },
    DemoStaff {
        email: "np.kim@demo.test",
        name: "Jamie Kim",
        degree: "NP",
        level: 3,
        admin: false,
    },
    DemoStaff {
        email: "rn.cho@demo.test",
        name: "Casey Cho",
        degree: "RN",
        level: 2,
        admin: false,
    },
    DemoStaff {
        email: "desk@demo.test",
        name: "Drew Desk",
        degree: "Front desk",
        level: 1,
        admin: false,
    },
];

/// What `serve --demo` prints after seeding.
pub enum Seeded {
    /// Seeded now, with this password for every login.
    Now { password: String, generated: bool },
    /// The folder already held the demo practice; its logins are unchanged.
    Already,
}

/// Seeds the demo practice into an empty database, once. A folder holding a real practice is
/// refused.
pub fn seed(conn: &mut Connection, password: Option<String>, now: i64) -> Result<Seeded, String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| format!("cannot seed the demo practice: {e}"))?;
    match practice::get(&tx).map_err(|e| e.to_string())? {
        Some(p) if p.is_demo => return Ok(Seeded::Already),
        Some(p) => {
            return Err(format!(
                "This data folder already holds the practice \"{}\": the demo is only seeded into \
                 an empty folder. Choose another with --data.",
                p.name
            ))
        }
        None => {}
    }
    let generated = password.is_none();
    // Every generated password meets the portal's policy: upper, lower and digits.
    let password = password.unwrap_or_else(|| format!("Demo-{}-7", &crypto::random_token()[..12]));
    let hash = crypto::hash_password(&password)?;
    insert_all(&tx, &hash, now).map_err(|e| format!("cannot seed the demo practice: {e}"))?;
    tx.commit()
        .map_err(|e| format!("cannot seed the demo practice: {e}"))?;
    Ok(Seeded::Now {
        password,
        generated,
    })
}

fn insert_all(conn: &Connection, hash: &str, now: i64) -> rusqlite::Result<()> {
    practice::insert(conn, PRACTICE_NAME, true, true, now)?;
    for s in STAFF {
        accounts::insert_staff(
            conn,
            &NewStaff {
                email: s.email,
                name: s.name,
                degree: s.degree,
                access_level: s.level,
                is_admin: s.admin,
                password_hash: hash,
            },
            now,
        )?;
    }
    // Enrolled: Alex has a portal account reaching their own record.
    let alex = patients::insert(
        conn,
        &NewPatient {
            first_name: "Alex",
            last_name: "Rivera",
            date_of_birth: "1984-03-14",
            email: "alex@demo.test",
            phone: "555-0101",
        },
        now,
    )?;
    let alex_account =
        accounts::insert_portal_account(conn, "alex@demo.test", "Alex Rivera", hash, now)?;
    accounts::grant_access(conn, alex_account, alex, "self", "", now)?;

    // Invited, not yet enrolled: a pending invitation whose link and PIN nobody knows.
    let sam = patients::insert(
        conn,
        &NewPatient {
            first_name: "Sam",
            last_name: "Patel",
            date_of_birth: "1991-07-02",
            email: "sam@demo.test",
            phone: "555-0102",
        },
        now,
    )?;
    patients::insert_invitation(
        conn,
        &NewInvitation {
            patient_id: sam,
            role: "self",
            email: "sam@demo.test",
            phone: "555-0102",
            caregiver_name: "",
            relationship: "",
            token_hash: &crypto::sha256_hex(crypto::random_token().as_bytes()),
            pin_hash: &crypto::sha256_hex(crypto::random_digits(6).as_bytes()),
            expires_at: now + 30 * 86_400,
            created_by: None,
        },
        now,
    )?;

    // A child whose parent, Jordan, holds caregiver access.
    let riley = patients::insert(
        conn,
        &NewPatient {
            first_name: "Riley",
            last_name: "Morgan",
            date_of_birth: "2017-09-21",
            email: "",
            phone: "555-0103",
        },
        now,
    )?;
    let jordan =
        accounts::insert_portal_account(conn, "jordan@demo.test", "Jordan Morgan", hash, now)?;
    accounts::grant_access(conn, jordan, riley, "caregiver", "Parent", now)?;
    Ok(())
}

/// The lines printed after seeding: where to sign in, and as whom.
pub fn logins_text(base: &str, seeded: &Seeded) -> String {
    let password_line = match seeded {
        Seeded::Now {
            password,
            generated: true,
        } => format!("Password for every demo login (generated): {password}"),
        Seeded::Now {
            generated: false, ..
        } => "Password for every demo login: the value of CAREPOST_DEMO_PASSWORD".to_owned(),
        Seeded::Already => {
            "The demo practice was seeded earlier; its password is the one printed then.".to_owned()
        }
    };
    let mut out =
        format!("Demo practice \"{PRACTICE_NAME}\" (patient messaging enabled)\n{password_line}\n");
    out.push_str(&format!("  Practice view: {base}/practice/login\n"));
    for s in STAFF {
        let role = if s.admin { ", administrator" } else { "" };
        out.push_str(&format!(
            "    {:<18} {} ({}), level {}{role}\n",
            s.email, s.name, s.degree, s.level
        ));
    }
    out.push_str(&format!("  Patient portal: {base}/portal/login\n"));
    out.push_str("    alex@demo.test     Alex Rivera, enrolled patient\n");
    out.push_str("    jordan@demo.test   Jordan Morgan, caregiver of Riley Morgan (child)\n");
    out.push_str("    sam@demo.test      Sam Patel, invited but not yet enrolled (no login yet)\n");
    out
}
