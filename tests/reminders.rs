//! Staff are reminded, once per unread episode, of patient messages left unread for the
//! configured number of business hours; the reminder names no patient and no message.

use crate::harness::*;
use std::time::{Duration, Instant};

const DAY: i64 = 86_400;

fn reminders(server: &Server) -> Vec<Vec<String>> {
    db_rows(&server.data, "SELECT recipient, subject, body_text FROM outbox WHERE kind = 'unread_reminder' ORDER BY id", &[])
}

/// Waits up to `limit` for at least `count` reminders, then returns them.
fn wait_for(server: &Server, count: usize, limit: Duration) -> Vec<Vec<String>> {
    let deadline = Instant::now() + limit;
    loop {
        let rows = reminders(server);
        if rows.len() >= count || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn unread_patient_messages_are_reminded_once_per_episode() {
    // 200 business hours: four weeks of business days.
    let server = Server::start(Options::demo().env("CAREPOST_REMINDER_BUSINESS_HOURS", "200"));
    // The demo's unread threads are hours to a day old: nothing is due yet.
    assert!(wait_for(&server, 1, Duration::from_secs(7)).is_empty());

    // Five weeks later: one reminder to each staff member with an unread thread (NP Kim: Alex's
    // follow-up; Dr. Lee: Riley's form), and no patient details.
    server.advance_clock(35 * DAY);
    let rows = wait_for(&server, 2, Duration::from_secs(10));
    let mut to: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    to.sort();
    assert_eq!(to, ["dr.lee@demo.test", "np.kim@demo.test"], "{rows:?}");
    for row in &rows {
        assert_eq!(row[1], "You have unread patient messages in Carepost");
        for secret in [
            "Alex",
            "Riley",
            "Rivera",
            "Morgan",
            "Blood pressure",
            "sports",
            "1984",
        ] {
            assert!(
                !row[2].contains(secret),
                "reminder mentions {secret}: {}",
                row[2]
            );
        }
        assert!(row[2].contains("/practice/login"));
    }

    // Not again for the same unread episode.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(reminders(&server).len(), 2);

    // Alex writes again in his newest thread: a new unread episode for the staff on it,
    // reminded once it is old enough.
    let mut alex = server.client();
    alex.login_portal("alex@demo.test", DEMO_PASSWORD)
        .assert_status(303);
    let mailbox = alex.get("/portal/messages");
    let marker = "/portal/messages/";
    let thread = mailbox
        .body
        .match_indices(marker)
        .map(|(i, _)| &mailbox.body[i + marker.len()..])
        .find(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .expect("a thread link");
    let page = alex.get(&format!("/portal/messages/{thread}"));
    let key_marker = "name=\"key\" value=\"";
    let key_at = page.body.find(key_marker).unwrap() + key_marker.len();
    let key = page.body[key_at..key_at + 64].to_owned();
    let csrf = page.csrf();
    alex.post_form(
        &format!("/portal/messages/{thread}/reply"),
        &[
            ("csrf", &csrf),
            ("key", &key),
            ("body", "Any news?"),
            ("link", ""),
        ],
    )
    .assert_status(303);
    server.advance_clock(35 * DAY);
    let rows = wait_for(&server, 3, Duration::from_secs(10));
    assert_eq!(rows.len(), 3, "{rows:?}");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        reminders(&server).len(),
        3,
        "one reminder per new episode only"
    );
}
