"""Deploy scenarios: the agent's `runtime deploy --execute` against what an
operator would run instead, on the same project, interleaved (the order of
the sides rotating every run)."""

from pathlib import Path

from .core import BenchError, log, rotate, sh, summary, timed
from .observe import Events, Lags, downtime_summary
from .probe import Probe

AGENT_STAGES = ("env-render", "ecr-login", "pull", "converge", "health")


def paired(a, b):
    """Per-run ratios of two sides measured in the same rounds."""
    return [x / y for x, y in zip(a, b) if y > 0]


def stage_summaries(stages, names):
    return {n: summary([s.get(n, 0) for s in stages]) for n in names}


def noop(b, runs):
    """No-op converge of the running, healthy project: the agent and
    Compose v2 on the agent's project, Compose v1 on its own copy of it
    (created by v1, because v1's config hash is not v2's: on the agent's
    containers each would recreate what the other made)."""
    b.pair_present("A", True)
    sh(b.deploy_cmd("A", "bench-setup"), b.env_agent)
    b.check_running("A", "the first deploy")
    before = b.ids()
    has_v1 = Path(b.compose_v1).exists()
    v1_project = f"{b.project}-v1"
    v1_cmd = [b.compose_v1, "-p", v1_project, "-f", b.compose_file, "up", "-d"]
    if has_v1:
        timed(v1_cmd, b.compose_env("A"), what="docker-compose (v1) up -d, creating its own copy")
        b.wait_healthy(v1_project)
        v1_before = b.ids(v1_project)
    agent, agent_cpu, agent_stages, v2, v2_cpu, v1, v1_cpu = [], [], [], [], [], [], []

    def run_agent():
        r = timed(b.deploy_cmd("A", "bench-noop"), b.env_agent, what="agent no-op deploy")
        if r.markers().get("WAVEMAP_RUNTIME_DEPLOY_CHANGED_SERVICES"):
            raise BenchError(f"agent no-op changed services: {r.markers()}")
        agent.append(r.ms)
        agent_cpu.append(r.cpu_ms)
        agent_stages.append(r.stages("WAVEMAP_RUNTIME_DEPLOY_STAGE_MS"))

    def run_v2():
        r = timed(b.compose_cmd("up", "-d"), b.compose_env("A"), what="docker compose up -d")
        v2.append(r.ms)
        v2_cpu.append(r.cpu_ms)

    def run_v1():
        r = timed(v1_cmd, b.compose_env("A"), what="docker-compose (v1) up -d")
        v1.append(r.ms)
        v1_cpu.append(r.cpu_ms)

    sides = [run_agent, run_v2] + ([run_v1] if has_v1 else [])
    for i in range(runs):
        rotate(i, sides)
    res = {"agent": summary(agent), "agent_cpu": summary(agent_cpu),
           "agent_stages": stage_summaries(agent_stages, AGENT_STAGES),
           "v2": summary(v2), "v2_cpu": summary(v2_cpu), "v2_recreated": before != b.ids(),
           "paired_v2": summary(paired(agent, v2)), "sides": len(sides)}
    b.check_running("A", "the no-op block")
    if has_v1:
        res.update({"v1": summary(v1), "v1_cpu": summary(v1_cpu),
                    "v1_recreated": v1_before != b.ids(v1_project),
                    "paired_v1": summary(paired(agent, v1))})
        sh([b.compose_v1, "-p", v1_project, "-f", b.compose_file, "down", "-v", "-t", "2"],
           b.compose_env("A"))
        # Why v1 has its own copy: once on the agent's containers, untimed.
        ids0 = b.ids()
        timed([b.compose_v1, "-p", b.project, "-f", b.compose_file, "up", "-d"], b.compose_env("A"),
              what="docker-compose (v1) up -d on the agent's project")
        b.wait_healthy()
        res["v1_on_agent_project_recreated"] = sorted(s for s, v in b.ids().items() if ids0.get(s) != v)
        r = timed(b.deploy_cmd("A", "bench-after-v1"), b.env_agent, what="agent deploy after v1")
        res["agent_after_v1_changed"] = r.markers().get("WAVEMAP_RUNTIME_DEPLOY_CHANGED_SERVICES", "")
        b.wait_healthy()
    log(f"no-op: agent {agent}, compose v2 {v2}, v1 {v1}")
    return res


