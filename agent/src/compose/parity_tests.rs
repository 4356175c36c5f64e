//! Config-hash parity with the real Compose v2 CLI, without the CLI.
//!
//! Each `testdata/<case>/compose.yaml` was created with
//! `docker compose -p ht-<case> -f ... create` (Compose v2.40.3, Engine
//! 20.10) and the `com.docker.compose.config-hash` labels it wrote on the
//! containers, volumes and networks were copied here. The variables below
//! are the ones the capture ran with. Bind sources are absolute in the
//! fixtures so the hashes do not depend on where the repository is checked
//! out (relative paths are compared live in the e2e test).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::hash;
use super::model::Project;

/// (case, kind, name, hash written by Compose v2.40.3)
const CAPTURED: &[(&str, &str, &str, &str)] = &[
    (
        "basic",
        "service",
        "app",
        "32af1caac8b718a1545f6ea19eff51a01e893f7be3273043b1a9c8a286ed8be5",
    ),
    (
        "basic",
        "network",
        "default",
        "6db5d7885b2b325f526cfb90d4832831d37659be683e9a7011ef04c81f1657d4",
    ),
    (
        "envfile",
        "service",
        "api",
        "18e632c4506ec85d7e81e91bb391eae78026cd5ea1c403d049fd75d0bc3799db",
    ),
    (
        "envfile",
        "service",
        "worker",
        "239360ace2ea6cf5bcc99c3e1fb66d853e0747673e8dbeb13dc6da6ff24766d9",
    ),
    (
        "envfile",
        "network",
        "default",
        "41e5b5959b67db6c7c52aa9c0b25d96e5f4c7a4c2e385fd174904876658af5bf",
    ),
    (
        "health",
        "service",
        "disabled",
        "2db3fd372e63e42ff0b4667b4de6dad139667468a9e00e066dd9a1fafd12c82f",
    ),
    (
        "health",
        "service",
        "listform",
        "509232ac11290648def75c1f0d9462b3ad8b1c5a1eca27575064053353e6bb95",
    ),
    (
        "health",
        "service",
        "none",
        "c75a7ca73d79a8bc5119533f29838fe4ab228fe9663c7a893eaf9f61a1a93695",
    ),
    (
        "health",
        "service",
        "stringform",
        "48f3f3df51fdfaa8e1e93eb96cb315efdb4f318f066ec4b154946e237a21740f",
    ),
    (
        "health",
        "network",
        "default",
        "0bfb06b0389d204afe28dff5252a1d24fba631eaa6e36b4105b765ccb231be6a",
    ),
    (
        "interp",
        "service",
        "app",
        "c41a0ef18c172030d2045c936285bb6787559ae590096fc9d668e875a1e696d9",
    ),
    (
        "interp",
        "network",
        "default",
        "7f9417649f7e93efbec2414240a333e9c32a8fe81bb5930f7a86654173240f9e",
    ),
    (
        "merge",
        "service",
        "one",
        "4bf3f5c7b00d890a8ae15b5f24360d5b884cb700107aee4dfcc02b343f20711e",
    ),
    (
        "merge",
        "service",
        "two",
        "c1865bd115cad75a54c75849df16b08c7e9736a33b9146565a19b1c602cf99ee",
    ),
    (
        "merge",
        "network",
        "default",
        "93dc5230c355e16ac9f579c8c7e3fb29bb33b48eac3dbabe847f788b8c833d5a",
    ),
    (
        "misc",
        "service",
        "base",
        "55949fc4470005f30f756905aaeeddf814ca9f6d29c13df56b9d37f370bbb19a",
    ),
    (
        "misc",
        "service",
        "dependent",
        "c0e3a31f4336a0c12b3632607e604845de9f767587d1fca0a6ef0f6755412661",
    ),
    (
        "misc",
        "service",
        "hostnet",
        "22676e3af84d2b8301550b2aeb1ca31da84407bd08babab169766fcb7ae759a8",
    ),
    (
        "misc",
        "service",
        "listdeps",
        "2f375510bca27dacea2e6f84c0941261c38ebc89ea0afbf71227ca3ef932ca6f",
    ),
    (
        "misc",
        "network",
        "back",
        "d09f3a29db36933f9bfde3f1166e6d4313a5544ba73917ae89bbcf67f6fcbab6",
    ),
    (
        "misc",
        "network",
        "default",
        "340f94faa30cd2dd61cd6690718d5336858310513329c1cb3bfc2777f36a6002",
    ),
    (
        "misc",
        "network",
        "front",
        "0590ce6e67494f7a01a5709b59236444a0039db2a7c9baecb70e54128ab30975",
    ),
    (
        "ports",
        "service",
        "web",
        "7520a16d1c2d327abebf4c76fbbf30b77173964bc59da2b0cac623c97d44f066",
    ),
    (
        "ports",
        "network",
        "default",
        "c562633d87d50defcc20c02b4a15d8fff3f677d4f0e85614baf14636c90cf256",
    ),
    (
        "production",
        "service",
        "api",
        "1c185404343283670bf14ceff6c30845dffb7a8ebfd6dc0a0d981924a6e3d731",
    ),
    (
        "production",
        "service",
        "frontend",
        "455a04f0115423532a64d4d00a4d52f0452b798b698fa6e7dd3a70a0c53ba655",
    ),
    (
        "production",
        "service",
        "postgres",
        "f014933df7b2028323427a33e3ed3f6e5f732d87a81ab36f6fbd467522bc92ec",
    ),
    (
        "production",
        "volume",
        "pgdata",
        "06cc27bad84e003bb605ff50feb5d0ddbf4100af63ea9eec63779ab101b0dd1a",
    ),
    (
        "production",
        "network",
        "default",
        "8b25057d57a917a6713c82caf4a9a98ae4d74be4efd08c4ddb4b0a7a37e958f9",
    ),
    (
        "volumes",
        "service",
        "db",
        "687ea4bce341935cebaf638980a5da3e44c838c08f2db87cc0e7eef560366c06",
    ),
    (
        "volumes",
        "volume",
        "cache",
        "b6b5d87a81ea301c29bf25f4bbe39641533f111e079853f611af552ded8d979c",
    ),
    (
        "volumes",
        "volume",
        "data",
        "ec0fa6d9357bbf978a1e289c7e656f3a54984c15e5ff713d98b17e66657ecb52",
    ),
    (
        "volumes",
        "network",
        "default",
        "7de66dc81c2991c401ce62359e5c5ddbf421c271d11ef885e288f77905293065",
    ),
];

