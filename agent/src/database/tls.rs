//! TLS to PostgreSQL: `sslmode` and `sslrootcert` as libpq reads them, on
//! rustls.
//!
//! Users who move the database to RDS or Aurora get TLS forced on them, and
//! a connection string with `sslmode=verify-full` must mean what it means to
//! every other PostgreSQL client. tokio-postgres parses only `disable`,
//! `prefer` and `require` and leaves the certificate check to the TLS
//! connector, so the TLS keys are taken out of the connection string here
//! ([`split`]) and the connector is built from them ([`Tls::connector`]).
//!
//! What each mode does (libpq's semantics, the one documented difference is
//! the root store):
//!
//! | `sslmode` | TLS | certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (the default) | tried first; a server without TLS, or a failed handshake, falls back to plain | no |
//! | `require` | always; a server without TLS is refused | no; with `sslrootcert` the chain is checked, as `verify-ca` (libpq does the same) |
//! | `verify-ca` | always | the chain to the roots, not the host name |
//! | `verify-full` | always | the chain to the roots and the host name (or IP address) in the URL |
//!
//! The roots are the PEM file `sslrootcert` names (read on the host), or
//! the system's CA certificates (`rustls-native-certs`: the OpenSSL
//! locations, `SSL_CERT_FILE` / `SSL_CERT_DIR`) when it is absent or is
//! `system`. libpq's fallback `~/.postgresql/root.crt` is not read: the
//! agent runs as root under systemd, where that file is nobody's choice.
//!
//! The crypto is rustls 0.23 with the aws-lc-rs provider, the same stack the
//! AWS SDK's HTTPS client uses, so the binary carries one TLS stack.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub const ALL: &'static str = "disable, prefer, require, verify-ca, verify-full";

    fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // libpq accepts `allow` (plain first, then TLS); nothing here
            // would choose plain over TLS when both work, so it is refused
            // rather than quietly treated as `prefer`.
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS settings of one connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub mode: SslMode,
    /// `sslrootcert`; `None` (or `system`) means the system's roots.
    pub root_cert: Option<PathBuf>,
    /// The bytes of `root_cert` when they were read elsewhere than on the
    /// host (the API container's own file, for the URL it runs with), and
    /// where that was.
    pub root_pem: Option<(Vec<u8>, String)>,
}

/// A TLS setting the agent cannot use: names the key and the fix (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("sslmode `{value}` is not one of {}", SslMode::ALL)]
    BadMode { value: String },
    #[error("sslrootcert {path}: {problem}")]
    RootCert { path: String, problem: String },
    #[error("no system CA certificates could be read ({detail}); install ca-certificates or pass sslrootcert=/path/to/ca.pem")]
    NoSystemRoots { detail: String },
    #[error("cannot set up TLS: {detail}")]
    Setup { detail: String },
}

