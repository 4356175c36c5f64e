//! One connection string, parsed once: what tokio-postgres reads, the TLS
//! settings it does not ([`super::tls`]), and the container address a
//! Compose service name was resolved to through Docker.
//!
//! The text carries a password: it and the password are registered with
//! the redaction layer before anything else happens, and neither is ever
//! formatted into an error ([`Dsn::endpoint`] says where, never who or how).
//! A database that cannot be reached (refused, timed out, name not
//! resolved, credentials refused, certificate refused) is a dependency that
//! stayed unavailable (exit 69), after a couple of quick retries for the
//! transient cases; a string that does not parse, or TLS settings that
//! cannot be used, are bad input (exit 2).

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;

use super::tls::{self, Tls, TlsError};
use crate::error::Chain;
use crate::output::register_secret;
use crate::retry::{Backoff, Retry};

/// Connection attempts before giving up; refused credentials and refused
/// certificates are not retried (another try cannot fix them).
const CONNECT_ATTEMPTS: u32 = 3;
const RETRY_PAUSE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum DsnError {
    /// The text does not parse as a PostgreSQL connection string. The text
    /// itself is never shown.
    #[error("the database URL is not a valid PostgreSQL connection string ({detail})")]
    BadUrl { detail: String },
    /// `sslmode` / `sslrootcert` cannot be used.
    #[error("the database URL's TLS settings: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot connect to {endpoint}: {detail}")]
    Connect { endpoint: String, detail: String },
    #[error("{endpoint} refused the credentials: {detail}")]
    Auth { endpoint: String, detail: String },
    /// The TLS handshake failed: most often the certificate did not verify.
    #[error("TLS with {endpoint} failed: {detail}")]
    Handshake { endpoint: String, detail: String },
}

impl DsnError {
    /// The database could not be reached or refused us (exit 69); the
    /// others are bad input (exit 2).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            DsnError::Connect { .. } | DsnError::Auth { .. } | DsnError::Handshake { .. }
        )
    }
}

/// A parsed connection string.
#[derive(Clone)]
pub struct Dsn {
    text: String,
    config: tokio_postgres::Config,
    tls: Tls,
    /// The address a Compose service name resolved to (Docker), if any.
    routed: Option<IpAddr>,
}

impl std::fmt::Debug for Dsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.endpoint())
    }
}

