//! Integration tests: each module starts the real `carepost` binary and speaks HTTP to it.

mod harness;

mod enrollment;
mod foundation;
mod transport;
