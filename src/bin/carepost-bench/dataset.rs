//! A large practice, built through Carepost's own storage code: the same functions the pages call
//! (`messaging::patient_starts`, `staff_replies`, the attachment store...), so every message has
//! its audit entry, chart entry and counters exactly as in use. Only the fsync is left out while
//! building (`db::bulk_load_without_fsync`): a crash while building only means building again.

use carepost::attachments::Store;
use carepost::db::accounts::{self, NewStaff, Staff};
use carepost::db::practice::{self, Practice};
use carepost::db::{messages, patients, DataDir, Pool};
use carepost::messaging::{self, Draft, PortalCaller, Sent};
use carepost::{crypto, error::AppError};
use rusqlite::Connection;
use std::path::{Path, PathBuf};

/// The one password of every bench login.
pub const PASSWORD: &str = "Bench-password-7";

const DAY: i64 = 86_400;
const YEARS: i64 = 10;
/// Threads of each probe patient besides the measured one: more than one mailbox page.
const PROBE_HISTORY: usize = 24;
/// Messages in each measured thread.
pub const PROBE_THREAD_MESSAGES: usize = 10;

/// A small, fast, deterministic generator (xorshift64*): the same flags build the same practice.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const FIRST: &[&str] = &[
    "Alex", "Maria", "James", "Priya", "Wei", "Fatima", "John", "Olga", "Carlos", "Aisha", "Liam",
    "Noor", "Grace", "Mateo", "Hana", "Samuel", "Elena", "David", "Amara", "Kenji", "Sofia",
    "Omar", "Ruth", "Diego", "Mei", "Peter", "Leila", "Tomas", "Chloe", "Ivan",
];
const LAST: &[&str] = &[
    "Garcia", "Nguyen", "Smith", "Patel", "Kim", "Johnson", "Okafor", "Rossi", "Cohen", "Silva",
    "Novak", "Haddad", "Brown", "Tanaka", "Lopez", "Muller", "Walker", "Ali", "Jensen", "Costa",
    "Ivanova", "Clarke", "Moreau", "Singh", "Reyes", "Olsen", "Park", "Hughes", "Dubois", "Khan",
];
const SUBJECTS: &[&str] = &[
    "Question about my medication",
    "Lab results",
    "Prescription refill",
    "Follow-up after my visit",
    "Blood pressure readings",
    "Referral request",
    "Form for work",
    "Side effects",
    "Appointment question",
    "Vaccination record",
];
const BODIES: &[&str] = &[
    "Hello, I have been taking the new dose for two weeks and wanted to ask whether I should keep going at the same time every morning. Thank you.",
    "Thanks for the update. Please keep the same dose and let us know if anything changes before your next visit.",
    "Could you send the results to my email or tell me when I can see them here? I would like to bring them to my specialist.",
    "Your results look fine. We will go over the details at your next appointment; there is nothing you need to do now.",
    "The pharmacy says they need a new prescription. Could you send one to the usual pharmacy on Main Street?",
    "Done: the prescription was sent this morning. It should be ready after 4 pm.",
];

/// One measured portal user and the staff member who answers them.
#[derive(Clone, Debug)]
pub struct Probe {
    pub portal_email: String,
    pub staff_email: String,
    /// Their thread of exactly PROBE_THREAD_MESSAGES messages, the newest in both inboxes.
    pub thread: i64,
    /// A word that finds this patient in the practice's search (their last name).
    pub search: String,
}

struct Enrolled {
    patient_id: i64,
    account_id: i64,
    caregiver: bool,
}

pub struct Sizes {
    pub staff: usize,
    pub patients: usize,
    pub messages: u64,
    pub attachments: u64,
}

/// The practice as built so far; `grow_to` adds history.
pub struct Bench {
    pub data: PathBuf,
    pub probes: Vec<Probe>,
    pub messages: u64,
    pub threads: u64,
    pub attachments: u64,
    sizes: Sizes,
    now: i64,
    rng: Rng,
    clinicians: Vec<Staff>,
    enrolled: Vec<Enrolled>,
    practice: Option<Practice>,
}

