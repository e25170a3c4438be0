//! Layout and components shared by both views.

pub mod layout;
pub mod messages;

use maud::{html, Markup};

pub use crate::error::FieldErrors;

/// The summary at the top of a form, linking to each field with a problem.
pub fn error_summary(errors: &FieldErrors) -> Markup {
    html! {
        @if !errors.is_empty() {
            div.error-summary role="alert" aria-labelledby="error-summary-title" {
                h2 #error-summary-title { "Please correct the following" }
                ul {
                    @for (field, message) in errors.iter() {
                        li { a href={ "#" (field) } { (message) } }
                    }
                }
            }
        }
    }
}

pub struct Field<'a> {
    pub name: &'static str,
    pub label: &'a str,
    pub kind: &'a str,
    pub value: &'a str,
    pub autocomplete: &'a str,
    pub hint: &'a str,
}

impl<'a> Field<'a> {
    pub fn new(name: &'static str, label: &'a str) -> Field<'a> {
        Field {
            name,
            label,
            kind: "text",
            value: "",
            autocomplete: "off",
            hint: "",
        }
    }
    pub fn kind(mut self, kind: &'a str) -> Self {
        self.kind = kind;
        self
    }
    pub fn value(mut self, value: &'a str) -> Self {
        self.value = value;
        self
    }
    pub fn autocomplete(mut self, autocomplete: &'a str) -> Self {
        self.autocomplete = autocomplete;
        self
    }
    pub fn hint(mut self, hint: &'a str) -> Self {
        self.hint = hint;
        self
    }

    /// A labelled input with its hint and error, described to screen readers.
    pub fn render(&self, errors: &FieldErrors) -> Markup {
        let error = errors.get(self.name);
        let hint_id = format!("{}-hint", self.name);
        let error_id = format!("{}-error", self.name);
        let mut described = Vec::new();
        if !self.hint.is_empty() {
            described.push(hint_id.as_str());
        }
        if error.is_some() {
            described.push(error_id.as_str());
        }
        let described = described.join(" ");
        html! {
            div.field.has-error[error.is_some()] {
                label for=(self.name) { (self.label) }
                @if !self.hint.is_empty() {
                    p.hint id=(hint_id) { (self.hint) }
                }
                @if let Some(message) = error {
                    p.field-error id=(error_id) { (message) }
                }
                input id=(self.name) name=(self.name) type=(self.kind) value=(self.value)
                    autocomplete=(self.autocomplete)
                    aria-invalid=[error.map(|_| "true")]
                    aria-describedby=[(!described.is_empty()).then_some(described.as_str())];
            }
        }
    }
}

/// The hidden CSRF field every state-changing form carries.
pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name=(crate::web::csrf::FIELD) value=(token); }
}

/// A labelled checkbox with an optional hint and error.
pub fn checkbox(
    name: &'static str,
    label: &str,
    checked: bool,
    hint: &str,
    errors: &FieldErrors,
) -> Markup {
    let error = errors.get(name);
    let mut described = Vec::new();
    if !hint.is_empty() {
        described.push(format!("{name}-hint"));
    }
    if error.is_some() {
        described.push(format!("{name}-error"));
    }
    html! {
        div.field.checkbox.has-error[error.is_some()] {
            @if let Some(message) = error {
                p.field-error id={ (name) "-error" } { (message) }
            }
            input type="checkbox" id=(name) name=(name) value="on" checked[checked]
                aria-invalid=[error.map(|_| "true")]
                aria-describedby=[(!described.is_empty()).then(|| described.join(" "))];
            label for=(name) { (label) }
            @if !hint.is_empty() {
                p.hint id={ (name) "-hint" } { (hint) }
            }
        }
    }
}

/// A labelled select of (value, text) options.
pub fn select(
    name: &'static str,
    label: &str,
    options: &[(String, String)],
    selected: &str,
    errors: &FieldErrors,
) -> Markup {
    let error = errors.get(name);
    html! {
        div.field.has-error[error.is_some()] {
            label for=(name) { (label) }
            @if let Some(message) = error {
                p.field-error id={ (name) "-error" } { (message) }
            }
            select id=(name) name=(name) aria-invalid=[error.map(|_| "true")]
                aria-describedby=[error.map(|_| format!("{name}-error"))] {
                @for (value, text) in options {
                    option value=(value) selected[value == selected] { (text) }
                }
            }
        }
    }
}

/// A one-button form that posts to `action` (for actions such as revoke or deactivate).
pub fn action_button(action: &str, csrf: &str, label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf_field(csrf))
            button class=(class) type="submit" { (label) }
        }
    }
}

/// A notice chosen by a fixed code in the address (`?notice=saved`), never user text.
pub fn notice(text: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = text {
            p.notice role="status" { (text) }
        }
    }
}
