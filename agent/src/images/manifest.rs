//! The compressed size of an image, read from its registry manifest before
//! anything is pulled.
//!
//! A pull needs about its compressed size for the downloaded blobs and about
//! as much again unpacked, which is why the preflight asks for twice this.
//! The manifest is read with the same credentials the pull uses (the ECR
//! token, as `Authorization: Basic`). A manifest list (or OCI index) is
//! resolved to linux on the host's architecture, else linux/amd64, which is
//! what the Engine would pull. Loopback registries are spoken to over plain
//! HTTP (Docker treats 127.0.0.0/8 as insecure by default); every other
//! registry over HTTPS with the system's roots.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde::Deserialize;

use crate::image::ImageRef;
use crate::registry::RegistryAuth;

const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json";

/// One manifest request; a registry slower than this is not worth waiting for.
const TIMEOUT: Duration = Duration::from_secs(20);
/// Manifests are small; a larger answer is not one.
const MAX_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(default)]
    size: u64,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    /// Present in a manifest list / OCI index.
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// The Go architecture name of this host, as platforms in an index use it.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// Config plus layers of the image manifest for `image`, in bytes.
pub async fn compressed_size(image: &ImageRef, auth: Option<&RegistryAuth>) -> Result<u64, String> {
    let first = fetch(image, image.tag_or_digest(), auth).await?;
    let manifest = if first.manifests.is_empty() {
        first
    } else {
        let pick = pick_platform(&first.manifests)
            .ok_or_else(|| format!("{image}: the manifest list has no linux image"))?;
        fetch(image, &pick, auth).await?
    };
    if manifest.layers.is_empty() {
        return Err(format!("{image}: the manifest lists no layers"));
    }
    Ok(manifest.config.map_or(0, |c| c.size) + manifest.layers.iter().map(|l| l.size).sum::<u64>())
}

fn pick_platform(entries: &[Descriptor]) -> Option<String> {
    let linux = |arch: &str| {
        entries.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
    };
    linux(host_architecture())
        .or_else(|| linux("amd64"))
        .map(|d| d.digest.clone())
        .filter(|d| !d.is_empty())
}

fn is_loopback(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(registry, |(host, _)| host);
    host == "localhost" || host == "[::1]" || host.starts_with("127.")
}

async fn fetch(
    image: &ImageRef,
    reference: &str,
    auth: Option<&RegistryAuth>,
) -> Result<Manifest, String> {
    let scheme = if is_loopback(&image.registry) {
        "http"
    } else {
        "https"
    };
    let url = format!(
        "{scheme}://{}/v2/{}/manifests/{reference}",
        image.registry, image.repository
    );
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
        .map_err(|e| format!("no TLS roots for {}: {e}", image.registry))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<Bytes>>(connector);
    let mut request = hyper::Request::get(&url).header("Accept", ACCEPT);
    if let Some(auth) = auth {
        request = request.header("Authorization", auth.basic_authorization());
    }
    let request = request
        .body(Empty::new())
        .map_err(|e| format!("cannot build the manifest request for {image}: {e}"))?;
    let work = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{image}: manifest request failed: {e}"))?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_BYTES)
            .collect()
            .await
            .map_err(|e| format!("{image}: manifest body: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "{image}: the registry answered {status} for its manifest"
            ));
        }
        serde_json::from_slice::<Manifest>(&body)
            .map_err(|e| format!("{image}: the manifest is not JSON the agent reads ({e})"))
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .map_err(|_| format!("{image}: no manifest within {}s", TIMEOUT.as_secs()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_resolves_to_linux_on_this_arch_else_amd64() {
        let list: Manifest = serde_json::from_str(
            r#"{"manifests":[
                {"digest":"sha256:w","size":1,"platform":{"os":"windows","architecture":"amd64"}},
                {"digest":"sha256:a","size":1,"platform":{"os":"linux","architecture":"amd64"}},
                {"digest":"sha256:r","size":1,"platform":{"os":"linux","architecture":"riscv64"}}
            ]}"#,
        )
        .unwrap();
        let picked = pick_platform(&list.manifests).unwrap();
        if host_architecture() == "riscv64" {
            assert_eq!(picked, "sha256:r");
        } else {
            assert_eq!(picked, "sha256:a");
        }
        assert!(is_loopback("127.0.0.1:5000") && is_loopback("localhost"));
        assert!(!is_loopback("1.dkr.ecr.us-east-2.amazonaws.com"));
    }
}
