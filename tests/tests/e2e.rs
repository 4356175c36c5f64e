//! End-to-end tests.
mod foundation;
mod packaging;
mod ssm_documents;
mod crash;
mod daemon;
mod runtime;
mod database;
mod runtime_env;
mod compose;
mod registry;
mod faults;
mod fuzz;
mod secrets;
