//! Pieces of the Messages pages shared by the portal and the practice view.

use super::{error_summary, Field, FieldErrors};
use crate::dates::format_local;
use crate::db::messages::ShownMessage;
use crate::messaging::{BODY_MAX, DISCLAIMER, SUBJECT_MAX};
use crate::web::form::Form;
use maud::{html, Markup};

pub fn disclaimer() -> Markup {
    html! { p.disclaimer role="note" { (DISCLAIMER) } }
}

/// Who sent a message, in the words the reader should see.
pub fn sender_line(m: &ShownMessage, patient_name: &str) -> String {
    if m.from_practice {
        if m.sender_degree.is_empty() {
            m.sender_name.clone()
        } else {
            format!("{}, {}", m.sender_name, m.sender_degree)
        }
    } else if m.caregiver {
        format!("{} (caregiver) on behalf of {patient_name}", m.sender_name)
    } else {
        m.sender_name.clone()
    }
}

/// Where a thread's files are downloaded from, and (for staff) the CSRF token of the
/// "add to chart" forms.
pub struct FileLinks<'a> {
    /// For example `/portal/messages/12/files`.
    pub base: String,
    pub staff_csrf: Option<&'a str>,
}

/// "1.2 MB", "830 KB", "12 bytes".
pub fn human_size(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{:.1} MB", bytes as f64 / 1_000_000.0)
    } else if bytes >= 1_000 {
        format!("{} KB", bytes / 1_000)
    } else {
        format!("{bytes} bytes")
    }
}

/// The messages of a thread, oldest first. Bodies are plain text: escaped, line breaks kept.
/// Staff also see which messages are filed in the chart, and can file attachments.
pub fn conversation(messages: &[ShownMessage], patient_name: &str, files: &FileLinks) -> Markup {
    let for_staff = files.staff_csrf.is_some();
    html! {
        ol.conversation aria-label="Messages, oldest first" {
            @for m in messages {
                li.message.from-practice[m.from_practice].internal[m.internal] id={ "message-" (m.id) } {
                    header {
                        strong { (sender_line(m, patient_name)) }
                        time { (format_local(m.created_at)) }
                    }
                    @if m.internal { p.hint { "Internal note – the patient does not see this." } }
                    @if for_staff && m.charted { p.hint { "Filed in the chart." } }
                    div.body { (m.body) }
                    @if !m.link_url.is_empty() {
                        p.link { "Link: " a href=(m.link_url) rel="noopener noreferrer" target="_blank" { (m.link_url) } }
                    }
                    @if let Some(f) = &m.attachment {
                        div.attachment {
                            "Attached file: "
                            a href={ (files.base) "/" (f.id) } download { (f.file_name) }
                            " (" (human_size(f.size)) ")"
                            @if let Some(csrf) = files.staff_csrf {
                                @if f.charted {
                                    " – filed in the chart"
                                } @else {
                                    form.inline.chart-file method="post" action={ (files.base) "/" (f.id) "/chart" } {
                                        (super::csrf_field(csrf))
                                        label for={ "category-" (f.id) } { " File to chart as " }
                                        select id={ "category-" (f.id) } name="category" {
                                            @for c in crate::messaging::CHART_CATEGORIES { option value=(c) { (c) } }
                                        }
                                        button.small.secondary type="submit" { "Add to chart" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The fields of a message form: subject (new threads only), body, hyperlink, and the hidden
/// idempotency key that makes a repeated submit harmless.
pub fn message_fields(form: &Form, errors: &FieldErrors, with_subject: bool, key: &str) -> Markup {
    let body_error = errors.get("body");
    html! {
        input type="hidden" name="key" value=(key);
        @if with_subject {
            (Field::new("subject", "Subject").value(form.get("subject")).hint(&format!("Up to {SUBJECT_MAX} characters.")).render(errors))
        }
        div.field.has-error[body_error.is_some()] {
            label for="body" { "Message" }
            p.hint id="body-hint" { "Plain text, up to " (thousands(BODY_MAX)) " characters." }
            @if let Some(message) = body_error { p.field-error id="body-error" { (message) } }
            textarea #body name="body" rows="8"
                aria-describedby=(if body_error.is_some() { "body-hint body-error" } else { "body-hint" })
                aria-invalid=[body_error.map(|_| "true")] { (form.get("body")) }
        }
        (Field::new("link", "Link (optional)").kind("url").value(form.get("link"))
            .hint("A web address starting with http:// or https://, shown in full to the reader.").render(errors))
    }
}

/// 20000 as "20,000".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The one optional file, shown last in a message form so that every other field arrives
/// before it: a file refused while streaming then loses nothing that was typed.
pub fn file_field(errors: &FieldErrors) -> Markup {
    let error = errors.get("file");
    html! {
        div.field.has-error[error.is_some()] {
            label for="file" { "Attach a file (optional)" }
            p.hint id="file-hint" {
                "One file of 25 MB or less: " (crate::attachments::ALLOWED_TEXT)
                ". You can attach a file, add a link, or both."
            }
            @if let Some(message) = error { p.field-error id="file-error" { (message) } }
            input #file type="file" name="file"
                aria-describedby=(if error.is_some() { "file-hint file-error" } else { "file-hint" })
                accept=(crate::attachments::ALLOWED.iter().map(|(e, _)| format!(".{e}")).collect::<Vec<_>>().join(","))
                aria-invalid=[error.map(|_| "true")];
        }
    }
}

/// A new idempotency key for a form being shown: the one typed back when re-showing a form.
pub fn key_for(form: &Form) -> String {
    let typed = form.get("key");
    if typed.len() == 64 && typed.bytes().all(|b| b.is_ascii_hexdigit()) {
        typed.to_owned()
    } else {
        crate::crypto::random_token()
    }
}

pub fn summary(errors: &FieldErrors) -> Markup {
    error_summary(errors)
}
