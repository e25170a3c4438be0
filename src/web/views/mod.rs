//! Layout and components shared by both views.

pub mod layout;

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
