//! Plan and converge one Compose project with the agent's engine, and print
//! how long each step took: the agent side of `scripts/bench/compose`.
//!
//! Usage: compose_converge FILE PROJECT [--wait SECONDS]
//! Interpolation variables come from the environment (as for the agent).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use wavemap_agent::compose::{self, Project};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, project_name, rest @ ..] = args.as_slice() else {
        return Err("usage: compose_converge FILE PROJECT [--wait SECONDS]".into());
    };
    let wait = match rest {
        [flag, secs] if flag == "--wait" => Some(Duration::from_secs(secs.parse()?)),
        _ => None,
    };
    let started = Instant::now();
    let docker = wavemap_agent::docker::connect_to(
        "unix:///var/run/docker.sock",
        Duration::from_secs(120),
        Duration::from_secs(5),
    )
    .await?;
    let connected = started.elapsed();
    let project = Project::load(&PathBuf::from(file), project_name, &BTreeMap::new())?;
    let plan = compose::plan(&docker, &project).await?;
    let planned = started.elapsed();
    let summary = compose::converge(&docker, &project, &plan).await?;
    let converged = started.elapsed();
    if let Some(deadline) = wait {
        compose::wait_healthy(&docker, &project, deadline).await?;
    }
    let total = started.elapsed();
    println!(
        "{}",
        serde_json::json!({
            "connect_ms": connected.as_secs_f64() * 1e3,
            "plan_ms": (planned - connected).as_secs_f64() * 1e3,
            "converge_ms": (converged - planned).as_secs_f64() * 1e3,
            "total_ms": total.as_secs_f64() * 1e3,
            "plan": plan,
            "summary": summary,
        })
    );
    Ok(())
}