fn fail(what: &str) -> impl Fn(AppError) -> String + '_ {
    move |e| format!("{what}: {e:?}")
}

fn open(data: &Path) -> Result<(DataDir, Connection), String> {
    carepost::db::bulk_load_without_fsync();
    let dir = DataDir::open(data)?;
    let conn = dir.connect()?;
    conn.pragma_update(None, "synchronous", "OFF")
        .map_err(|e| e.to_string())?;
    Ok((dir, conn))
}

/// What the practice is written through: the sends take a pool and write through
/// `Pool::write_together`, as in the server (in a bulk load it runs each write at once on the
/// pool's one connection), and so do the builder's own changes to threads (read markers,
/// archiving), so that one connection writes them all (a write from another connection would
/// empty its page cache each time). The builder's connection writes the staff and patients first.
struct Writers {
    conn: Connection,
    pool: Pool,
    /// Holds the folder's lock.
    _dir: DataDir,
}

impl Writers {
    fn open(data: &Path) -> Result<Writers, String> {
        let (dir, conn) = open(data)?;
        let pool = Pool::new(&dir, 1, 8)?;
        Ok(Writers {
            conn,
            pool,
            _dir: dir,
        })
    }
}

impl Bench {
    /// Staff, patients, portal accounts and the probes, in an empty folder.
    pub fn create(data: &Path, sizes: Sizes, probes: usize, now: i64) -> Result<Bench, String> {
        let writers = Writers::open(data)?;
        let conn = &writers.conn;
        let db = |e: rusqlite::Error| e.to_string();
        let hash = crypto::hash_password(PASSWORD)?;
        practice::insert(conn, "Riverside Family Practice", true, false, now).map_err(db)?;
        let mut rng = Rng::new(0x5eed_ca7e_9057);
        conn.execute_batch("BEGIN").map_err(db)?;
        // Clinicians (level 3 and 4) answer patients; the rest are nurses and the front desk.
        for i in 0..sizes.staff {
            let (degree, level) = match i % 5 {
                0 | 1 => ("MD", 4),
                2 => ("NP", 3),
                3 => ("RN", 2),
                _ => ("", 1),
            };
            let name = format!("{} {}", rng.pick(FIRST), rng.pick(LAST));
            accounts::insert_staff(
                conn,
                &NewStaff {
                    email: &format!("staff{i}@bench.test"),
                    name: &name,
                    degree,
                    access_level: level,
                    is_admin: i == 0,
                    password_hash: &hash,
                },
                now - YEARS * 365 * DAY,
            )
            .map_err(db)?;
        }
        let mut enrolled = Vec::new();
        for i in 0..sizes.patients {
            let (first, last) = (*rng.pick(FIRST), *rng.pick(LAST));
            let child = i >= probes && i % 20 == 19;
            let year = if child {
                2010 + rng.below(15)
            } else {
                1935 + rng.below(70)
            };
            let dob = format!("{year}-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28));
            let email = format!("patient{i}@bench.test");
            let id = patients::insert(
                conn,
                &patients::PatientFields {
                    first_name: first,
                    last_name: last,
                    date_of_birth: &dob,
                    email: if child { "" } else { &email },
                    phone: "555-0100",
                },
                now - rng.below((YEARS * 365 * DAY) as u64) as i64,
            )
            .map_err(db)?;
            // Probes are the first patients: all enrolled, none a child.
            let probe = i < probes;
            if child {
                let parent = format!("parent{i}@bench.test");
                let account =
                    accounts::insert_portal_account(conn, &parent, "A parent", &hash, now)
                        .map_err(db)?;
                accounts::grant_access(conn, account, id, "caregiver", "Parent", now)
                    .map_err(db)?;
                enrolled.push(Enrolled {
                    patient_id: id,
                    account_id: account,
                    caregiver: true,
                });
            } else if probe || rng.chance(0.6) {
                let account = accounts::insert_portal_account(
                    conn,
                    &email,
                    &format!("{first} {last}"),
                    &hash,
                    now,
                )
                .map_err(db)?;
                accounts::grant_access(conn, account, id, "self", "", now).map_err(db)?;
                enrolled.push(Enrolled {
                    patient_id: id,
                    account_id: account,
                    caregiver: false,
                });
            }
        }
        conn.execute_batch("COMMIT").map_err(db)?;
        let clinicians = accounts::message_recipients(conn).map_err(db)?;
        if clinicians.is_empty() || enrolled.len() <= probes {
            return Err(
                "too few staff or patients for the bench: raise --staff or --patients".into(),
            );
        }
        let practice = practice::get(conn).map_err(db)?;
        let mut bench = Bench {
            data: data.to_path_buf(),
            probes: Vec::new(),
            messages: 0,
            threads: 0,
            attachments: 0,
            sizes,
            now,
            rng,
            clinicians,
            enrolled,
            practice,
        };
        bench.add_probes(&writers, probes)?;
        Ok(bench)
    }

    /// Each probe patient: a history of PROBE_HISTORY threads over the years, then one thread of
    /// PROBE_THREAD_MESSAGES messages from the last hours with their own clinician.
    fn add_probes(&mut self, db: &Writers, count: usize) -> Result<(), String> {
        let store = Store::new(&self.data);
        store
            .open()
            .map_err(|e| format!("cannot open the attachment store: {e}"))?;
        for i in 0..count {
            let staff = self.clinicians[i % self.clinicians.len()].clone();
            for _ in 0..PROBE_HISTORY {
                let start = self.now - DAY - self.rng.below((YEARS * 365 * DAY) as u64) as i64;
                self.thread(db, &store, i, &staff, start, 3, None)?;
            }
            let start = self.now - 3 * 3600 + i as i64 * 10;
            let thread = self.thread(
                db,
                &store,
                i,
                &staff,
                start,
                PROBE_THREAD_MESSAGES,
                Some(60),
            )?;
            let patient = patients::get(&db.conn, self.enrolled[i].patient_id, self.now)
                .map_err(|e| e.to_string())?
                .ok_or("probe patient missing")?;
            self.probes.push(Probe {
                portal_email: format!("patient{i}@bench.test"),
                staff_email: staff.email.clone(),
                thread,
                search: patient.last_name.clone(),
            });
        }
        Ok(())
    }

    /// Adds threads spread over ten years until the practice holds `target` messages.
    pub fn grow_to(&mut self, target: u64, progress: impl Fn(u64)) -> Result<(), String> {
        let db = Writers::open(&self.data)?;
        let store = Store::new(&self.data);
        store
            .open()
            .map_err(|e| format!("cannot open the attachment store: {e}"))?;
        let probes = self.probes.len();
        let mut last_report = self.messages;
        while self.messages < target {
            let who = probes + self.rng.below((self.enrolled.len() - probes) as u64) as usize;
            let staff = self.rng.pick(&self.clinicians).clone();
            let start = self.now - DAY - self.rng.below((YEARS * 365 * DAY) as u64) as i64;
            let count = (1 + self.rng.below(7) as usize).min((target - self.messages) as usize);
            self.thread(&db, &store, who, &staff, start, count, None)?;
            if self.messages - last_report >= 100_000 {
                last_report = self.messages;
                progress(self.messages);
            }
        }
        // The pool's checkpoint thread must not meet the final one.
        db.pool.stop_threads();
        db.conn
            .pragma_update(None, "wal_checkpoint", "TRUNCATE")
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// One conversation between an enrolled patient (or their caregiver) and a clinician,
    /// alternating sides from `start`, `spacing` seconds apart (or up to two days); old ones end
    /// read and mostly archived. History stays older than the probes' threads.
    #[allow(clippy::too_many_arguments)]
    fn thread(
        &mut self,
        db: &Writers,
        store: &Store,
        who: usize,
        staff: &Staff,
        start: i64,
        count: usize,
        spacing: Option<i64>,
    ) -> Result<i64, String> {
        let Enrolled {
            patient_id,
            account_id,
            caregiver,
        } = self.enrolled[who];
        let caller = PortalCaller {
            account_id,
            patient_id,
            caregiver,
        };
        let practice = self.practice.clone().ok_or("no practice")?;
        let from_patient_first = self.rng.chance(0.75);
        let subject = *self.rng.pick(SUBJECTS);
        let mut at = start;
        let mut thread = 0;
        for k in 0..count {
            let from_patient = (k % 2 == 0) == from_patient_first;
            let body = *self.rng.pick(BODIES);
            let key = crypto::hex(&crypto::random_bytes::<32>());
            // Either side attaches files (a patient's photo, the practice's lab report).
            let attach = self
                .rng
                .chance(self.sizes.attachments as f64 / self.sizes.messages.max(1) as f64);
            let received = if attach {
                let mut content = format!(
                    "%PDF-1.4\n% carepost bench attachment {} {}\n",
                    self.attachments,
                    self.rng.next()
                )
                .into_bytes();
                content.resize(2048 + self.rng.below(6144) as usize, b' ');
                match store.receive("scan.pdf", &mut content.as_slice()) {
                    Ok(Ok(received)) => Some(received),
                    Ok(Err(refusal)) => {
                        return Err(format!(
                            "the attachment store refused a bench file: {}",
                            refusal.message()
                        ))
                    }
                    Err(_) => return Err("the attachment store could not take a bench file".into()),
                }
            } else {
                None
            };
            let draft = Draft {
                subject: (k == 0).then_some(subject),
                body,
                link: "",
                file: received.as_ref().map(|r| (store, r)),
            };
            let client = "127.0.0.1";
            let sent = match (k, from_patient) {
                (0, true) => messaging::patient_starts(
                    &db.pool,
                    &practice,
                    caller,
                    &staff.id.to_string(),
                    &draft,
                    &key,
                    client,
                    at,
                ),
                (0, false) => messaging::staff_starts(
                    &db.pool,
                    &practice,
                    staff,
                    patient_id,
                    &draft,
                    false,
                    &key,
                    "http://127.0.0.1",
                    client,
                    at,
                ),
                (_, true) => messaging::patient_replies(
                    &db.pool, &practice, caller, thread, &draft, &key, client, at,
                ),
                (_, false) => messaging::staff_replies(
                    &db.pool, staff, thread, &draft, false, &key, client, at,
                ),
            }
            .map_err(fail("sending a bench message"))?;
            match sent {
                Sent::Thread(id) => thread = id,
                Sent::Invalid(errors) => {
                    return Err(format!(
                        "a bench message was refused: {:?}",
                        errors.iter().collect::<Vec<_>>()
                    ))
                }
            }
            self.messages += 1;
            self.attachments += u64::from(attach);
            at = match spacing {
                Some(s) => at + s,
                None => (at + 600 + self.rng.below(2 * DAY as u64) as i64).min(self.now - 4 * 3600),
            };
        }
        self.threads += 1;
        // Conversations older than two weeks have been read on both sides; most are archived.
        if at < self.now - 14 * DAY {
            let (staff_id, archive) = (staff.id, self.rng.chance(0.6));
            db.pool
                .write_together(move |tx| {
                    messages::mark_read_staff(tx, thread, staff_id)?;
                    messages::mark_read_portal(tx, thread, account_id)?;
                    if archive {
                        messages::set_archived(tx, thread, staff_id, true, false)?;
                    }
                    Ok(())
                })
                .map_err(|e| e.to_string())?;
        }
        Ok(thread)
    }
}
