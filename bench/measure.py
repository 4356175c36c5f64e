#!/usr/bin/env python3
"""Measure wavemap-agent against what users would run instead and write
the run's data as one JSON document (BENCH_JSON). Run it through
`bench/run`, which builds the agent, starts the stack and then renders
BENCHMARKS.md from the JSON with bench/report.py.

The commit: the run records `git rev-parse HEAD` and refuses to start
from a dirty tree (anything `git status --porcelain` lists, apart from
the two files the run writes), and refuses to finish if HEAD or the tree
changed meanwhile. `--allow-dirty` (development) measures anyway and
records the commit as `<sha>-dirty`.

Knobs (environment): BENCH_RUNS (runs per side, default 7),
BENCH_STATUS_RUNS (60), BENCH_IDLE_SECONDS (60), BENCH_PRUNE_RUNS (3),
BENCH_ONLY (comma list of noop,changed,render,full,status,idle,boot,prune;
default all), BENCH_JSON
(default <repo>/BENCHMARKS.json), BENCH_AGENT (the binary).
"""

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wmbench import deploys, host, probe, prune  # noqa: E402
from wmbench.core import BenchError, log  # noqa: E402
from wmbench.machine import Sampler, machine  # noqa: E402
from wmbench.probe import INTERVAL_MS  # noqa: E402
from wmbench.project import RENDER_PARAMS, Bench  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUTPUTS = ("BENCHMARKS.md", "BENCHMARKS.json")


def git_state():
    """(full sha, list of dirty paths), the run's own outputs excluded."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()
    out = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=normal"],
                         capture_output=True, text=True, check=True).stdout
    dirty = [line[3:] for line in out.splitlines() if line[3:] not in OUTPUTS]
    return sha, dirty


def main(argv):
    allow_dirty = "--allow-dirty" in argv
    unknown = [a for a in argv if a != "--allow-dirty"]
    if unknown:
        raise BenchError(f"unknown argument {unknown[0]!r} (the only one is --allow-dirty)")
    sha, dirty = git_state()
    if dirty and not allow_dirty:
        raise BenchError("the tree has uncommitted changes, so no commit names what would be measured: "
                         + ", ".join(dirty[:10]) + ". Commit them, or pass --allow-dirty (development: "
                         "the report then names the commit <sha>-dirty)")
    runs = int(os.environ.get("BENCH_RUNS", "7"))
    status_runs = int(os.environ.get("BENCH_STATUS_RUNS", "60"))
    idle_seconds = int(os.environ.get("BENCH_IDLE_SECONDS", "60"))
    prune_runs = int(os.environ.get("BENCH_PRUNE_RUNS", "3"))
    only = [s for s in os.environ.get("BENCH_ONLY", "").split(",") if s]
    out = Path(os.environ.get("BENCH_JSON", str(ROOT / "BENCHMARKS.json")))
    agent = Path(os.environ.get("BENCH_AGENT", str(ROOT / "target/release/wavemap-agent")))
    if not agent.exists():
        raise BenchError(f"no {agent}: cargo build --release -p wavemap-agent")
    scenarios = [
        ("noop", lambda b: deploys.noop(b, runs)),
        ("changed", lambda b: deploys.changed(b, runs)),
        ("render", lambda b: host.render(b, runs)),
        ("full", lambda b: deploys.full(b, runs)),
        ("status", lambda b: host.status(b, status_runs)),
        ("idle", lambda b: host.idle(b, idle_seconds)),
        ("boot", lambda b: host.boot(b, runs)),
        ("prune", lambda b: prune.prune(b, prune_runs)),
    ]
    bad = [s for s in only if s not in dict(scenarios)]
    if bad:
        raise BenchError(f"BENCH_ONLY names {bad[0]!r}; the scenarios are {','.join(n for n, _ in scenarios)}")
    started = datetime.datetime.now(datetime.timezone.utc)
    b = Bench(ROOT, agent)
    log(f"work dir {b.work}, project {b.project}, {runs} runs per side, commit {sha[:12]}"
        + (" (dirty)" if dirty else ""))
    sampler = Sampler()
    data = {"schema": 1, "commit": sha[:12] + ("-dirty" if dirty else ""), "commit_full": sha,
            "agent_path": str(agent),
            "dirty_paths": dirty, "started": started.isoformat(timespec="seconds"),
            "config": {"runs": runs, "status_runs": status_runs, "idle_seconds": idle_seconds,
                       "prune_runs": prune_runs,
                       "render_params": RENDER_PARAMS, "probe_interval_ms": INTERVAL_MS,
                       "only": only},
            "scenarios": {}}
    try:
        b.write_configs()
        log("seeding SSM parameters and pushing private image copies")
        b.seed_parameters()
        b.private_copies()
        data["fixture"] = b.fixture_facts()
        b.probe_kind = data["config"]["probe"] = probe.kind(b)
        for name, fn in scenarios:
            if only and name not in only:
                continue
            log(f"scenario {name}")
            sampler.scenario = name
            data["scenarios"][name] = fn(b)
        data["machine"] = machine(b)
    finally:
        data["load"] = sampler.stop()
        b.cleanup()
    finished = datetime.datetime.now(datetime.timezone.utc)
    data["finished"] = finished.isoformat(timespec="seconds")
    data["minutes"] = round((finished - started).total_seconds() / 60.0, 1)
    sha2, dirty2 = git_state()
    if sha2 != sha or (dirty2 and not dirty):
        raise BenchError(f"the tree changed during the run (HEAD {sha[:12]} -> {sha2[:12]}, "
                         f"dirty now: {dirty2[:5]}); the figures name no single commit, nothing written")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(out)
    log(f"wrote {out}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except BenchError as e:
        log(f"FAILED: {e}")
        sys.exit(1)
