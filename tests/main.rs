//! Integration tests: each module starts the real `carepost` binary and speaks HTTP to it.

mod harness;

mod attachments;
mod audit_report;
mod authz_matrix;
mod enrollment;
mod foundation;
mod hostile;
mod mail;
mod messaging;
mod operations;
mod reminders;
mod resilience;
mod smtp_sink;
mod transport;