impl Tls {
    /// The mode tokio-postgres runs its side of the protocol with: both
    /// verifying modes are `require` to it (the check is the connector's).
    pub fn pg_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }

    /// What the certificate is checked against, for messages:
    /// `CA file /etc/x.pem (sslrootcert)` or `the system's CA certificates`.
    pub fn roots(&self) -> String {
        match (&self.root_cert, &self.root_pem) {
            (Some(path), Some((_, place))) => {
                format!("the CA file {} {place} (sslrootcert)", path.display())
            }
            (Some(path), None) => format!("the CA file {} (sslrootcert)", path.display()),
            (None, _) => "the system's CA certificates".into(),
        }
    }

    /// What the connection will check, for the journal and errors.
    pub fn describe(&self) -> String {
        let mode = self.mode.name();
        match self.check() {
            Check::None if self.mode == SslMode::Disable => "sslmode=disable: no TLS".into(),
            Check::None => format!("sslmode={mode}: TLS, certificate not checked"),
            Check::Chain => format!(
                "sslmode={mode}: TLS, certificate chain checked against {}, host name not checked",
                self.roots()
            ),
            Check::Full => format!(
                "sslmode={mode}: TLS, certificate checked against {} and the host name",
                self.roots()
            ),
        }
    }

    /// A failed handshake in words: which check failed against what.
    /// `detail` is tokio-postgres's error chain.
    pub fn explain(&self, detail: &str) -> String {
        let detail = detail
            .strip_prefix("error performing TLS handshake: ")
            .unwrap_or(detail);
        let why = if detail.contains("UnknownIssuer") || detail.contains("BadSignature") {
            format!(
                "the server's certificate is not signed by {} ({detail})",
                self.roots()
            )
        } else if detail.contains("NotValidForName") || detail.contains("not valid for name") {
            format!("the server's certificate does not name the host in the URL ({detail}); sslmode=verify-ca checks the chain only")
        } else if detail.contains("Expired") || detail.contains("NotValidYet") {
            format!("the server's certificate is outside its validity period ({detail})")
        } else {
            detail.to_owned()
        };
        format!("{why} [{}]", self.describe())
    }

    fn check(&self) -> Check {
        match self.mode {
            SslMode::Disable | SslMode::Prefer => Check::None,
            SslMode::Require if self.root_cert.is_none() => Check::None,
            SslMode::Require | SslMode::VerifyCa => Check::Chain,
            SslMode::VerifyFull => Check::Full,
        }
    }

    /// The tokio-postgres connector for these settings. Reads the root
    /// certificates (the file, or the system's) only when a mode checks
    /// them.
    pub fn connector(&self) -> Result<MakeRustlsConnect, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup {
                detail: e.to_string(),
            })?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.check() {
            Check::None => Arc::new(Unchecked {
                algorithms: provider.signature_verification_algorithms,
            }),
            check => {
                let roots = Arc::new(self.root_store()?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| TlsError::Setup {
                        detail: e.to_string(),
                    })?;
                match check {
                    Check::Full => webpki,
                    _ => Arc::new(ChainOnly { inner: webpki }),
                }
            }
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }

    fn root_store(&self) -> Result<RootCertStore, TlsError> {
        let mut store = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                let certs = match &self.root_pem {
                    Some((bytes, place)) => {
                        parse_pem(bytes, &format!("{} {place}", path.display()))?
                    }
                    None => read_pem(path)?,
                };
                for cert in certs {
                    store.add(cert).map_err(|e| TlsError::RootCert {
                        path: path.display().to_string(),
                        problem: format!("a certificate in it is not a usable CA ({e})"),
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = store.add_parsable_certificates(found.certs);
                if added == 0 {
                    let detail = match found.errors.first() {
                        Some(e) => e.to_string(),
                        None => "none found".into(),
                    };
                    return Err(TlsError::NoSystemRoots { detail });
                }
            }
        }
        Ok(store)
    }
}

/// The certificates of a PEM file; a missing, unreadable or empty file is
/// an error naming it.
fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::RootCert {
        path: path.display().to_string(),
        problem: format!("cannot read it ({e})"),
    })?;
    parse_pem(&bytes, &path.display().to_string())
}

/// The certificates in PEM `bytes` from `place`; none is an error.
fn parse_pem(bytes: &[u8], place: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |problem: String| TlsError::RootCert {
        path: place.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate (BEGIN CERTIFICATE)".into()));
    }
    Ok(certs)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    None,
    Chain,
    Full,
}

