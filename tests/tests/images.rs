//! Images and disk (issue 26), end to end on the real dockerd: five
//! distinct pairs deployed, `runtime prune` dry run and `--execute`, the
//! prune after `record-release` (off, then on), the pull preflight refusing
//! a deploy, and `status --json`'s disk fields. The observer is the docker
//! CLI (`docker image inspect`), not the agent.
//!
//! Pair 0 is also held by two stopped containers this test creates (as an
//! operator's `docker create` would), which is why the prune leaves it: an
//! image any container uses, running or stopped, is never removed.

use std::process::Command;

use wavemap_e2e::{
    build_image, private_copy, release_args, stack, with_execute, RuntimeProject, TestDir,
};

/// Whether `docker image inspect` finds `reference`.
fn present(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .output()
        .expect("run docker")
        .status
        .success()
}

/// Bytes that differ per pair, so every pair has a layer of its own.
fn pad(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005) | 1;
    (0..256 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Stopped containers this test made; removed however the test ends.
struct Holders(Vec<String>);

impl Drop for Holders {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", name]).output();
        }
    }
}

/// Removes the test's own images however the test ends.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", image]).output();
        }
    }
}

fn refs_of(marker: Option<&str>) -> Vec<String> {
    let mut refs: Vec<String> = marker
        .unwrap_or_default()
        .split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    refs.sort();
    refs
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_keeps_what_is_needed_preflight_refuses_and_status_shows_disk() {
    let s = stack();
    let mut td = TestDir::new("images");
    let project = RuntimeProject::new(&td).await;
    let repo = td.name.replace('_', "-");
    let base_backend = s.require("WAVEMAP_TEST_BACKEND_IMAGE_A");
    let base_frontend = s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A");
    assert!(
        present(base_backend) && present(base_frontend),
        "the stack's test images are not on dockerd: run scripts/stack/build-images"
    );

    // Five distinct pairs, built on the host (nothing to pull).
    let mut images = Images(Vec::new());
    let mut pairs = Vec::new();
    for i in 0..5u64 {
        let sha = format!("{:040x}", 0xd15c_0000 + i);
        let backend = format!("{}/{repo}/backend:sha-{sha}", s.registry);
        let frontend = format!("{}/{repo}/frontend:sha-{sha}", s.registry);
        for (tag, base, seed) in [
            (&backend, base_backend, i),
            (&frontend, base_frontend, 100 + i),
        ] {
            build_image(
                tag,
                &format!("FROM {base}\nCOPY pad /pad-{seed}\n"),
                &[("pad", pad(seed + 1))],
            )
            .await;
            images.0.push(tag.clone());
        }
        pairs.push((backend, frontend, sha));
    }
    // An image of another repository (same registry, same test): never touched.
    let other = format!("{}/{repo}-tools/tool:sha-{:040x}", s.registry, 7);
    build_image(
        &other,
        &format!("FROM {base_backend}\nCOPY pad /pad-tool\n"),
        &[("pad", pad(999))],
    )
    .await;
    images.0.push(other.clone());

    td.set("images", "prune_after_record", "false");
    for (i, (backend, frontend, sha)) in pairs.iter().enumerate() {
        let out = td.run(with_execute(release_args(
            "deploy",
            backend,
            frontend,
            sha,
            &format!("v-{i}"),
        )));
        assert_eq!(out.code, 0, "deploy of pair {i}: {}", out.dump());
        if i == 1 {
            let out = td.run(with_execute(release_args(
                "record-release",
                backend,
                frontend,
                sha,
                "v-1",
            )));
            assert_eq!(out.code, 0, "{}", out.dump());
            assert_eq!(
                out.marker("WAVEMAP_RUNTIME_RECEIPT_RESULT"),
                Some("recorded")
            );
            assert_eq!(
                out.marker("WAVEMAP_RUNTIME_AUTO_PRUNE_RESULT"),
                Some("disabled")
            );
        }
    }
    assert_eq!(project.container("api").await.0, pairs[4].0);

    // Pair 0, no longer running, is held by stopped containers.
    let holders = Holders(vec![
        format!("{}-holder-backend", td.name),
        format!("{}-holder-frontend", td.name),
    ]);
    for (name, image) in holders.0.iter().zip([&pairs[0].0, &pairs[0].1]) {
        let out = Command::new("docker")
            .args(["create", "--name", name, image, "true"])
            .output()
            .expect("docker create");
        assert!(out.status.success(), "docker create {image}: {out:?}");
    }

    // Dry run: pair 2 only (0 held, 1 recorded, 3 the most recent other, 4 current).
    let out = td.run(["runtime", "prune"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_RUNTIME_PRUNE_RESULT"), Some("planned"));
    let mut expected = vec![pairs[2].0.clone(), pairs[2].1.clone()];
    expected.sort();
    assert_eq!(
        refs_of(out.marker("WAVEMAP_RUNTIME_PRUNE_IMAGES")),
        expected,
        "{}",
        out.dump()
    );
    assert_eq!(out.marker("WAVEMAP_RUNTIME_PRUNE_COUNT"), Some("2"));
    let planned_bytes: u64 = out
        .marker("WAVEMAP_RUNTIME_PRUNE_BYTES")
        .and_then(|b| b.parse().ok())
        .expect("a bytes marker");
    assert!(planned_bytes > 0, "{}", out.dump());
    for (b, f, _) in &pairs {
        assert!(present(b) && present(f), "the dry run removed something");
    }

    // --execute: exactly pair 2's two images go.
    let out = td.run(["runtime", "prune", "--execute"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_RUNTIME_PRUNE_RESULT"), Some("pruned"));
    assert_eq!(
        refs_of(out.marker("WAVEMAP_RUNTIME_PRUNE_REMOVED")),
        expected
    );
    for (i, (b, f, _)) in pairs.iter().enumerate() {
        assert_eq!(present(b), i != 2, "pair {i} backend");
        assert_eq!(present(f), i != 2, "pair {i} frontend");
    }
    for image in [&other, &s.postgres_image, base_backend, base_frontend] {
        assert!(present(image), "{image} (another repository) was removed");
    }
    let journal = std::fs::read_to_string(td.journal_path()).expect("journal");
    assert!(journal.contains("\"runtime prune\""), "{journal}");

    // status --json: the disk fields.
    let out = td.run(["status", "--json"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    let json: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    let disk = &json["data"]["disk"];
    assert!(disk["docker_root"].is_string(), "{disk}");
    assert!(
        disk["docker_root_free_bytes"]
            .as_u64()
            .is_some_and(|b| b > 0),
        "{disk}"
    );
    assert!(
        disk["state_dir_free_bytes"].as_u64().is_some_and(|b| b > 0),
        "{disk}"
    );
    assert_eq!(disk["prune_reclaimable_bytes"].as_u64(), Some(0), "{disk}");
    assert_eq!(disk["prune_images"].as_u64(), Some(0), "{disk}");
    assert_eq!(disk["min_free_mb"].as_u64(), Some(2048), "{disk}");
    let human = td.run(["status"]);
    assert!(human.stdout.contains("disk "), "{}", human.dump());

    // record-release with the prune switched off keeps pair 1 (no longer
    // the receipt); switched on, the prune after it removes pair 1.
    let (b4, f4, sha4) = &pairs[4];
    let record = with_execute(release_args("record-release", b4, f4, sha4, "v-4"));
    let out = td.run(&record);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_AUTO_PRUNE_RESULT"),
        Some("disabled")
    );
    assert!(present(&pairs[1].0) && present(&pairs[1].1));
    td.set("images", "prune_after_record", "true");
    let out = td.run(&record);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_RECEIPT_RESULT"),
        Some("recorded")
    );
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_AUTO_PRUNE_RESULT"),
        Some("pruned"),
        "{}",
        out.dump()
    );
    let mut pair1 = vec![pairs[1].0.clone(), pairs[1].1.clone()];
    pair1.sort();
    assert_eq!(
        refs_of(out.marker("WAVEMAP_RUNTIME_AUTO_PRUNE_REMOVED")),
        pair1
    );
    assert_eq!(out.marker("WAVEMAP_RUNTIME_PRUNE_RESULT"), None);
    for (i, (b, f, _)) in pairs.iter().enumerate() {
        let kept = matches!(i, 0 | 3 | 4);
        assert_eq!(present(b) && present(f), kept, "pair {i}");
    }

    // Preflight: a pair not on the host with images.min_free_mb above the
    // free space is refused before any pull; nothing changes.
    let backend_new = private_copy(&s.backend_image_b, &repo);
    let frontend_new = private_copy(&s.frontend_image_b, &repo);
    assert!(!present(&backend_new) && !present(&frontend_new));
    td.set("images", "min_free_mb", "100000000");
    let status = td.run(["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(status.stdout.trim()).expect("JSON");
    assert_eq!(json["data"]["disk"]["low"], true, "{}", status.dump());
    assert!(td.run(["status"]).stdout.contains("(LOW)"));
    let api_before = project.container("api").await.1;
    let frontend_before = project.container("frontend").await.1;
    let current_before = std::fs::read(td.state_dir().join("current-release.json")).unwrap();
    let out = td.run(with_execute(release_args(
        "deploy",
        &backend_new,
        &frontend_new,
        &s.sha_b,
        "v-new",
    )));
    assert_eq!(out.code, 3, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_DEPLOY_FAILED_STAGE"),
        Some("pull-preflight")
    );
    for needle in [
        "MiB free",
        "needs about",
        "images.min_free_mb",
        "runtime prune",
    ] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.dump());
    }
    assert!(
        !present(&backend_new) && !present(&frontend_new),
        "pulled anyway"
    );
    assert_eq!(project.container("api").await.1, api_before);
    assert_eq!(project.container("frontend").await.1, frontend_before);
    assert_eq!(
        std::fs::read(td.state_dir().join("current-release.json")).unwrap(),
        current_before
    );
    drop(holders);
}
