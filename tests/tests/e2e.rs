//! End-to-end tests.
mod foundation;