impl Dsn {
    /// Parse `text` (URL or `key=value` form) and register its secrets.
    pub fn parse(text: &str) -> Result<Dsn, DsnError> {
        register_secret(text);
        let (rest, tls) = tls::split(text)?;
        let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| DsnError::BadUrl {
            // tokio-postgres's parse errors name the problem, not the
            // value; redaction still runs over every output as a guard.
            detail: e.to_string(),
        })?;
        if let Some(password) = config.get_password() {
            register_secret(&String::from_utf8_lossy(password));
        }
        config.ssl_mode(tls.pg_mode());
        Ok(Dsn {
            text: text.to_owned(),
            config,
            tls,
            routed: None,
        })
    }

    /// The string as given (a job gets it as its `DATABASE_URL`).
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    /// Use `pem` as the `sslrootcert` file's bytes, read at `place` (the
    /// API container: its URL names its own file).
    pub fn set_root_pem(&mut self, pem: Vec<u8>, place: &str) {
        self.tls.root_pem = Some((pem, place.to_owned()));
    }

    /// `PostgreSQL at host:port/dbname` (plus the container address a
    /// service name resolved to): where, never who or how.
    pub fn endpoint(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let db = self.config.get_dbname().unwrap_or("(default database)");
        match self.routed {
            Some(ip) => format!("PostgreSQL at {host}:{port}/{db} (container address {ip})"),
            None => format!("PostgreSQL at {host}:{port}/{db}"),
        }
    }

    /// The host when it can be a Compose service name: one TCP host, one
    /// label (no dots: a domain or an IPv4 address; no colons: IPv6), not
    /// `localhost`, and no `hostaddr` already given.
    pub fn service_host(&self) -> Option<&str> {
        if !self.config.get_hostaddrs().is_empty() {
            return None;
        }
        match self.config.get_hosts() {
            [Host::Tcp(host)] if !host.contains(['.', ':']) && host != "localhost" => {
                Some(host.as_str())
            }
            _ => None,
        }
    }

    /// Connect to `ip` instead of looking the host name up. The name stays
    /// the TLS server name, so `verify-full` still checks the certificate
    /// against the name in the URL.
    pub fn route(&mut self, ip: IpAddr) {
        self.config.hostaddr(ip);
        self.routed = Some(ip);
    }

    /// The parts in which `other` names another database or connects
    /// another way (for the mismatch report; names only, no values).
    pub fn differences(&self, other: &Dsn) -> Vec<&'static str> {
        let (a, b) = (&self.config, &other.config);
        let mut out = Vec::new();
        if a.get_hosts() != b.get_hosts() || a.get_hostaddrs() != b.get_hostaddrs() {
            out.push("host");
        }
        let port = |c: &tokio_postgres::Config| match c.get_ports() {
            [] => vec![5432],
            ports => ports.to_vec(),
        };
        if port(a) != port(b) {
            out.push("port");
        }
        if a.get_dbname() != b.get_dbname() {
            out.push("dbname");
        }
        if a.get_user() != b.get_user() {
            out.push("user");
        }
        if a.get_password() != b.get_password() {
            out.push("password");
        }
        if self.tls != other.tls {
            out.push("tls");
        }
        out
    }

    /// One session, retried like every connection; `application_name` is
    /// `wavemap-agent` unless the string sets one.
    pub async fn connect(&self, timeout: Duration) -> Result<tokio_postgres::Client, DsnError> {
        let mut config = self.config.clone();
        config.connect_timeout(timeout);
        if config.get_application_name().is_none() {
            config.application_name("wavemap-agent");
        }
        let endpoint = self.endpoint();
        let connector = self.tls.connector()?;
        let mut retry = Retry::tries(CONNECT_ATTEMPTS, Backoff::constant(RETRY_PAUSE));
        loop {
            let error = match attempt(&config, &connector, timeout).await {
                Ok(client) => return Ok(client),
                Err(Failure::Tls(e)) if self.tls.mode == tls::SslMode::Prefer => {
                    // libpq's `prefer`: TLS first, plain when the handshake
                    // fails (a server without TLS is plain already).
                    log::info!(stage = "database"; "TLS with {endpoint} failed ({}); sslmode=prefer, so connecting without TLS", Chain(&e));
                    let mut plain = config.clone();
                    plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
                    match attempt(&plain, &connector, timeout).await {
                        Ok(client) => return Ok(client),
                        Err(other) => other,
                    }
                }
                Err(other) => other,
            };
            let text = match error {
                Failure::Tls(e) => {
                    return Err(DsnError::Handshake {
                        endpoint,
                        detail: self.tls.explain(&error_text(&e)),
                    })
                }
                Failure::Final(e) => {
                    let auth = matches!(
                        e.code(),
                        Some(&SqlState::INVALID_PASSWORD)
                            | Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
                    );
                    return Err(match auth {
                        true => DsnError::Auth {
                            endpoint,
                            detail: error_text(&e),
                        },
                        false => DsnError::Connect {
                            endpoint,
                            detail: error_text(&e),
                        },
                    });
                }
                Failure::Retry(text) => text,
            };
            let attempt = retry.attempt();
            if retry.exhausted() {
                return Err(DsnError::Connect {
                    endpoint,
                    detail: format!("{text} (after {attempt} attempts)"),
                });
            }
            log::warn!(stage = "database"; "cannot connect to {endpoint} (attempt {attempt}/{CONNECT_ATTEMPTS}): {text}; retrying");
            retry.pause().await;
        }
    }
}

/// How one attempt failed.
enum Failure {
    /// The TLS handshake (the certificate, mostly): not retried.
    Tls(tokio_postgres::Error),
    /// The server answered with a refusal retrying cannot change.
    Final(tokio_postgres::Error),
    /// Anything else: worth another try.
    Retry(String),
}

