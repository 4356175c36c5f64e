//! Image references the agent will deploy, validated before anything runs.
//!
//! A deploy names images by immutable reference only: a `sha-<40 hex>` tag
//! (the CI convention, one tag per source commit) or an `@sha256:<64 hex>`
//! digest. A mutable tag such as `latest` could change under a recorded
//! receipt and make rollback restore something nobody proved. The registry
//! host must be one the config allows (ECR in production, the local test
//! registry in tests), so a hostile CI input cannot point the host at an
//! arbitrary registry.

use std::fmt;

use crate::error::Error;

/// Longest image reference accepted (Docker's own limit is similar).
const MAX_LEN: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `sha-<40 hex>`
    Tag(String),
    /// `sha256:<64 hex>`
    Digest(String),
}

/// A validated image reference: `registry/repository:tag` or `@digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub reference: Reference,
}

impl ImageRef {
    /// Parse and validate `uri` given on flag `field`, against the allowed
    /// registry patterns.
    pub fn parse(field: &str, uri: &str, allowed_registries: &[String]) -> Result<Self, Error> {
        let bad = |problem: String| {
            Error::invalid(
                field,
                problem,
                "pass REGISTRY/REPOSITORY:sha-<40 hex> or REGISTRY/REPOSITORY@sha256:<64 hex>",
            )
        };
        if uri.is_empty() || uri.len() > MAX_LEN {
            return Err(bad(format!("expected 1 to {MAX_LEN} characters")));
        }
        if !uri.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("contains spaces or control characters".into()));
        }
        let (name, reference) = if let Some((name, digest)) = uri.split_once('@') {
            let hex = digest
                .strip_prefix("sha256:")
                .ok_or_else(|| bad(format!("digest {digest:?} is not sha256:<64 hex>")))?;
            if !is_lower_hex(hex, 64) {
                return Err(bad(format!("digest {digest:?} is not sha256:<64 hex>")));
            }
            (name, Reference::Digest(digest.to_owned()))
        } else {
            let (name, tag) = uri
                .rsplit_once(':')
                .filter(|(_, tag)| !tag.contains('/'))
                .ok_or_else(|| bad("has no tag; mutable or implicit tags are refused".into()))?;
            let sha = tag.strip_prefix("sha-").filter(|s| is_lower_hex(s, 40));
            if sha.is_none() {
                return Err(bad(format!(
                    "tag {tag:?} is not immutable (expected sha-<40 lowercase hex>)"
                )));
            }
            (name, Reference::Tag(tag.to_owned()))
        };
        let (registry, repository) = name
            .split_once('/')
            .ok_or_else(|| bad("has no registry host".into()))?;
        if !is_registry_host(registry) {
            return Err(bad(format!("{registry:?} is not a registry host")));
        }
        if !is_repository(repository) {
            return Err(bad(format!(
                "repository {repository:?} must be lowercase path components of [a-z0-9._-]"
            )));
        }
        if !allowed_registries
            .iter()
            .any(|pattern| host_matches(pattern, registry))
        {
            return Err(Error::invalid(
                field,
                format!("registry {registry:?} is not allowed"),
                "use an image from a registry listed in docker.allowed_registries",
            ));
        }
        Ok(ImageRef {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            reference,
        })
    }

    /// `registry/repository` without the tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag, or the digest, as the Engine's `tag` pull parameter takes it.
    pub fn tag_or_digest(&self) -> &str {
        match &self.reference {
            Reference::Tag(t) | Reference::Digest(t) => t,
        }
    }

    /// The immutable tag (`sha-...`) when the reference is a tag.
    pub fn tag(&self) -> Option<&str> {
        match &self.reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        }
    }

    /// The AWS account id when the registry is an ECR registry.
    pub fn ecr_registry_id(&self) -> Option<&str> {
        let (account, rest) = self.registry.split_once('.')?;
        (rest.starts_with("dkr.ecr.")
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit()))
        .then_some(account)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            Reference::Tag(t) => write!(f, "{}/{}:{}", self.registry, self.repository, t),
            Reference::Digest(d) => write!(f, "{}/{}@{}", self.registry, self.repository, d),
        }
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `host[:port]` where host is DNS labels or an IPv4 address.
fn is_registry_host(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    // Docker treats the first component as a registry only when it has a
    // dot or a port or is localhost; require the same so it is unambiguous.
    (host.contains('.') || port.is_some() || host == "localhost")
        && !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_repository(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && part
                    .bytes()
                    .last()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        })
}

/// `*.example.com` matches exactly one extra leading label; otherwise exact.
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn allowed() -> Vec<String> {
        vec![
            "*.dkr.ecr.us-east-2.amazonaws.com".into(),
            "127.0.0.1:5000".into(),
        ]
    }

    #[test]
    fn accepts_ecr_tag_and_digest() {
        let uri = format!("123456789012.dkr.ecr.us-east-2.amazonaws.com/wavemap/api:sha-{SHA}");
        let image = ImageRef::parse("--backend-image", &uri, &allowed()).unwrap();
        assert_eq!(image.to_string(), uri);
        assert_eq!(image.ecr_registry_id(), Some("123456789012"));
        assert_eq!(image.tag(), Some(format!("sha-{SHA}").as_str()));
        let digest = format!("127.0.0.1:5000/wavemap/api@sha256:{}", "a".repeat(64));
        let image = ImageRef::parse("--backend-image", &digest, &allowed()).unwrap();
        assert_eq!(image.to_string(), digest);
        assert_eq!(image.ecr_registry_id(), None);
    }

    #[test]
    fn refuses_mutable_tags_and_foreign_registries() {
        for (uri, needle) in [
            ("127.0.0.1:5000/wavemap/api:latest".to_string(), "immutable"),
            ("127.0.0.1:5000/wavemap/api".to_string(), "no tag"),
            (
                format!("evil.example.com/wavemap/api:sha-{SHA}"),
                "not allowed",
            ),
            (
                format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/a:sha-{SHA}"),
                "not allowed",
            ),
            (format!("127.0.0.1:5000/Wavemap/api:sha-{SHA}"), "lowercase"),
            (
                format!("127.0.0.1:5000/wavemap/api:sha-{SHA}; rm -rf /"),
                "spaces",
            ),
            (format!("127.0.0.1:5000/../api:sha-{SHA}"), "repository"),
            (format!("wavemap/api:sha-{SHA}"), "registry host"),
            (
                format!("127.0.0.1:5000/wavemap/api:sha-{}", SHA.to_uppercase()),
                "immutable",
            ),
        ] {
            let err = ImageRef::parse("--backend-image", &uri, &allowed())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{uri}: {err}");
            assert!(err.contains("--backend-image"), "{err}");
        }
    }

    #[test]
    fn wildcard_matches_one_label_only() {
        assert!(host_matches("*.a.com", "x.a.com"));
        assert!(!host_matches("*.a.com", "a.com"));
        assert!(!host_matches("*.a.com", "y.x.a.com"));
    }
}
