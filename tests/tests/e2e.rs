//! End-to-end tests.
mod compose;
mod compose_corpus;
mod crash;
mod daemon;
mod database;
mod faults;
mod foundation;
mod fuzz;
mod packaging;
mod registry;
mod runtime;
mod runtime_env;
mod secrets;
mod ssm_documents;
mod zero_downtime;