/// `prefer` and `require` without roots: the traffic is encrypted, the
/// server is not authenticated (libpq's semantics). The handshake's
/// signatures are still verified, so the session is bound to the
/// certificate the server showed.
#[derive(Debug)]
struct Unchecked {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`: the WebPKI check, minus the host name. rustls checks the
/// chain (signatures, validity, CA constraints) before the name, so a
/// name error means the chain passed.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The keys taken out of a connection string.
const KEYS: [&str; 2] = ["sslmode", "sslrootcert"];

/// Take `sslmode` and `sslrootcert` out of `text` (URL or `key=value`
/// form): the rest, which tokio-postgres parses, and the TLS settings.
/// Unset `sslmode` is `prefer`, libpq's default.
pub fn split(text: &str) -> Result<(String, Tls), TlsError> {
    let (rest, found) = if is_url(text) {
        split_url(text)
    } else {
        split_keywords(text)
    };
    let mut tls = Tls {
        mode: SslMode::Prefer,
        root_cert: None,
        root_pem: None,
    };
    for (key, value) in found {
        match key.as_str() {
            "sslmode" => {
                tls.mode = SslMode::parse(&value).ok_or(TlsError::BadMode {
                    value: value.clone(),
                })?
            }
            _ => {
                tls.root_cert = match value.as_str() {
                    "" | "system" => None,
                    path => Some(PathBuf::from(path)),
                }
            }
        }
    }
    Ok((rest, tls))
}

fn is_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// URL form: the query's `sslmode` / `sslrootcert` (percent-decoded) out,
/// every other parameter kept byte for byte.
fn split_url(text: &str) -> (String, Vec<(String, String)>) {
    let Some((base, query)) = text.split_once('?') else {
        return (text.to_owned(), Vec::new());
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut kept = Vec::new();
    let mut found = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key);
        if KEYS.contains(&key.as_str()) {
            found.push((key, decode(value)));
        } else if !pair.is_empty() {
            kept.push(pair);
        }
    }
    let rest = match kept.is_empty() {
        true => base.to_owned(),
        false => format!("{base}?{}", kept.join("&")),
    };
    (rest, found)
}

/// `key=value` form (libpq's rules: spaces around `=` allowed, values bare
/// or in single quotes, `\` escapes in both): the TLS pairs cut out of the
/// text, the rest left exactly as written. Text that does not tokenize is
/// left whole for tokio-postgres to reject with its own message.
fn split_keywords(text: &str) -> (String, Vec<(String, String)>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut cuts = Vec::new();
    let mut found = Vec::new();
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &text[start..i];
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            return (text.to_owned(), Vec::new());
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = Vec::new();
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return (text.to_owned(), Vec::new()),
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < bytes.len() => {
                        value.push(bytes[i + 1]);
                        i += 2;
                    }
                    Some(&b) => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                value.push(bytes[i]);
                i += 1;
            }
        }
        if KEYS.contains(&key) {
            cuts.push((start, i));
            found.push((key.to_owned(), String::from_utf8_lossy(&value).into_owned()));
        }
    }
    let mut rest = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in cuts {
        rest.push_str(&text[at..start]);
        at = end;
    }
    rest.push_str(&text[at..]);
    (rest, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_form_loses_only_the_tls_keys() {
        let (rest, tls) = split(
            "postgres://u:p%3Fw@db.example:6543/app?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20dir%2Fca.pem&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p%3Fw@db.example:6543/app?application_name=x&connect_timeout=3"
        );
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca dir/ca.pem")));
        let (rest, tls) = split("postgresql://h/db?sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://h/db");
        assert_eq!(tls.mode, SslMode::Require);
        assert_eq!(tls.root_cert, None);
    }

    #[test]
    fn keyword_form_loses_only_the_tls_keys() {
        let (rest, tls2) = split(
            "host=db user=app password='pw\\' x' sslmode = verify-ca sslrootcert='/a b/ca.pem' dbname=app",
        )
        .unwrap();
        assert_eq!(rest, "host=db user=app password='pw\\' x'   dbname=app");
        assert_eq!(tls2.mode, SslMode::VerifyCa);
        assert_eq!(tls2.root_cert, Some(PathBuf::from("/a b/ca.pem")));
        let parsed: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(parsed.get_password(), Some(&b"pw' x"[..]));
    }

    #[test]
    fn odd_text_never_panics_and_is_left_for_tokio_postgres() {
        for text in [
            "",
            "=",
            "sslmode",
            "sslmode=",
            "host='unterminated",
            "host=é sslmode='verify-full\\' dbname=ü",
            "host=a\\",
            "sslmode='\\",
            "postgres://?&&=&sslmode",
            "postgres://h/db?%zz=1&sslrootcert=%ff",
            "ключ=значение sslmode=require",
        ] {
            let _ = split(text);
        }
        let (rest, tls) = split("ключ=значение sslmode=require").unwrap();
        assert_eq!(rest, "ключ=значение ");
        assert_eq!(tls.mode, SslMode::Require);
    }

    #[test]
    fn unset_mode_is_prefer_and_bad_mode_names_the_values() {
        assert_eq!(split("host=h").unwrap().1.mode, SslMode::Prefer);
        let e = split("postgres://h/db?sslmode=allow").unwrap_err();
        assert!(e.to_string().contains("verify-full"), "{e}");
        assert!(e.to_string().contains("`allow`"), "{e}");
        assert_eq!(
            split("postgres://h/db?sslrootcert=system")
                .unwrap()
                .1
                .root_cert,
            None
        );
    }

    #[test]
    fn libpq_checks_per_mode() {
        let tls = |mode, root: Option<&str>| Tls {
            mode,
            root_cert: root.map(PathBuf::from),
            root_pem: None,
        };
        assert_eq!(tls(SslMode::Prefer, Some("/ca")).check(), Check::None);
        assert_eq!(tls(SslMode::Require, None).check(), Check::None);
        assert_eq!(tls(SslMode::Require, Some("/ca")).check(), Check::Chain);
        assert_eq!(tls(SslMode::VerifyCa, None).check(), Check::Chain);
        assert_eq!(tls(SslMode::VerifyFull, None).check(), Check::Full);
        assert_eq!(
            tls(SslMode::VerifyFull, None).pg_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn a_bad_root_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let t = Tls {
            mode: SslMode::VerifyFull,
            root_cert: Some(missing.clone()),
            root_pem: None,
        };
        let e = t.connector().err().unwrap();
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let t = Tls {
            mode: SslMode::VerifyCa,
            root_cert: Some(empty),
            root_pem: None,
        };
        let e = t.connector().err().unwrap();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        // Modes that check nothing never read the file.
        let t = Tls {
            mode: SslMode::Prefer,
            root_cert: Some(missing),
            root_pem: None,
        };
        assert!(t.connector().is_ok());
    }
}