async fn attempt(
    config: &tokio_postgres::Config,
    connector: &tokio_postgres_rustls::MakeRustlsConnect,
    timeout: Duration,
) -> Result<tokio_postgres::Client, Failure> {
    // connect_timeout bounds each socket attempt; this bounds the whole
    // handshake too (a server that accepts and then says nothing).
    let result = tokio::time::timeout(
        timeout + Duration::from_secs(1),
        config.connect(connector.clone()),
    )
    .await;
    match result {
        Ok(Ok((client, connection))) => {
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    log::debug!(stage = "database"; "connection closed: {e}");
                }
            });
            Ok(client)
        }
        Ok(Err(e)) if is_tls(&e) => Err(Failure::Tls(e)),
        Ok(Err(e)) => {
            let code = e.code();
            if code == Some(&SqlState::INVALID_PASSWORD)
                || code == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
                // The server answered: retrying will not create the database.
                || code == Some(&SqlState::INVALID_CATALOG_NAME)
            {
                return Err(Failure::Final(e));
            }
            Err(Failure::Retry(error_text(&e)))
        }
        Err(_) => Err(Failure::Retry(format!(
            "no answer within {}s",
            timeout.as_secs() + 1
        ))),
    }
}

/// tokio-postgres keeps its error kinds private; a TLS failure is the one
/// whose text starts so (its `Kind::Tls`).
fn is_tls(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_none() && e.to_string().starts_with("error performing TLS handshake")
}

/// The server's message and SQLSTATE, or the error and its causes:
/// tokio-postgres puts the useful part (refused, name not resolved, the
/// certificate's problem) in the source.
pub(crate) fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => Chain(e).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_url_error_does_not_echo_the_password() {
        let e = Dsn::parse("postgres://u:s3cr3t-pw@host:notaport/db").unwrap_err();
        assert!(!e.to_string().contains("s3cr3t-pw"), "{e}");
    }

    #[test]
    fn endpoint_names_host_and_database_only() {
        let mut d = Dsn::parse("postgres://user:topsecret-pw@db.example:6543/app").unwrap();
        assert_eq!(d.endpoint(), "PostgreSQL at db.example:6543/app");
        assert!(!format!("{d:?}").contains("topsecret"));
        d.route("10.0.0.2".parse().unwrap());
        assert_eq!(
            d.endpoint(),
            "PostgreSQL at db.example:6543/app (container address 10.0.0.2)"
        );
    }

    #[test]
    fn service_hosts_are_single_labels() {
        let host = |s: &str| Dsn::parse(s).unwrap().service_host().map(str::to_owned);
        assert_eq!(
            host("postgres://u:p%40ss@postgres:5432/db").as_deref(),
            Some("postgres")
        );
        assert_eq!(host("postgresql://db/app").as_deref(), Some("db"));
        assert_eq!(host("host=db dbname=app").as_deref(), Some("db"));
        assert_eq!(host("postgres://[::1]:5432/db"), None);
        assert_eq!(host("postgres://db.example.com/db"), None);
        assert_eq!(host("postgres://10.1.2.3/db"), None);
        assert_eq!(host("postgres://localhost/db"), None);
        assert_eq!(host("host=db hostaddr=10.0.0.1"), None);
        assert_eq!(host("host=a,b"), None);
    }

    #[test]
    fn differences_name_parts_never_values() {
        let a = Dsn::parse("postgres://app:pw1@postgres:5432/app").unwrap();
        let b = Dsn::parse("postgres://app:pw2@postgres/other?sslmode=require").unwrap();
        assert_eq!(a.differences(&b), vec!["dbname", "password", "tls"]);
        let same = Dsn::parse("host=postgres user=app password=pw1 dbname=app").unwrap();
        assert!(a.differences(&same).is_empty());
    }

    #[test]
    fn verify_modes_reach_tokio_postgres_as_require() {
        let d = Dsn::parse("postgres://h/db?sslmode=verify-full&sslrootcert=/ca.pem").unwrap();
        assert_eq!(
            d.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        let d = Dsn::parse("postgres://h/db").unwrap();
        assert_eq!(
            d.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Prefer
        );
    }
}
