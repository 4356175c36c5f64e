//! One AWS SDK set-up for every AWS call the agent makes (SSM Parameter
//! Store for env files, ECR for registry logins).
//!
//! Why one place: the host runs unattended at boot and under SSM Run
//! Command, so every call needs the same bounded behaviour. A stalled TCP
//! connection must end (attempt timeout), throttling must back off and retry
//! (standard retry mode), and the whole operation must finish within a known
//! time (operation timeout) so the caller can exit 69 instead of hanging
//! until SSM kills it.
//!
//! - Region: `aws.region` from the config (never guessed from IMDS).
//! - Credentials: the SDK's default chain (environment, profile, web
//!   identity, ECS, then IMDSv2 on EC2). Tests set
//!   `AWS_EC2_METADATA_DISABLED=true` so the chain never waits on IMDS.
//! - Endpoints: `aws.ssm_endpoint` / `aws.ecr_endpoint` when configured;
//!   otherwise the SDK's own `AWS_ENDPOINT_URL_SSM` / `AWS_ENDPOINT_URL_ECR`
//!   (and `AWS_ENDPOINT_URL`) variables, which keep working because the
//!   service clients are built from the loaded [`SdkConfig`].
//! - Errors: [`crate::error::Error::from_aws`] turns an SDK error into the
//!   agent's error, beside the exit-code map: no answer, timeouts,
//!   throttling that outlived the retries and 5xx are exit 69; access
//!   denied, validation and other refusals are exit 1.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::config::Config;

/// Connecting to an AWS endpoint takes well under a second when it works;
/// cap it so an unroutable address fails its attempt quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Load the shared SDK configuration: region, default credential chain,
/// standard retries and the configured timeouts.
pub async fn sdk_config(config: &Config) -> SdkConfig {
    let aws = &config.aws;
    let attempt = aws.attempt_timeout.duration();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(attempt))
        .operation_attempt_timeout(attempt)
        .operation_timeout(aws.operation_timeout.duration())
        .build();
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(aws.region.clone()))
        .retry_config(RetryConfig::standard().with_max_attempts(aws.max_attempts))
        .timeout_config(timeouts)
        .load()
        .await
}

/// SSM client; `aws.ssm_endpoint` wins over `AWS_ENDPOINT_URL_SSM`.
pub fn ssm_client(sdk: &SdkConfig, config: &Config) -> aws_sdk_ssm::Client {
    let mut builder = aws_sdk_ssm::config::Builder::from(sdk);
    if let Some(url) = &config.aws.ssm_endpoint {
        builder = builder.endpoint_url(url.as_str());
    }
    aws_sdk_ssm::Client::from_conf(builder.build())
}

/// ECR client; `aws.ecr_endpoint` wins over `AWS_ENDPOINT_URL_ECR`.
pub fn ecr_client(sdk: &SdkConfig, config: &Config) -> aws_sdk_ecr::Client {
    let mut builder = aws_sdk_ecr::config::Builder::from(sdk);
    if let Some(url) = &config.aws.ecr_endpoint {
        builder = builder.endpoint_url(url.as_str());
    }
    aws_sdk_ecr::Client::from_conf(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn configured_endpoint_region_and_timeouts_reach_the_client() {
        let config = Config::parse(
            "[aws]\nregion = \"eu-west-1\"\nssm_endpoint = \"http://127.0.0.1:9\"\nmax_attempts = 3\noperation_timeout = 7\nattempt_timeout = 2\n",
            "t",
        )
        .unwrap();
        let sdk = sdk_config(&config).await;
        assert_eq!(sdk.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(sdk.retry_config().unwrap().max_attempts(), 3);
        let timeouts = sdk.timeout_config().unwrap();
        assert_eq!(timeouts.operation_timeout(), Some(Duration::from_secs(7)));
        assert_eq!(
            timeouts.operation_attempt_timeout(),
            Some(Duration::from_secs(2))
        );
        let client = ssm_client(&sdk, &config);
        assert_eq!(
            client.config().region().map(|r| r.as_ref()),
            Some("eu-west-1")
        );
    }
}
