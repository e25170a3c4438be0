//! Message forms with one optional file, read as a stream: the file goes to a temporary file
//! while it is hashed and checked, never into memory; the declared body size is checked before
//! anything is read; a malformed or cut-off body is an error, not a silently shorter form.

use super::form::{self, Form};
use super::App;
use crate::attachments::{self, Received, Refusal};
use crate::error::{AppError, AppResult, FieldErrors};
use crate::messaging::Draft;
use multipart::server::Multipart;
use rouille::Request;
use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

/// The form of a message page, and what became of its file.
pub struct MessageForm {
    pub form: Form,
    pub file: Option<Received>,
    /// The file broke a rule; the rest of the form is kept.
    pub refused: Option<Refusal>,
}

/// Notices a body that ends before its declared length (a dropped or cut-off upload), and
/// never hands the parser a read that ends between a CR and its LF: multipart 0.18 then keeps
/// the CRLF before the closing boundary as part of the file (upstream issue 139), storing two
/// bytes that were never sent.
struct Counted<R> {
    inner: R,
    read: u64,
    declared: u64,
    cut_off: Rc<Cell<bool>>,
    /// A CR held back from the end of the previous read.
    held_cr: bool,
}

impl<R: Read> Counted<R> {
    fn read_inner(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if n == 0 && !buf.is_empty() && self.read < self.declared {
            self.cut_off.set(true);
        }
        Ok(n)
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut filled = 0;
        if self.held_cr {
            buf[0] = b'\r';
            filled = 1;
            self.held_cr = false;
        }
        if filled < buf.len() {
            filled += self.read_inner(&mut buf[filled..])?;
        }
        // Ends in CR: read on until the next byte is here too, or hold the CR back.
        while filled > 0 && buf[filled - 1] == b'\r' {
            if filled < buf.len() {
                let more = self.read_inner(&mut buf[filled..])?;
                if more == 0 {
                    break;
                }
                filled += more;
            } else if filled > 1 {
                self.held_cr = true;
                filled -= 1;
                break;
            } else {
                break;
            }
        }
        Ok(filled)
    }
}

/// Bodies declared larger than this are not read at all.
const ABSURD_BODY: u64 = 1 << 30;

const INCOMPLETE: &str = "The upload did not arrive completely, so nothing was sent. Try again.";

fn boundary(content_type: &str) -> Option<&str> {
    let start = content_type.find("boundary=")? + "boundary=".len();
    let value = content_type[start..]
        .split(';')
        .next()?
        .trim()
        .trim_matches('"');
    (!value.is_empty() && value.len() <= 200).then_some(value)
}

