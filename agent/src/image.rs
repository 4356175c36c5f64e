//! Image references the agent will deploy, validated before anything runs.
//!
//! A deploy names images by immutable reference only: a `sha-<40 hex>` tag
//! (the CI convention, one tag per source commit) or an `@sha256:<64 hex>`
//! digest. A mutable tag such as `latest` could change under a recorded
//! receipt and make rollback restore something nobody proved; a recorded
//! digest pins even the `sha-` tag (see [`crate::release`]). Which registry
//! hosts the agent may pull from is [`crate::authority`]'s decision; this
//! module only checks the shape.

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
    /// Parse and validate the shape of `uri` given on flag `field`.
    pub fn parse(field: &str, uri: &str) -> Result<Self, Error> {
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
        if !crate::config::is_registry_host(registry) {
            return Err(bad(format!("{registry:?} is not a registry host")));
        }
        if !is_repository(repository) {
            return Err(bad(format!(
                "repository {repository:?} must be lowercase path components of [a-z0-9._-]"
            )));
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

    /// `(account, region)` when the registry is a private ECR registry
    /// (`<account>.dkr.ecr.<region>.amazonaws.com`).
    pub fn ecr_location(&self) -> Option<(&str, &str)> {
        let (account, rest) = self.registry.split_once('.')?;
        let region = rest
            .strip_prefix("dkr.ecr.")?
            .strip_suffix(".amazonaws.com")?;
        (account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && !region.is_empty()
            && !region.contains('.'))
        .then_some((account, region))
    }

    /// The same repository pinned to `digest` (`sha256:<64 hex>`).
    pub fn pinned(&self, digest: &str) -> ImageRef {
        ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            reference: Reference::Digest(digest.to_owned()),
        }
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

/// The private ECR registry host of `account` in `region`.
pub fn ecr_host(account: &str, region: &str) -> String {
    format!("{account}.dkr.ecr.{region}.amazonaws.com")
}

/// `sha256:<64 lowercase hex>`, the only digest form the agent records.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|hex| is_lower_hex(hex, 64))
}

/// The first 12 hex digits of a `sha256:` digest, as `docker images` shows
/// IDs (the whole text when it is not a digest).
pub fn short_digest(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn accepts_ecr_tag_and_digest() {
        let uri = format!("123456789012.dkr.ecr.us-east-2.amazonaws.com/wavemap/api:sha-{SHA}");
        let image = ImageRef::parse("--backend-image", &uri).unwrap();
        assert_eq!(image.to_string(), uri);
        assert_eq!(image.ecr_location(), Some(("123456789012", "us-east-2")));
        assert_eq!(image.tag(), Some(format!("sha-{SHA}").as_str()));
        let digest = format!("127.0.0.1:5000/wavemap/api@sha256:{}", "a".repeat(64));
        let image = ImageRef::parse("--backend-image", &digest).unwrap();
        assert_eq!(image.to_string(), digest);
        assert_eq!(image.ecr_location(), None);
        let pinned = image.pinned(&format!("sha256:{}", "b".repeat(64)));
        assert_eq!(
            pinned.to_string(),
            format!("127.0.0.1:5000/wavemap/api@sha256:{}", "b".repeat(64))
        );
    }

    #[test]
    fn refuses_mutable_tags_and_bad_shapes() {
        for (uri, needle) in [
            ("127.0.0.1:5000/wavemap/api:latest".to_string(), "immutable"),
            ("127.0.0.1:5000/wavemap/api".to_string(), "no tag"),
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
            let err = ImageRef::parse("--backend-image", &uri)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{uri}: {err}");
            assert!(err.contains("--backend-image"), "{err}");
        }
    }
}
