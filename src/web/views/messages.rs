//! Pieces of the Messages pages shared by the portal and the practice view.

use super::{error_summary, Field, FieldErrors};
use crate::dates::format_timestamp;
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

/// The messages of a thread, oldest first. Bodies are plain text: escaped, line breaks kept.
/// Staff also see which messages are filed in the chart.
pub fn conversation(messages: &[ShownMessage], patient_name: &str, for_staff: bool) -> Markup {
    html! {
        ol.conversation aria-label="Messages, oldest first" {
            @for m in messages {
                li.message.from-practice[m.from_practice].internal[m.internal] id={ "message-" (m.id) } {
                    header {
                        strong { (sender_line(m, patient_name)) }
                        time { (format_timestamp(m.created_at)) }
                    }
                    @if m.internal { p.hint { "Internal note – the patient does not see this." } }
                    @if for_staff && m.charted { p.hint { "Filed in the chart." } }
                    div.body { (m.body) }
                    @if !m.link_url.is_empty() {
                        p.link { "Link: " a href=(m.link_url) rel="noopener noreferrer" target="_blank" { (m.link_url) } }
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
            p.hint id="body-hint" { "Plain text, up to " (BODY_MAX) " characters." }
            @if let Some(message) = body_error { p.field-error id="body-error" { (message) } }
            textarea #body name="body" rows="8" aria-describedby="body-hint"
                aria-invalid=[body_error.map(|_| "true")] { (form.get("body")) }
        }
        (Field::new("link", "Link (optional)").kind("url").value(form.get("link"))
            .hint("A web address starting with http:// or https://, shown in full to the reader.").render(errors))
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