/// Reads a message form: url-encoded (no file) or multipart with at most one file.
pub fn read_message_form(app: &App, request: &Request) -> AppResult<MessageForm> {
    let content_type = request.header("Content-Type").unwrap_or("").to_owned();
    if !content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return Ok(MessageForm {
            form: form::read(app, request)?,
            file: None,
            refused: None,
        });
    }
    let boundary = boundary(&content_type)
        .ok_or_else(|| AppError::BadRequest("The form could not be read.".into()))?
        .to_owned();
    let text_limit = app.config.max_form_bytes;
    // The whole body may hold one file of the maximum size plus the form around it.
    let body_limit = attachments::MAX_BYTES + text_limit + 64 * 1024;
    let declared = form::content_length(request)?.ok_or_else(|| {
        AppError::BadRequest(
            "The upload did not say how large it is. Try again from the Carepost page.".into(),
        )
    })?;
    // A body declared far beyond any allowed upload is refused unread. Anything smaller is
    // parsed, so that a file over 25 MB is refused where it starts and the fields typed before
    // it are kept.
    if declared > ABSURD_BODY {
        return Err(AppError::PayloadTooLarge { limit: body_limit });
    }
    let body = request
        .data()
        .ok_or_else(|| AppError::Internal("request body already taken".into()))?;
    let cut_off = Rc::new(Cell::new(false));
    let counted = Counted {
        inner: body,
        read: 0,
        declared,
        cut_off: Rc::clone(&cut_off),
        held_cr: false,
    };
    let mut multipart = Multipart::with_body(counted, boundary);
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut text_bytes = 0u64;
    let mut file: Option<Received> = None;
    let mut refused = None;
    let mut files_seen = 0;
    let incomplete = || AppError::BadRequest(INCOMPLETE.into());
    // Parse errors end the request: the parser's "no more fields" is only trusted when the
    // closing boundary was read and the body was not cut short.
    while let Some(mut field) = multipart.read_entry().map_err(|_| incomplete())? {
        match field.headers.filename.clone() {
            Some(name) => {
                files_seen += 1;
                if files_seen > 1 {
                    return Err(AppError::BadRequest(
                        "Only one file may be attached to a message.".into(),
                    ));
                }
                if name.is_empty() {
                    // An empty part without a name is "no file chosen"; content without a
                    // name is refused.
                    let extra = io::copy(
                        &mut (&mut field.data).take(attachments::MAX_BYTES),
                        &mut io::sink(),
                    )
                    .map_err(|_| incomplete())?;
                    if extra > 0 {
                        refused = Some(Refusal::NoName);
                    }
                    continue;
                }
                match app.store.receive(&name, &mut field.data) {
                    Ok(Ok(received)) => file = Some(received),
                    Ok(Err(Refusal::TooLarge)) => {
                        // Stop reading: what came before the file is kept.
                        refused = Some(Refusal::TooLarge);
                        break;
                    }
                    Ok(Err(refusal)) => refused = Some(refusal),
                    Err(attachments::ReceiveError::Upload) => return Err(incomplete()),
                    Err(attachments::ReceiveError::Store(e)) => {
                        return Err(AppError::StorageFailed(format!("writing an upload: {e}")))
                    }
                }
            }
            None => {
                let mut value = Vec::new();
                (&mut field.data)
                    .take(text_limit + 1 - text_bytes.min(text_limit))
                    .read_to_end(&mut value)
                    .map_err(|_| incomplete())?;
                text_bytes += value.len() as u64;
                if text_bytes > text_limit {
                    return Err(AppError::PayloadTooLarge { limit: text_limit });
                }
                let value = String::from_utf8_lossy(&value)
                    .chars()
                    .filter(|c| *c != '\0' && *c != '\r')
                    .collect();
                pairs.push((field.headers.name.to_string(), value));
            }
        }
    }
    if cut_off.get() {
        return Err(incomplete());
    }
    Ok(MessageForm {
        form: Form::from_owned(pairs),
        file,
        refused,
    })
}

impl MessageForm {
    /// Reads a message form and checks its CSRF token before anything else happens; a file that
    /// came with a forged form is removed with it.
    pub fn read_signed(app: &App, request: &Request, csrf_token: &str) -> AppResult<MessageForm> {
        let message_form = read_message_form(app, request)?;
        super::csrf::check(&message_form.form, csrf_token)?;
        Ok(message_form)
    }

    /// The message as typed, with the received file.
    pub fn draft<'a>(&'a self, app: &'a App, with_subject: bool) -> Draft<'a> {
        Draft {
            subject: with_subject.then(|| self.form.get("subject")),
            body: self.form.get("body"),
            link: self.form.get("link"),
            file: self.file.as_ref().map(|f| (&app.store, f)),
        }
    }

    /// When the file broke a rule: the message beside the file field, and the status (413 for
    /// a file over the limit, else 400). Nothing is sent.
    pub fn refusal(&self) -> Option<(FieldErrors, u16)> {
        let refused = self.refused.as_ref()?;
        let mut errors = FieldErrors::default();
        errors.add("file", refused.message());
        let status = if *refused == Refusal::TooLarge {
            413
        } else {
            400
        };
        Some((errors, status))
    }

    /// Other problems with a form that carried a good file: browsers cannot keep a chosen file
    /// in a re-shown form, so say that it must be chosen again.
    pub fn explain(&self, mut errors: FieldErrors) -> FieldErrors {
        if self.file.is_some() {
            errors.add(
                "file",
                "Choose the file again: it was not sent because of the problems above.",
            );
        }
        errors
    }
}