fn vars() -> BTreeMap<String, String> {
    [
        ("HT_IMAGE", "c5-busybox:test"),
        ("HT_A", "alpha"),
        ("HT_EMPTY", ""),
        ("HT_BARE", "bare-value"),
        ("WAVEMAP_BACKEND_IMAGE", "c5-busybox:test"),
        ("WAVEMAP_FRONTEND_IMAGE", "c5-busybox:test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn load_case(case: &str) -> Project {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/compose/testdata")
        .join(case)
        .join("compose.yaml");
    super::load::load(&path, &format!("ht-{case}"), &vars())
        .unwrap_or_else(|e| panic!("{case}: {e}"))
}

#[test]
fn every_hash_equals_what_compose_v2_wrote() {
    let mut failures = Vec::new();
    for (case, kind, name, want) in CAPTURED {
        let project = load_case(case);
        let got = match *kind {
            "service" => project.service(name).map(hash::service_hash),
            "volume" => project.volumes.get(*name).map(hash::volume_hash),
            "network" => project.networks.get(*name).map(hash::network_hash),
            _ => None,
        };
        if got.as_deref() != Some(*want) {
            let json = project
                .service(name)
                .map(|s| hash::go_marshal(&hash::service_json(s)))
                .unwrap_or_default();
            failures.push(format!(
                "{case} {kind} {name}: got {got:?}, want {want}\n  {json}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_captured_case_has_exactly_the_captured_services() {
    for case in [
        "basic",
        "envfile",
        "merge",
        "interp",
        "health",
        "ports",
        "volumes",
        "misc",
        "production",
    ] {
        let project = load_case(case);
        let mut got: Vec<&str> = project.services.iter().map(|s| s.name.as_str()).collect();
        got.sort();
        let want: Vec<&str> = CAPTURED
            .iter()
            .filter(|(c, k, _, _)| *c == case && *k == "service")
            .map(|(_, _, n, _)| *n)
            .collect();
        assert_eq!(got, want, "{case}");
    }
}
