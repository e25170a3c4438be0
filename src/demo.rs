//! The demo practice: seeded once into an empty data folder, so an evaluator can try every part
//! of Carepost at once. It goes through the same storage code as the product.

use crate::audit::Actor;
use crate::crypto;
use crate::db::accounts::{self, NewStaff};
use crate::db::messages::{self, NewMessage, Sender};
use crate::db::patients::{self, Patient, PatientFields};
use crate::db::practice;
use crate::portal_access::{self, InviteRequest, Invited};
use rusqlite::Connection;

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
    /// Seeded now, with this password for every login, and Sam's invitation to try registering.
    Now {
        password: String,
        generated: bool,
        sam_link: String,
        sam_pin: String,
    },
    /// The folder already held the demo practice; its logins are unchanged.
    Already,
}

/// Seeds the demo practice into an empty database, once. A folder holding a real practice is
/// refused.
pub fn seed(
    conn: &mut Connection,
    password: Option<String>,
    base_url: &str,
    now: i64,
) -> Result<Seeded, String> {
    let fail = |e: rusqlite::Error| format!("cannot seed the demo practice: {e}");
    let tx = crate::db::begin_write(&*conn).map_err(fail)?;
    match practice::get(&tx).map_err(fail)? {
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
    let sam = insert_all(&tx, &hash, base_url, now).map_err(fail)?;
    tx.commit().map_err(fail)?;
    Ok(Seeded::Now {
        password,
        generated,
        sam_link: sam.link,
        sam_pin: sam.pin,
    })
}

fn patient(
    conn: &Connection,
    first: &str,
    last: &str,
    born: &str,
    email: &str,
    now: i64,
) -> rusqlite::Result<Patient> {
    let id = patients::insert(
        conn,
        &PatientFields {
            first_name: first,
            last_name: last,
            date_of_birth: born,
            email,
            phone: "555-0100",
        },
        now,
    )?;
    patients::get(conn, id, now)?.ok_or(rusqlite::Error::QueryReturnedNoRows)
}

/// Every portal status appears: enrolled, invited, not invited, revoked; a caregiver holding
/// two children, and a caregiver invitation waiting.
fn insert_all(
    conn: &Connection,
    hash: &str,
    base_url: &str,
    now: i64,
) -> rusqlite::Result<Invited> {
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
    let practice = practice::get(conn)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    let seeder = Actor::system();

    let alex = patient(conn, "Alex", "Rivera", "1984-03-14", "alex@demo.test", now)?;
    let alex_account =
        accounts::insert_portal_account(conn, "alex@demo.test", "Alex Rivera", hash, now)?;
    accounts::grant_access(conn, alex_account, alex.id, "self", "", now)?;
    let spouse = InviteRequest {
        email: "chris@demo.test",
        phone: "",
        caregiver: Some(("Chris Rivera", "Spouse")),
    };
    portal_access::invite(conn, &practice, &seeder, &alex, &spouse, base_url, now)?;

    let sam = patient(conn, "Sam", "Patel", "1991-07-02", "sam@demo.test", now)?;
    let request = InviteRequest {
        email: "sam@demo.test",
        phone: "555-0102",
        caregiver: None,
    };
    let sam_invitation =
        portal_access::invite(conn, &practice, &seeder, &sam, &request, base_url, now)?;

    patient(
        conn,
        "Taylor",
        "Nguyen",
        "1958-11-30",
        "taylor@demo.test",
        now,
    )?;

    let blake = patient(
        conn,
        "Morgan",
        "Blake",
        "1972-05-09",
        "morgan@demo.test",
        now,
    )?;
    let blake_account =
        accounts::insert_portal_account(conn, "morgan@demo.test", "Morgan Blake", hash, now)?;
    accounts::grant_access(conn, blake_account, blake.id, "self", "", now)?;
    portal_access::revoke_patient(conn, &seeder, blake.id, now)?;

    let jordan =
        accounts::insert_portal_account(conn, "jordan@demo.test", "Jordan Morgan", hash, now)?;
    let mut children = Vec::new();
    for (first, born) in [("Riley", "2017-09-21"), ("Quinn", "2020-02-11")] {
        let child = patient(conn, first, "Morgan", born, "", now)?;
        accounts::grant_access(conn, jordan, child.id, "caregiver", "Parent", now)?;
        children.push(child.id);
    }
    seed_threads(conn, alex.id, alex_account, children[0], jordan, now)?;
    Ok(sam_invitation)
}

/// A few threads in both directions, read and unread.
fn seed_threads(
    conn: &Connection,
    alex: i64,
    alex_account: i64,
    riley: i64,
    jordan: i64,
    now: i64,
) -> rusqlite::Result<()> {
    let staff = |email: &str| -> rusqlite::Result<i64> {
        accounts::staff_by_email(conn, email)?
            .map(|s| s.id)
            .ok_or(rusqlite::Error::QueryReturnedNoRows)
    };
    let (lee, kim) = (staff("dr.lee@demo.test")?, staff("np.kim@demo.test")?);
    let day = 86_400;
    let alex_sender = Sender::Portal {
        account_id: alex_account,
        caregiver: false,
    };
    let say = |thread: i64, sender: Sender, body: &str, at: i64| {
        messages::insert_message(
            conn,
            &NewMessage {
                thread_id: thread,
                sender,
                body,
                link_url: "",
                internal: false,
                idempotency_key: None,
            },
            at,
        )
    };

    // Alex and NP Kim: answered, then a follow-up Kim has not read yet.
    let t = messages::insert_thread(
        conn,
        alex,
        "Blood pressure readings",
        "portal",
        now - 3 * day,
    )?;
    say(t, alex_sender, "Hello,\nMy home readings this week were around 142/91 in the mornings. Should I change anything?\nThanks, Alex", now - 3 * day)?;
    messages::address_to_staff(conn, t, kim, false, false, now - 3 * day)?;
    say(t, Sender::Staff(kim), "Thanks for sending these, Alex. Keep taking readings twice a day for another week and bring the log to your visit on Friday.", now - 2 * day)?;
    messages::address_to_staff(conn, t, kim, false, true, now - 2 * day)?;
    messages::mark_read_portal(conn, t, alex_account)?;
    say(
        t,
        alex_sender,
        "Will do. Should I still take the morning dose before measuring?",
        now - day,
    )?;
    messages::patient_wrote(conn, t, now - day)?;

    // Dr. Lee writes to Alex: not read yet in the portal.
    let t = messages::insert_thread(
        conn,
        alex,
        "Follow-up after your visit",
        "staff",
        now - 5 * 3600,
    )?;
    say(t, Sender::Staff(lee), "Hi Alex,\nYour results are in and look good. Let's review them at your next appointment.\nDr. Lee", now - 5 * 3600)?;
    messages::address_to_staff(conn, t, lee, false, true, now - 5 * 3600)?;

    // Jordan writes for Riley to Dr. Lee: unread in the practice.
    let t = messages::insert_thread(conn, riley, "School sports form", "portal", now - 2 * 3600)?;
    say(t, Sender::Portal { account_id: jordan, caregiver: true }, "Riley needs the sports clearance form signed before next Monday. Can we drop it off at the front desk?", now - 2 * 3600)?;
    messages::address_to_staff(conn, t, lee, true, false, now - 2 * 3600)?;
    Ok(())
}

/// The lines printed after seeding: where to sign in, and as whom.
pub fn logins_text(base: &str, seeded: &Seeded) -> String {
    let mut out = format!("Demo practice \"{PRACTICE_NAME}\" (patient messaging enabled)\n");
    match seeded {
        Seeded::Now {
            password,
            generated,
            ..
        } => {
            if *generated {
                out.push_str(&format!(
                    "Password for every demo login (generated): {password}\n"
                ));
            } else {
                out.push_str(
                    "Password for every demo login: the value of CAREPOST_DEMO_PASSWORD\n",
                );
            }
        }
        Seeded::Already => out.push_str(
            "The demo practice was seeded earlier; its password is the one printed then.\n",
        ),
    }
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
    out.push_str(
        "    jordan@demo.test   Jordan Morgan, caregiver of Riley and Quinn Morgan (children)\n",
    );
    out.push_str("    morgan@demo.test   Morgan Blake, whose access the practice revoked\n");
    if let Seeded::Now {
        sam_link, sam_pin, ..
    } = seeded
    {
        out.push_str(&format!(
            "  Sam Patel is invited but not enrolled: register at {sam_link}\n    with date of birth 1991-07-02 and PIN {sam_pin}\n"
        ));
    }
    out
}
