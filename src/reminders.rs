//! Reminders to staff of patient messages left unread for a number of business hours: one email
//! per staff member per sweep, naming no patient and no message.

use crate::db::messages;
use crate::outbox;
use rusqlite::Connection;

const DAY: i64 = 86_400;
const OPEN: i64 = 8 * 3600;
const CLOSE: i64 = 18 * 3600;

/// Seconds of business time (08:00-18:00 local, Monday to Friday) between two instants.
pub fn business_seconds_between(start: i64, end: i64, utc_offset: i64) -> i64 {
    if end <= start {
        return 0;
    }
    let (start, end) = (start + utc_offset, end + utc_offset);
    let mut total = 0;
    let mut day = start.div_euclid(DAY);
    let last = end.div_euclid(DAY).min(day + 400);
    while day <= last {
        // 1970-01-01 was a Thursday: Monday is 0.
        let weekday = (day + 3).rem_euclid(7);
        if weekday < 5 {
            let (open, close) = (day * DAY + OPEN, day * DAY + CLOSE);
            total += (close.min(end) - open.max(start)).max(0);
        }
        day += 1;
    }
    total
}

/// Queues the reminders that are due; returns how many emails were queued.
pub fn sweep(
    conn: &mut Connection,
    practice: &str,
    base_url: &str,
    hours: u64,
    utc_offset: i64,
    now: i64,
) -> rusqlite::Result<usize> {
    if hours == 0 {
        return Ok(0);
    }
    let due_after = i64::try_from(hours)
        .unwrap_or(i64::MAX / 7200)
        .saturating_mul(3600);
    let tx = crate::db::begin_write(&*conn)?;
    let mut reminded_staff: Option<i64> = None;
    let mut queued = 0;
    for (staff_id, email, thread_id, since) in messages::unreminded_unread(&tx, now - due_after)? {
        if business_seconds_between(since, now, utc_offset) < due_after {
            continue;
        }
        if reminded_staff != Some(staff_id) {
            outbox::queue_unread_reminder(&tx, practice, &email, base_url, now)?;
            reminded_staff = Some(staff_id);
            queued += 1;
        }
        messages::mark_reminded(&tx, staff_id, thread_id, now)?;
    }
    tx.commit()?;
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-23 is a Monday.
    const MONDAY: i64 = 20_780 * DAY;

    #[test]
    fn business_hours() {
        assert_eq!((MONDAY / DAY + 3).rem_euclid(7), 0);
        let h = 3600;
        assert_eq!(
            business_seconds_between(MONDAY + 9 * h, MONDAY + 11 * h, 0),
            2 * h
        );
        assert_eq!(
            business_seconds_between(MONDAY + 17 * h, MONDAY + DAY + 9 * h, 0),
            2 * h
        );
        // Friday 17:00 to Monday 09:00: one hour on Friday, one on Monday.
        assert_eq!(
            business_seconds_between(MONDAY + 4 * DAY + 17 * h, MONDAY + 7 * DAY + 9 * h, 0),
            2 * h
        );
        // A local offset moves the business day.
        assert_eq!(
            business_seconds_between(MONDAY + 13 * h, MONDAY + 14 * h, -5 * h),
            h
        );
        assert_eq!(
            business_seconds_between(MONDAY + 3 * h, MONDAY + 4 * h, -5 * h),
            0
        );
    }
}
