//! Carepost as a library: the binary (`src/main.rs`) and the benchmark program share it.

pub mod allocator;
pub mod attachments;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod dates;
pub mod db;
pub mod demo;
pub mod error;
pub mod logger;
pub mod mail;
pub mod messaging;
pub mod outbox;
pub mod patients;
pub mod portal_access;
pub mod reminders;
pub mod staff;
pub mod web;
