//! End-to-end tests.
mod foundation;
mod packaging;
mod ssm_documents;
