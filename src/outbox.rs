//! The emails Carepost sends, as outbox rows written in the transaction of their cause. No
//! template takes a patient's name, date of birth, a PIN or anything clinical: an email says
//! only that something is waiting and where to sign in.

use crate::db::outbox::{self, NewEmail};
use rusqlite::Connection;

pub fn queue_invitation(
    conn: &Connection,
    practice: &str,
    to: &str,
    link: &str,
    caregiver: bool,
    now: i64,
) -> rusqlite::Result<i64> {
    let whom = if caregiver {
        "to help a family member or someone you care for through its secure patient portal"
    } else {
        "to its secure patient portal"
    };
    let body = format!(
        "Hello,\n\n{practice} has invited you {whom}.\n\n\
         To register, open this link. It works once and for 30 days:\n{link}\n\n\
         You will be asked for a PIN. The practice gives you the PIN in person or by phone; it is \
         never sent by email.\n\n\
         If you did not expect this invitation, you can ignore this email.\n\n{practice}\n"
    );
    outbox::queue(
        conn,
        &NewEmail {
            kind: if caregiver {
                "caregiver_invitation"
            } else {
                "invitation"
            },
            recipient: to,
            subject: &format!("Your invitation to the {practice} patient portal"),
            body_text: &body,
        },
        now,
    )
}

pub fn queue_password_reset(
    conn: &Connection,
    practice: &str,
    to: &str,
    link: &str,
    by_administrator: bool,
    now: i64,
) -> rusqlite::Result<i64> {
    let (why, valid) = if by_administrator {
        (
            "An administrator of your practice asked you to choose a new password",
            "24 hours",
        )
    } else {
        (
            "Someone, probably you, asked to reset your password",
            "one hour",
        )
    };
    let body = format!(
        "Hello,\n\n{why} for {practice} on Carepost.\n\n\
         To choose a new password, open this link within {valid}. It works once:\n{link}\n\n\
         If you did not ask for this, you can ignore this email: your password stays as it is.\n\n\
         {practice}\n"
    );
    outbox::queue(
        conn,
        &NewEmail {
            kind: "password_reset",
            recipient: to,
            subject: &format!("Choose a new password for {practice}"),
            body_text: &body,
        },
        now,
    )
}

/// "A new message is waiting": the only thing a message notification says.
pub fn queue_new_message_notice(
    conn: &Connection,
    practice: &str,
    to: &str,
    base_url: &str,
    now: i64,
) -> rusqlite::Result<i64> {
    let body = format!(
        "Hello,\n\n{practice} has sent you a new secure message. It is waiting in your patient \
         portal.\n\nTo read it, sign in at:\n{base_url}/portal/login\n\n\
         For your privacy, messages are never sent by email.\n\n{practice}\n"
    );
    outbox::queue(
        conn,
        &NewEmail {
            kind: "new_message",
            recipient: to,
            subject: &format!("New message from {practice}"),
            body_text: &body,
        },
        now,
    )
}

/// Tells a patient that someone was invited as a caregiver for their record.
pub fn queue_caregiver_notice(
    conn: &Connection,
    practice: &str,
    to: &str,
    now: i64,
) -> rusqlite::Result<i64> {
    let body = format!(
        "Hello,\n\n{practice} has invited someone to help you as a caregiver through its secure \
         patient portal. Once they register, they can see your portal record and write to the \
         practice on your behalf.\n\nIf you did not ask for this, please call the practice.\n\n{practice}\n"
    );
    outbox::queue(
        conn,
        &NewEmail {
            kind: "caregiver_notice",
            recipient: to,
            subject: &format!("A caregiver invitation for your {practice} portal"),
            body_text: &body,
        },
        now,
    )
}

/// To a staff member: unread patient messages are waiting; no patient details.
pub fn queue_unread_reminder(
    conn: &Connection,
    practice: &str,
    to: &str,
    base_url: &str,
    now: i64,
) -> rusqlite::Result<i64> {
    let body = format!(
        "Hello,\n\nYou have unread patient messages in Carepost.\n\nSign in to read them:\n{base_url}/practice/login\n\n{practice}\n"
    );
    outbox::queue(
        conn,
        &NewEmail {
            kind: "unread_reminder",
            recipient: to,
            subject: "You have unread patient messages in Carepost",
            body_text: &body,
        },
        now,
    )
}