class Flip:
    """One side of the changed-pair block: deploys the other pair each
    time, with docker events and the availability probe around the run."""

    def __init__(self, b, name, cmd_for, env_for, state, optional=False):
        self.b, self.name, self.cmd_for, self.env_for, self.state = b, name, cmd_for, env_for, state
        self.optional = optional
        self.unsupported = None
        self.ms, self.cpu, self.stages, self.down, self.ready, self.probes = [], [], [], [], [], []
        self.lags = Lags()

    def __call__(self):
        if self.unsupported:
            return
        b = self.b
        target = "B" if self.state["pair"] == "A" else "A"
        probe = Probe(b, f"{len(self.ms)}")
        ev = Events(b)
        try:
            r = timed(self.cmd_for(target), self.env_for(target), check=False)
        except BaseException:
            probe.kill()
            raise
        if r.code == 2 and self.optional and not self.ms:
            # Refused at load time, nothing changed: this agent does not
            # support the variant; the report says so instead of a row.
            probe.kill()
            ev.downtime()
            self.unsupported = (r.stdout + r.stderr).strip()[-1500:]
            log(f"{self.name}: refused (exit 2), not measured: {self.unsupported[-300:]}")
            return
        if r.code != 0:
            probe.kill()
            raise BenchError(f"{self.name} failed (exit {r.code}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        self.probes.append(probe.stop())
        self.down.append(ev.downtime())
        self.ready.append(ev.ready)
        self.state["pair"] = target
        b.check_running(target, self.name)
        self.lags.add(b, r.end_wall)
        self.ms.append(r.ms)
        self.cpu.append(r.cpu_ms)
        self.stages.append(r.stages("WAVEMAP_RUNTIME_DEPLOY_STAGE_MS"))

    def result(self):
        if self.unsupported:
            return {"unsupported": self.unsupported}
        probes = {}
        for svc in ("api", "frontend"):
            probes[svc] = {k: summary([p[svc][k] for p in self.probes if p[svc][k] is not None])
                           for k in ("failed", "gap_ms", "requests")}
        samples = [f"{svc}: {x}" for p in self.probes for svc in ("api", "frontend")
                   for x in p[svc].get("failure_samples", [])][:6]
        return {"wall": summary(self.ms), "cpu": summary(self.cpu), "probe_failure_samples": samples,
                "stages": stage_summaries(self.stages, AGENT_STAGES) if any(self.stages) else {},
                "down": downtime_summary(self.down), "ready": downtime_summary(self.ready),
                "lags": self.lags.result(), "probe": probes}


def changed(b, runs):
    """Pair A <-> B with the images on the host, three sides interleaved:
    the agent with `start-first` on the api, the agent with stop-first,
    and `docker compose up -d --wait`; the probe runs during every run."""
    b.pair_present("A", True)
    b.pair_present("B", True)
    sh(b.deploy_cmd("A", "bench-setup"), b.env_agent)
    b.check_running("A", "setup of the changed-pair block")
    state = {"pair": "A"}
    agent_env = lambda _pair: b.env_agent  # noqa: E731
    sides = {
        "agent_start_first": Flip(b, "agent deploy (api start-first)",
                                  lambda p: b.deploy_cmd(p, f"bench-sf-{p}", b.config_start),
                                  agent_env, state, optional=True),
        "agent_stop_first": Flip(b, "agent deploy (stop-first)",
                                 lambda p: b.deploy_cmd(p, f"bench-stop-{p}", b.config_stop),
                                 agent_env, state),
        "compose": Flip(b, "docker compose up -d --wait",
                        lambda p: b.compose_cmd("up", "-d", "--wait", file=b.compose_start),
                        b.compose_env, state),
    }
    order = list(sides.values())
    for i in range(runs):
        rotate(i, order)
    res = {k: v.result() for k, v in sides.items()}
    comp = sides["compose"].ms
    for k in ("agent_start_first", "agent_stop_first"):
        if "wall" in res[k]:
            res[k]["paired"] = summary(paired(sides[k].ms, comp))
    log("changed: " + ", ".join(f"{k} {v.ms}" for k, v in sides.items()))
    return res


def full(b, runs):
    """Changed pair, images not on the host: login + pull + converge +
    health, the agent against bench/alt-deploy.sh."""
    b.pair_present("A", True)
    sh(b.deploy_cmd("A", "bench-setup"), b.env_agent)
    b.check_running("A", "setup of the full deploy")
    state = {"pair": "A"}
    agent, alt, agent_stages, alt_stages, agent_cpu, alt_cpu = [], [], [], [], [], []
    agent_lags, alt_lags = Lags(), Lags()
    agent_down, alt_down = [], []

    def flip():
        state["pair"] = "B" if state["pair"] == "A" else "A"
        b.pair_present(state["pair"], False)
        return state["pair"]

    def run_agent():
        target = flip()
        ev = Events(b)
        r = timed(b.deploy_cmd(target, f"bench-full-{target}"), b.env_agent, what="agent deploy (full)")
        agent_down.append(ev.downtime())
        b.check_running(target, "agent deploy (full)")
        if "pulling" not in r.stderr:
            raise BenchError(f"agent full deploy did not pull:\n{r.stderr[-2000:]}")
        agent_lags.add(b, r.end_wall)
        agent.append(r.ms)
        agent_cpu.append(r.cpu_ms)
        agent_stages.append(r.stages("WAVEMAP_RUNTIME_DEPLOY_STAGE_MS"))

    def run_alt():
        target = flip()
        ev = Events(b)
        r = timed([b.root / "bench/alt-deploy.sh", b.project, b.compose_file, b.env_dir, b.prefix,
                   b.registry, b.images[("backend", target)], b.images[("frontend", target)]],
                  b.env_alt, what="bench/alt-deploy.sh")
        alt_down.append(ev.downtime())
        b.check_running(target, "bench/alt-deploy.sh")
        alt_lags.add(b, r.end_wall)
        alt.append(r.ms)
        alt_cpu.append(r.cpu_ms)
        alt_stages.append(r.stages("ALT_DEPLOY_STAGE_MS"))

    for i in range(runs):
        rotate(i, [run_agent, run_alt])
    b.pair_present("A", True)
    b.pair_present("B", True)
    log(f"full: agent {agent}, pipeline {alt}")
    return {"agent": summary(agent), "alt": summary(alt), "agent_cpu": summary(agent_cpu),
            "alt_cpu": summary(alt_cpu), "paired": summary(paired(agent, alt)),
            "agent_stages": stage_summaries(agent_stages, AGENT_STAGES),
            "alt_stages": stage_summaries(alt_stages, ("render", "login", "pull", "up")),
            "agent_lags": agent_lags.result(), "alt_lags": alt_lags.result(),
            "agent_down": downtime_summary(agent_down), "alt_down": downtime_summary(alt_down)}
