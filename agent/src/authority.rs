//! Which registries the host may pull from, and which one gets the ECR token.
//!
//! Why its own module: a wildcard over ECR hosts (`*.dkr.ecr.<region>...`)
//! admitted every AWS account, so whoever could send the deploy document
//! could run another account's image with every rendered secret, and the
//! host's ECR token went to whichever allowed registry an image named. The
//! rule now has one home:
//!
//! - The host account's ECR in `aws.region` is allowed without listing, and
//!   it is the only registry the ECR token is sent to. The account is
//!   `aws.account_id`, or, when that is absent, the instance identity
//!   document (IMDSv2), read the first time an image needs it.
//! - `aws.test_ecr_registry_alias` (test stacks only) names a `host:port`
//!   that counts as that ECR.
//! - `docker.allowed_registries` lists, exactly, any other registry. Those
//!   pull anonymously or with credentials from `docker.auth_config`, never
//!   with the ECR token; another account's ECR is such a registry too.
//! - Anything else is refused, exit 2, naming the registry and the key.

use std::sync::OnceLock;

use crate::config::Config;
use crate::error::{Dependency, Error};
use crate::image::{ecr_host, ImageRef};

/// How the agent may pull an allowed image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The host account's ECR (or the test alias): pulled with the ECR token.
    HostEcr,
    /// Listed in `docker.allowed_registries`: no ECR token.
    Listed,
}

/// The account read from instance metadata, once per process.
static IMDS_ACCOUNT: OnceLock<String> = OnceLock::new();

/// The account already known without a network call.
fn known_account(config: &Config) -> Option<&str> {
    config
        .aws
        .account_id
        .as_deref()
        .or_else(|| IMDS_ACCOUNT.get().map(String::as_str))
}

/// The decision for `image`; `Ok(None)` when it needs the host's account
/// and `account` is not known yet.
fn decide(
    config: &Config,
    field: &str,
    image: &ImageRef,
    account: Option<&str>,
) -> Result<Option<Trust>, Error> {
    let registry = image.registry.as_str();
    if config.aws.test_ecr_registry_alias.as_deref() == Some(registry) {
        return Ok(Some(Trust::HostEcr));
    }
    let listed = config
        .docker
        .allowed_registries
        .iter()
        .any(|r| r == registry);
    match image.ecr_location() {
        Some((_, region)) if region == config.aws.region => match account {
            None => Ok(None),
            Some(account) if ecr_host(account, region) == registry => Ok(Some(Trust::HostEcr)),
            Some(_) if listed => Ok(Some(Trust::Listed)),
            Some(account) => Err(Error::invalid(
                field,
                format!(
                    "registry {registry} is another AWS account's ECR; this host's account is {account} (its ECR is {})",
                    ecr_host(account, &config.aws.region)
                ),
                "use an image from the host account's ECR, or list that registry in docker.allowed_registries (it is then pulled without the ECR token)",
            )),
        },
        _ if listed => Ok(Some(Trust::Listed)),
        _ => Err(Error::invalid(
            field,
            format!("registry {registry} is not allowed"),
            format!(
                "use an image from the host account's ECR in aws.region ({}), or list {registry} in docker.allowed_registries",
                config.aws.region
            ),
        )),
    }
}

/// The check that needs no network: refuses every registry that cannot be
/// allowed whatever the host's account is (and, when the account is known,
/// another account's ECR). [`authorize`] finishes the check.
pub fn precheck(config: &Config, field: &str, image: &ImageRef) -> Result<(), Error> {
    decide(config, field, image, known_account(config)).map(|_| ())
}

/// Whether and how `image` may be pulled; reads the host's account from
/// instance metadata when the decision needs it and the config has none.
pub async fn authorize(config: &Config, field: &str, image: &ImageRef) -> Result<Trust, Error> {
    if let Some(trust) = decide(config, field, image, known_account(config))? {
        return Ok(trust);
    }
    let account = host_account(config).await?;
    decide(config, field, image, Some(&account))?.ok_or_else(|| {
        // ok: unreachable in practice (the account is known now); an error, not a panic.
        Error::invalid(
            field,
            "the registry could not be classified",
            "set aws.account_id",
        )
    })
}

