//! Serving an attachment to someone who may read its thread: verified against its hash first,
//! always as a download, with byte ranges for audio and video.

use super::views::layout::{message_page, Context};
use super::App;
use crate::attachments::Damage;
use crate::db::attachments::Attachment;
use crate::error::{AppError, AppResult};
use rouille::{Request, Response, ResponseBody};
use std::io::{Read, Seek, SeekFrom};

/// `attachment; filename="scan.pdf"; filename*=UTF-8''scan.pdf`, safe for any stored name.
fn disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// One `bytes=a-b` range within `size`, if the request asks for one.
fn requested_range(request: &Request, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = request.header("Range")?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return Some(Err(()));
    }
    let (start, end) = spec.split_once('-')?;
    let range = match (start.trim(), end.trim()) {
        ("", suffix) => suffix
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(|n| (size.saturating_sub(n), size - 1)),
        (start, "") => start.parse::<u64>().ok().map(|s| (s, size - 1)),
        (start, end) => match (start.parse::<u64>(), end.parse::<u64>()) {
            (Ok(s), Ok(e)) => Some((s, e.min(size - 1))),
            _ => None,
        },
    };
    Some(range.filter(|(s, e)| s <= e && *s < size).ok_or(()))
}

pub fn serve(app: &App, request: &Request, attachment: &Attachment) -> AppResult<Response> {
    let opened = app
        .store
        .open_verified(&attachment.sha256, attachment.size)
        .map_err(|e| AppError::internal("reading an attachment", e))?;
    let mut file = match opened {
        Ok(file) => file,
        Err(damage) => {
            let what = if damage == Damage::Missing {
                "missing"
            } else {
                "corrupt"
            };
            log::error!(
                "attachment {} is {what} in the store; refused to serve it",
                attachment.id
            );
            return Ok(message_page(
                &Context::public(app),
                "File unavailable",
                "This file cannot be downloaded because the stored copy is damaged. Nothing else is affected; the practice can restore it from a backup.",
            )
            .with_status_code(500));
        }
    };
    let size = attachment.size;
    let media =
        attachment.media_type.starts_with("audio/") || attachment.media_type.starts_with("video/");
    let (status, start, length) = match requested_range(request, size).filter(|_| media) {
        None => (200, 0, size),
        Some(Ok((start, end))) => (206, start, end - start + 1),
        Some(Err(())) => {
            return Ok(Response::empty_400()
                .with_status_code(416)
                .with_additional_header("Content-Range", format!("bytes */{size}")));
        }
    };
    file.seek(SeekFrom::Start(start))
        .map_err(|e| AppError::internal("seeking in an attachment", e))?;
    let length_usize =
        usize::try_from(length).map_err(|_| AppError::Internal("attachment too large".into()))?;
    let mut response = Response {
        status_code: status,
        headers: vec![
            ("Content-Type".into(), attachment.media_type.clone().into()),
            (
                "Content-Disposition".into(),
                disposition(&attachment.file_name).into(),
            ),
            // Even if a browser opened it, nothing in it could run.
            (
                "Content-Security-Policy".into(),
                "sandbox; default-src 'none'".into(),
            ),
        ],
        data: ResponseBody::from_reader_and_size(file.take(length), length_usize),
        upgrade: None,
    };
    if media {
        response = response.with_additional_header("Accept-Ranges", "bytes");
    }
    if status == 206 {
        response = response.with_additional_header(
            "Content-Range",
            format!("bytes {start}-{}/{size}", start + length - 1),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::disposition;

    #[test]
    fn disposition_is_safe() {
        assert_eq!(
            disposition("scan 1.pdf"),
            "attachment; filename=\"scan 1.pdf\"; filename*=UTF-8''scan%201.pdf"
        );
        let odd = disposition("a\"b\\c\u{e9}.txt");
        assert!(
            odd.starts_with("attachment; filename=\"a_b_c_.txt\""),
            "{odd}"
        );
        assert!(
            odd.ends_with("filename*=UTF-8''a%22b%5Cc%C3%A9.txt"),
            "{odd}"
        );
    }
}