/// The host's AWS account: `aws.account_id`, else the instance identity
/// document (IMDSv2: a token PUT, then the document GET), cached for the
/// process. `AWS_EC2_METADATA_SERVICE_ENDPOINT` points it elsewhere (tests).
pub async fn host_account(config: &Config) -> Result<String, Error> {
    if let Some(account) = known_account(config) {
        return Ok(account.to_owned());
    }
    let unavailable = |why: String| {
        Error::unavailable(
            Dependency::InstanceMetadata,
            format!("{why}; set aws.account_id to the host's 12-digit AWS account id"),
        )
    };
    if std::env::var("AWS_EC2_METADATA_DISABLED")
        .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Err(unavailable(
            "aws.account_id is not set and instance metadata is disabled (AWS_EC2_METADATA_DISABLED)"
                .into(),
        ));
    }
    let client = aws_config::imds::Client::builder().build();
    let document = client
        .get("/latest/dynamic/instance-identity/document")
        .await
        .map_err(|e| {
            unavailable(format!(
                "aws.account_id is not set and the instance identity document could not be read ({e})"
            ))
        })?;
    let account = account_from_document(document.as_ref()).ok_or_else(|| {
        unavailable("the instance identity document has no 12-digit accountId".into())
    })?;
    log::info!("host AWS account {account} (from the instance identity document)");
    Ok(IMDS_ACCOUNT.get_or_init(|| account).clone())
}

fn account_from_document(document: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(document).ok()?;
    let account = value.get("accountId")?.as_str()?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then(|| account.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn image(registry: &str) -> ImageRef {
        ImageRef::parse("--backend-image", &format!("{registry}/w/api:sha-{SHA}")).unwrap()
    }

    fn config(extra: &str) -> Config {
        Config::parse(
            &format!("[aws]\nregion = \"us-east-2\"\naccount_id = \"111111111111\"\n{extra}"),
            "t",
        )
        .unwrap()
    }

    #[test]
    fn only_the_hosts_ecr_is_allowed_by_default() {
        let c = config("");
        let own = image("111111111111.dkr.ecr.us-east-2.amazonaws.com");
        assert_eq!(
            decide(&c, "f", &own, Some("111111111111")).unwrap(),
            Some(Trust::HostEcr)
        );
        for (registry, needle) in [
            (
                "222222222222.dkr.ecr.us-east-2.amazonaws.com",
                "another AWS account",
            ),
            (
                "111111111111.dkr.ecr.us-east-1.amazonaws.com",
                "not allowed",
            ),
            ("evil.example.com", "not allowed"),
        ] {
            let err = precheck(&c, "--backend-image", &image(registry))
                .unwrap_err()
                .to_string();
            assert!(err.contains(registry) && err.contains(needle), "{err}");
            assert!(err.contains("docker.allowed_registries"), "{err}");
            assert!(err.contains("--backend-image"), "{err}");
        }
    }

    #[test]
    fn listed_registries_and_the_test_alias() {
        let c = Config::parse(
            "[aws]\ntest_ecr_registry_alias = \"127.0.0.1:5000\"\n[docker]\nallowed_registries = [\"ghcr.io\", \"222222222222.dkr.ecr.us-east-2.amazonaws.com\"]\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            decide(&c, "f", &image("127.0.0.1:5000"), None).unwrap(),
            Some(Trust::HostEcr)
        );
        assert_eq!(
            decide(&c, "f", &image("ghcr.io"), None).unwrap(),
            Some(Trust::Listed)
        );
        // A listed ECR host still needs the account: it may be the host's own.
        let other = image("222222222222.dkr.ecr.us-east-2.amazonaws.com");
        assert_eq!(decide(&c, "f", &other, None).unwrap(), None);
        assert_eq!(
            decide(&c, "f", &other, Some("111111111111")).unwrap(),
            Some(Trust::Listed)
        );
        assert_eq!(
            decide(&c, "f", &other, Some("222222222222")).unwrap(),
            Some(Trust::HostEcr)
        );
    }

    #[test]
    fn identity_document_account() {
        assert_eq!(
            account_from_document(r#"{"accountId":"123456789012","region":"us-east-2"}"#)
                .as_deref(),
            Some("123456789012")
        );
        assert_eq!(account_from_document(r#"{"accountId":"12"}"#), None);
        assert_eq!(account_from_document("not json"), None);
    }
}
