#!/usr/bin/env python3
"""The measurements behind BENCHMARKS.md; run it through `bench/run`.

Every figure is the agent against what an operator would run instead, on
the same project, in the same run, with the two sides interleaved (the
order flips every run) so that load from other work on the machine falls
on both sides alike. Each scenario prints its numbers as it ends; the last
step writes BENCHMARKS.md (BENCH_OUT) from them.

Knobs (environment): BENCH_RUNS (runs per side, default 7),
BENCH_STATUS_RUNS (default 60), BENCH_IDLE_SECONDS (default 60),
BENCH_OUT (default <repo>/BENCHMARKS.md), BENCH_ONLY (comma list of
scenarios: noop,changed,render,full,status,idle,boot; default all).
"""

import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
AGENT = Path(os.environ.get("BENCH_AGENT", str(ROOT / "target/release/wavemap-agent")))
RUNS = int(os.environ.get("BENCH_RUNS", "7"))
STATUS_RUNS = int(os.environ.get("BENCH_STATUS_RUNS", "60"))
IDLE_SECONDS = int(os.environ.get("BENCH_IDLE_SECONDS", "60"))
OUT = Path(os.environ.get("BENCH_OUT", str(ROOT / "BENCHMARKS.md")))
ONLY = [s for s in os.environ.get("BENCH_ONLY", "").split(",") if s]
COMPOSE_V1 = "/usr/bin/docker-compose"
RENDER_PARAMS = 300
GROUPS = ["backend", "frontend", "postgres"]


class BenchError(Exception):
    pass


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def read_stack_env():
    path = ROOT / ".stack/env"
    if not path.exists():
        raise BenchError("no .stack/env: scripts/stack/up did not run")
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


STACK = read_stack_env()


def need(key):
    value = STACK.get(key)
    if not value:
        raise BenchError(f".stack/env has no {key}: rerun scripts/stack/up")
    return value


# ---------------------------------------------------------------- running


class Run:
    """One timed command: wall ms, client CPU ms, exit code, output."""

    def __init__(self, ms, cpu_ms, proc):
        self.ms = ms
        self.cpu_ms = cpu_ms
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def markers(self):
        out = {}
        for line in self.stdout.splitlines():
            if "=" in line and (line.startswith("WAVEMAP_") or line.startswith("ALT_")):
                k, v = line.split("=", 1)
                out[k] = v
        return out

    def stages(self, key):
        """`a:1,b:2` marker -> {"a": 1, "b": 2}."""
        text = self.markers().get(key, "")
        out = {}
        for part in filter(None, text.split(",")):
            name, _, ms = part.partition(":")
            out[name] = int(ms)
        return out


def timed(cmd, env, check=True, stdin=None, what=None):
    """Run cmd to completion; wall time with perf_counter, CPU time of the
    client processes (the command and the children it waited for) from
    RUSAGE_CHILDREN. Work done inside dockerd is in neither."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(c) for c in cmd],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    ms = (time.perf_counter() - t0) * 1000.0
    end_wall = time.time()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1000.0
    run = Run(ms, cpu, proc)
    run.end_wall = end_wall
    if check and proc.returncode != 0:
        raise BenchError(
            f"{what or cmd[0]} failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n"
            f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
        )
    return run


def sh(cmd, env=None, check=True, stdin=None):
    proc = subprocess.run(
        [str(c) for c in cmd],
        env=env or ENV_SETUP,
        input=stdin,
        capture_output=True,
        text=True,
    )
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(map(str, cmd))} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout.strip()


def version_of(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - a missing tool is just reported
        return f"unavailable ({e})"


# ---------------------------------------------------------------- stats


def summary(values):
    v = sorted(values)
    if not v:
        return {"n": 0}
    q = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0]] * 3
    return {
        "n": len(v),
        "median": statistics.median(v),
        "min": v[0],
        "max": v[-1],
        "q1": q[0],
        "q3": q[2],
        "samples": [round(x, 1) for x in values],
    }


def percentile(values, p):
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def fmt_ms(s):
    if s.get("n", 0) == 0:
        return "n/a"
    return f"{s['median']:.0f} ms ({s['min']:.0f}–{s['max']:.0f})"


def ratio(agent, alt):
    return agent["median"] / alt["median"] if alt.get("median") else float("nan")


def paired_ratios(agent_samples, alt_samples):
    return [a / b for a, b in zip(agent_samples, alt_samples) if b > 0]


# ---------------------------------------------------------------- the setup


WORK = Path(tempfile.mkdtemp(prefix="wavemap-bench-"))
BENCH_ID = f"wmbench-{os.getpid()}-{int(time.time()) % 100000}"
PROJECT = BENCH_ID
PREFIX = f"/wavemap-bench/{BENCH_ID}/runtime/"
RENDER_PREFIX = f"/wavemap-bench/{BENCH_ID}/render/"
REGISTRY = need("WAVEMAP_TEST_REGISTRY")


def base_env():
    env = dict(os.environ)
    for k in ("WAVEMAP_AGENT_CONFIG", "AWS_PROFILE", "DATABASE_URL", "NOTIFY_SOCKET",
              "WATCHDOG_USEC", "WATCHDOG_PID", "COMPOSE_PROJECT_NAME", "COMPOSE_FILE"):
        env.pop(k, None)
    for k, v in STACK.items():
        if k.startswith("AWS_"):
            env[k] = v
    env["AWS_DEFAULT_REGION"] = STACK.get("AWS_REGION", "us-east-2")
    env["AWS_PAGER"] = ""
    return env


ENV_SETUP = base_env()
ENV_SETUP["DOCKER_CONFIG"] = str(WORK / "docker-setup")
# The alternatives log in for themselves, into their own docker config.
ENV_ALT = base_env()
ENV_ALT["DOCKER_CONFIG"] = str(WORK / "docker-alt")
ENV_AGENT = base_env()

COMPOSE_FILE = WORK / "runtime/compose.yaml"
ENV_DIR = WORK / "runtime/env"
CONFIG = WORK / "agent.toml"
RENDER_CONFIG = WORK / "agent-render.toml"
RENDER_AGENT_DIR = WORK / "render-agent"
RENDER_SHELL_DIR = WORK / "render-shell"


def toml_str(s):
    return json.dumps(str(s))


def write_configs():
    (WORK / "runtime/env").mkdir(parents=True)
    fixture = (ROOT / "tests/fixtures/runtime/compose.yaml").read_text()
    COMPOSE_FILE.write_text(
        fixture.replace("${WAVEMAP_POSTGRES_IMAGE}", need("WAVEMAP_TEST_POSTGRES_IMAGE"))
    )
    common = f"""# written by bench/bench.py
[agent]
state_dir = {toml_str(WORK / 'state')}
run_dir = {toml_str(WORK / 'run')}
lock_timeout = 120

[aws]
region = {toml_str(STACK.get('AWS_REGION', 'us-east-2'))}
ssm_endpoint = {toml_str(need('AWS_ENDPOINT_URL_SSM'))}
ecr_endpoint = {toml_str(need('AWS_ENDPOINT_URL_ECR'))}

[docker]
allowed_registries = [{toml_str(REGISTRY)}]

[receipt]
path = {toml_str(WORK / 'deployment/last-successful-runtime-release.json')}
"""
    CONFIG.write_text(
        common
        + f"""
[runtime]
compose_file = {toml_str(COMPOSE_FILE)}
env_dir = {toml_str(ENV_DIR)}
project_name = {toml_str(PROJECT)}
parameter_prefix = {toml_str(PREFIX)}
health_timeout = 240
pull_timeout = 300
"""
    )
    RENDER_CONFIG.write_text(
        common
        + f"""
[runtime]
compose_file = {toml_str(COMPOSE_FILE)}
env_dir = {toml_str(RENDER_AGENT_DIR)}
project_name = {toml_str(PROJECT)}
parameter_prefix = {toml_str(RENDER_PREFIX)}
"""
    )


def ssm():
    import boto3  # installed by bench/run

    return boto3.client(
        "ssm",
        endpoint_url=need("AWS_ENDPOINT_URL_SSM"),
        region_name=STACK.get("AWS_REGION", "us-east-2"),
        aws_access_key_id=STACK.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=STACK.get("AWS_SECRET_ACCESS_KEY", "testing"),
    )


DB_PASSWORD = f"bench-{BENCH_ID}-pw"


def seed_parameters():
    client = ssm()
    for name, value, kind in [
        ("postgres/POSTGRES_USER", "wavemap", "String"),
        ("postgres/POSTGRES_DB", "wavemap", "String"),
        ("postgres/POSTGRES_PASSWORD", DB_PASSWORD, "SecureString"),
        ("backend/DATABASE_URL", f"postgres://wavemap:{DB_PASSWORD}@postgres:5432/wavemap", "SecureString"),
        ("backend/APP_ORIGIN", "https://dev.wavemap.app", "String"),
        ("frontend/PUBLIC_API_ORIGIN", "https://dev.wavemap.app/api", "String"),
    ]:
        client.put_parameter(Name=PREFIX + name, Value=value, Type=kind, Overwrite=True)
    # 300 for the render benchmark: 100 per group, every other one a
    # SecureString; values with quotes, $, #, =, backslashes, spaces, and a
    # multi-line one per group (~80 bytes each).
    for group in GROUPS:
        for i in range(RENDER_PARAMS // len(GROUPS)):
            value = f"value {i} of {group}: it's \"quoted\" $HOME #x =y \\z " + "p" * 24
            if i == 7:
                value = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----\n"
            if i == 9:
                value = "plain-" + "q" * 60
            client.put_parameter(
                Name=f"{RENDER_PREFIX}{group}/VAR_{i:03}",
                Value=value,
                Type="SecureString" if i % 2 == 0 else "String",
                Overwrite=True,
            )


def delete_parameters():
    try:
        client = ssm()
        for prefix in (PREFIX, RENDER_PREFIX):
            names = []
            for page in client.get_paginator("get_parameters_by_path").paginate(
                Path=prefix.rstrip("/"), Recursive=True
            ):
                names += [p["Name"] for p in page["Parameters"]]
            for i in range(0, len(names), 10):
                client.delete_parameters(Names=names[i:i + 10])
    except Exception as e:  # noqa: BLE001 - cleanup is best effort
        log(f"cleanup: cannot delete parameters: {e}")


IMAGES = {}  # ("backend"|"frontend", "A"|"B") -> private copy URI
SHA = {"A": need("WAVEMAP_TEST_SHA_A"), "B": need("WAVEMAP_TEST_SHA_B")}


def private_copies():
    """Push the test pair A and B under a repository unique to this run, so
    `docker rmi` of the copies makes the next deploy log in and pull (the
    layers stay on disk through the stack's own tags: the pull measures the
    tools, not the network)."""
    sh(["docker", "login", "-u", need("WAVEMAP_TEST_REGISTRY_USER"), "--password-stdin", REGISTRY],
       stdin=need("WAVEMAP_TEST_REGISTRY_PASSWORD"))
    for service in ("backend", "frontend"):
        for pair in ("A", "B"):
            original = need(f"WAVEMAP_TEST_{service.upper()}_IMAGE_{pair}")
            tag = original.rsplit(":", 1)[1]
            copy = f"{REGISTRY}/{BENCH_ID}/{service}:{tag}"
            if subprocess.run(["docker", "image", "inspect", original], capture_output=True).returncode:
                sh(["docker", "pull", "-q", original])
            sh(["docker", "tag", original, copy])
            sh(["docker", "push", "-q", copy])
            IMAGES[(service, pair)] = copy
    postgres = need("WAVEMAP_TEST_POSTGRES_IMAGE")
    if subprocess.run(["docker", "image", "inspect", postgres], capture_output=True).returncode:
        sh(["docker", "pull", "-q", postgres])


def pair_present(pair, present):
    """Make sure the private copies of `pair` are (or are not) tagged locally."""
    for service in ("backend", "frontend"):
        image = IMAGES[(service, pair)]
        tagged = subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0
        if present and not tagged:
            sh(["docker", "pull", "-q", image])
        elif not present and tagged:
            sh(["docker", "rmi", image])


def compose_env(pair):
    env = dict(ENV_ALT)
    env["WAVEMAP_BACKEND_IMAGE"] = IMAGES[("backend", pair)]
    env["WAVEMAP_FRONTEND_IMAGE"] = IMAGES[("frontend", pair)]
    env["WAVEMAP_ENV_DIR"] = str(ENV_DIR)
    return env


def agent_deploy_cmd(pair, version):
    return [
        AGENT, "--config", CONFIG, "runtime", "deploy",
        "--backend-image", IMAGES[("backend", pair)],
        "--frontend-image", IMAGES[("frontend", pair)],
        "--source-sha", SHA[pair],
        "--deployment-version", version,
        "--selected-ref", "bench",
        "--execute",
    ]


def containers():
    """service -> (id, image, status) of the project's containers."""
    out = sh([
        "docker", "ps", "-a", "--no-trunc",
        "--filter", f"label=com.docker.compose.project={PROJECT}",
        "--format", '{{.ID}}\t{{.Label "com.docker.compose.service"}}\t{{.Image}}\t{{.Status}}',
    ])
    result = {}
    for line in filter(None, out.splitlines()):
        cid, service, image, status = line.split("\t")
        result.setdefault(service, []).append((cid, image, status))
    return result


def check_running(pair, what):
    """Every service has one container, healthy, running the pair."""
    c = containers()
    problems = []
    for service in ("postgres", "api", "frontend"):
        got = c.get(service, [])
        if len(got) != 1 or "(healthy)" not in got[0][2]:
            problems.append(f"{service}: {got}")
    for service, key in (("api", "backend"), ("frontend", "frontend")):
        got = c.get(service, [])
        if got and got[0][1] != IMAGES[(key, pair)]:
            problems.append(f"{service} runs {got[0][1]}, expected {IMAGES[(key, pair)]}")
    if problems:
        raise BenchError(f"after {what}: " + "; ".join(problems))


def wait_healthy(limit=180):
    until = time.time() + limit
    while time.time() < until:
        c = containers()
        if all(len(c.get(s, [])) == 1 and "(healthy)" in c[s][0][2] for s in ("postgres", "api", "frontend")):
            return
        time.sleep(0.5)
    raise BenchError(f"project not healthy within {limit}s: {containers()}")


def ids():
    return {s: [x[0] for x in v] for s, v in containers().items()}


def remove_containers():
    c = [x[0] for v in containers().values() for x in v]
    if c:
        sh(["docker", "rm", "-f", *c])


def parse_ts(text):
    """Docker's RFC 3339 time with nanoseconds -> Unix seconds."""
    text = text.rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.timezone.utc).timestamp()


def health_lags(end_wall):
    """How long a tool took to notice health, from Docker's own records:
    (api healthy -> frontend started: the depends_on wait),
    (api healthy -> frontend's new container created; negative: before),
    (frontend healthy -> the tool returned: the final health wait), in ms.
    A service is healthy at the end of its first passing check."""
    info = json.loads(sh(["docker", "inspect", f"{PROJECT}-api-1", f"{PROJECT}-frontend-1"]))
    by = {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in info}

    def healthy_at(c):
        started = parse_ts(c["State"]["StartedAt"])
        passing = [parse_ts(h["End"]) for h in c["State"]["Health"]["Log"]
                   if h["ExitCode"] == 0 and parse_ts(h["Start"]) >= started]
        return min(passing) if passing else None

    api_ok, front_ok = healthy_at(by["api"]), healthy_at(by["frontend"])
    front_started = parse_ts(by["frontend"]["State"]["StartedAt"])
    front_created = parse_ts(by["frontend"]["Created"])
    dep = (front_started - api_ok) * 1000.0 if api_ok else None
    created = (front_created - api_ok) * 1000.0 if api_ok else None
    final = (end_wall - front_ok) * 1000.0 if front_ok else None
    return dep, created, final


class Events:
    """`docker events` of the project while one run happens, to measure how
    long each service was unavailable: from its old container's `die` to
    the new container's `health_status: healthy`."""

    def __init__(self):
        self.since = time.time()
        self.proc = subprocess.Popen(
            ["docker", "events", "--since", f"{self.since:.3f}",
             "--filter", f"label=com.docker.compose.project={PROJECT}",
             "--filter", "type=container",
             "--format", '{{.TimeNano}}\t{{.Action}}\t{{index .Actor.Attributes "com.docker.compose.service"}}'],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV_SETUP)

    def downtime(self):
        """service -> ms unavailable (None when it was never down)."""
        time.sleep(0.5)  # let the last events arrive
        self.proc.terminate()
        out, _ = self.proc.communicate()
        died, result = {}, {}
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) != 3:
                continue
            t, action, service = int(parts[0]) / 1e9, parts[1], parts[2]
            if action == "die" and service not in died:
                died[service] = t
            elif action.startswith("health_status") and "unhealthy" not in action and service in died \
                    and service not in result:
                result[service] = (t - died[service]) * 1000.0
        return result


def load():
    return Path("/proc/loadavg").read_text().split()[:3]


def other_work():
    """How many compilers / test binaries of other work ran at this moment."""
    out = subprocess.run(["ps", "-eo", "comm="], capture_output=True, text=True).stdout.split()
    busy = [c for c in out if c in ("rustc", "cargo", "clippy-driver", "cc", "ld", "ld.lld", "rust-lld")
            or c.startswith("e2e-") or c.startswith("wavemap_agent-")]
    return len(busy)


# ---------------------------------------------------------------- scenarios

RESULTS = {"scenarios": {}, "notes": [], "load": []}


def note_load(name):
    RESULTS["load"].append({"scenario": name, "loadavg": load(), "busy": other_work(),
                            "time": datetime.datetime.utcnow().strftime("%H:%M:%S")})


class Lags:
    """health_lags() of every run of one side."""

    def __init__(self):
        self.dep, self.created, self.final = [], [], []

    def add(self, end_wall):
        dep, created, final = health_lags(end_wall)
        if dep is not None:
            self.dep.append(dep)
            self.created.append(created)
        if final is not None:
            self.final.append(final)

    def result(self):
        return {"dep": summary(self.dep), "created": summary(self.created), "final": summary(self.final)}


def downtime_summary(runs):
    return {svc: summary([r[svc] for r in runs if svc in r]) for svc in ("api", "frontend")}


def interleave(i, a, b):
    """Run a then b on even runs, b then a on odd runs."""
    if i % 2 == 0:
        a()
        b()
    else:
        b()
        a()


def scenario_noop():
    """No-op converge of the running, healthy project."""
    note_load("noop")
    sh(agent_deploy_cmd("A", "bench-setup"), env=ENV_AGENT)
    check_running("A", "the first deploy")
    before = ids()
    agent, agent_converge, agent_conv_health, v2 = [], [], [], []
    agent_cpu, v2_cpu, agent_stages = [], [], []

    def run_agent():
        r = timed(agent_deploy_cmd("A", "bench-noop"), ENV_AGENT, what="agent no-op deploy")
        st = r.stages("WAVEMAP_RUNTIME_DEPLOY_STAGE_MS")
        agent.append(r.ms)
        agent_cpu.append(r.cpu_ms)
        agent_converge.append(st.get("converge", 0))
        agent_conv_health.append(st.get("converge", 0) + st.get("health", 0))
        agent_stages.append(st)
        if r.markers().get("WAVEMAP_RUNTIME_DEPLOY_CHANGED_SERVICES"):
            raise BenchError(f"agent no-op changed services: {r.markers()}")

    def run_v2():
        r = timed(["docker", "compose", "-p", PROJECT, "-f", COMPOSE_FILE, "up", "-d"],
                  compose_env("A"), what="docker compose up -d")
        v2.append(r.ms)
        v2_cpu.append(r.cpu_ms)

    for i in range(RUNS):
        interleave(i, run_agent, run_v2)
    after = ids()
    res = {
        "agent": summary(agent), "agent_cpu": summary(agent_cpu),
        "agent_converge": summary(agent_converge),
        "agent_converge_health": summary(agent_conv_health),
        "agent_stages": agent_stages,
        "v2": summary(v2), "v2_cpu": summary(v2_cpu),
        "v2_recreated": before != after,
        "paired": summary(paired_ratios(agent, v2)),
    }
    # Compose v1 (Debian's 1.29): its own block, after one warm-up run,
    # because its config hash is not v2's (see the note it leaves).
    if Path(COMPOSE_V1).exists():
        v1_env = compose_env("A")
        before = ids()
        timed([COMPOSE_V1, "-p", PROJECT, "-f", COMPOSE_FILE, "up", "-d"], v1_env, what="docker-compose up -d (warm-up)")
        wait_healthy()
        warm = ids()
        res["v1_warmup_recreated"] = before != warm
        v1, v1_cpu = [], []
        for _ in range(RUNS):
            r = timed([COMPOSE_V1, "-p", PROJECT, "-f", COMPOSE_FILE, "up", "-d"], v1_env,
                      what="docker-compose up -d")
            v1.append(r.ms)
            v1_cpu.append(r.cpu_ms)
        res["v1_recreated"] = warm != ids()
        res["v1"] = summary(v1)
        res["v1_cpu"] = summary(v1_cpu)
        # Back to the agent's state (it recreates what v1 created under its hash).
        r = timed(agent_deploy_cmd("A", "bench-after-v1"), ENV_AGENT, what="agent deploy after v1")
        res["agent_after_v1_changed"] = r.markers().get("WAVEMAP_RUNTIME_DEPLOY_CHANGED_SERVICES", "")
        wait_healthy()
    check_running("A", "the no-op block")
    RESULTS["scenarios"]["noop"] = res
    log(f"no-op: agent {fmt_ms(res['agent'])}, converge stage {fmt_ms(res['agent_converge'])}, "
        f"compose v2 {fmt_ms(res['v2'])}, v1 {fmt_ms(res.get('v1', {}))}")


def scenario_changed():
    """Pair A <-> B with the images already on the host."""
    note_load("changed")
    pair_present("A", True)
    pair_present("B", True)
    state = {"pair": "A"}
    sh(agent_deploy_cmd("A", "bench-setup"), env=ENV_AGENT)
    agent, alt, agent_stages, agent_cpu, alt_cpu = [], [], [], [], []
    agent_lags, alt_lags = Lags(), Lags()
    agent_down, alt_down = [], []

    def flip():
        state["pair"] = "B" if state["pair"] == "A" else "A"
        return state["pair"]

    def run_agent():
        target = flip()
        ev = Events()
        r = timed(agent_deploy_cmd(target, f"bench-changed-{target}"), ENV_AGENT, what="agent deploy (changed)")
        agent_down.append(ev.downtime())
        check_running(target, "agent deploy (changed)")
        agent_lags.add(r.end_wall)
        agent.append(r.ms)
        agent_cpu.append(r.cpu_ms)
        agent_stages.append(r.stages("WAVEMAP_RUNTIME_DEPLOY_STAGE_MS"))

    def run_alt():
        target = flip()
        ev = Events()
        r = timed(["docker", "compose", "-p", PROJECT, "-f", COMPOSE_FILE, "up", "-d", "--wait"],
                  compose_env(target), what="docker compose up -d --wait (changed)")
        alt_down.append(ev.downtime())
        check_running(target, "docker compose up -d --wait (changed)")
        alt_lags.add(r.end_wall)
        alt.append(r.ms)
        alt_cpu.append(r.cpu_ms)

    for i in range(RUNS):
        interleave(i, run_agent, run_alt)
    res = {"agent": summary(agent), "alt": summary(alt), "agent_cpu": summary(agent_cpu),
           "alt_cpu": summary(alt_cpu), "agent_stages": agent_stages,
           "paired": summary(paired_ratios(agent, alt)),
           "agent_lags": agent_lags.result(), "alt_lags": alt_lags.result(),
           "agent_down": downtime_summary(agent_down), "alt_down": downtime_summary(alt_down)}
    for stage in ("env-render", "ecr-login", "pull", "converge", "health"):
        res[f"stage_{stage}"] = summary([s.get(stage, 0) for s in agent_stages])
    RESULTS["scenarios"]["changed"] = res
    log(f"changed: agent {fmt_ms(res['agent'])}, compose {fmt_ms(res['alt'])}")


def read_env_lines(directory):
    out = {}
    for g in GROUPS:
        text = (directory / f"{g}.env").read_text()
        out[g] = [line for line in text.splitlines() if not line.startswith("#")]
    return out


def scenario_render():
    """300 parameters into three env files."""
    note_load("render")
    client = ssm()
    agent, shell, same, agent_cpu, shell_cpu, same_cpu = [], [], [], [], [], []
    render_cmd = [AGENT, "--config", RENDER_CONFIG, "runtime-env", "--execute"]
    shell_cmd = [BENCH / "alt-render.sh", RENDER_PREFIX, RENDER_SHELL_DIR, *GROUPS]
    timed(render_cmd, ENV_AGENT, what="agent runtime-env (warm-up)")
    counter = {"n": 0}

    def change():
        # One value changes before every run of either side: a real render
        # that writes a file, as after a parameter update.
        counter["n"] += 1
        client.put_parameter(Name=f"{RENDER_PREFIX}backend/VAR_001",
                             Value=f"changed {counter['n']} {time.time()}", Type="String", Overwrite=True)

    def run_agent():
        change()
        r = timed(render_cmd, ENV_AGENT, what="agent runtime-env")
        m = r.markers()
        if m.get("WAVEMAP_RUNTIME_ENV_RESULT") != "rendered" or m.get("WAVEMAP_RUNTIME_ENV_PARAMETERS") != str(RENDER_PARAMS):
            raise BenchError(f"agent render did not render {RENDER_PARAMS} parameters: {m}")
        agent.append(r.ms)
        agent_cpu.append(r.cpu_ms)

    def run_shell():
        change()
        r = timed(shell_cmd, ENV_ALT, what="bench/alt-render.sh")
        shell.append(r.ms)
        shell_cpu.append(r.cpu_ms)

    floor = []

    def moto_floor():
        # The same 30 pages fetched by a warm in-process client: what moto
        # itself needs, the floor under both sides.
        t0 = time.perf_counter()
        n = 0
        for page in client.get_paginator("get_parameters_by_path").paginate(
                Path=RENDER_PREFIX.rstrip("/"), Recursive=True, WithDecryption=True):
            n += len(page["Parameters"])
        floor.append((time.perf_counter() - t0) * 1000.0)
        if n != RENDER_PARAMS:
            raise BenchError(f"moto returned {n} parameters, expected {RENDER_PARAMS}")

    for i in range(RUNS):
        interleave(i, run_agent, run_shell)
        moto_floor()
    # The same input for both, then the files must say the same.
    change()
    timed(render_cmd, ENV_AGENT)
    timed(shell_cmd, ENV_ALT)
    a, s = read_env_lines(RENDER_AGENT_DIR), read_env_lines(RENDER_SHELL_DIR)
    identical = a == s
    lines = sum(len(v) for v in a.values())
    modes = sorted({f"{(d / f'{g}.env').stat().st_mode & 0o777:04o}" for d in (RENDER_AGENT_DIR, RENDER_SHELL_DIR) for g in GROUPS})
    for _ in range(RUNS):
        r = timed(render_cmd, ENV_AGENT, what="agent runtime-env (unchanged)")
        if r.markers().get("WAVEMAP_RUNTIME_ENV_RESULT") != "unchanged":
            raise BenchError(f"agent render changed something on an unchanged input: {r.markers()}")
        same.append(r.ms)
        same_cpu.append(r.cpu_ms)
    res = {"agent": summary(agent), "shell": summary(shell), "agent_unchanged": summary(same),
           "agent_cpu": summary(agent_cpu), "shell_cpu": summary(shell_cpu),
           "agent_unchanged_cpu": summary(same_cpu), "identical": identical, "lines": lines,
           "modes": modes, "paired": summary(paired_ratios(agent, shell)), "floor": summary(floor)}
    if not identical:
        diff = [(g, x, y) for g in GROUPS for x, y in zip(a[g], s[g]) if x != y][:3]
        res["first_differences"] = [f"{g}: agent {x!r} / shell {y!r}" for g, x, y in diff]
    RESULTS["scenarios"]["render"] = res
    log(f"render: agent {fmt_ms(res['agent'])}, unchanged {fmt_ms(res['agent_unchanged'])}, "
        f"shell {fmt_ms(res['shell'])}, identical files: {identical}")


def scenario_full():
    """Changed pair, images not on the host: login + pull + converge + health."""
    note_load("full")
    pair_present("A", True)
    sh(agent_deploy_cmd("A", "bench-setup"), env=ENV_AGENT)
    check_running("A", "setup of the full deploy")
    state = {"pair": "A"}
    agent, alt, agent_stages, alt_stages, agent_cpu, alt_cpu = [], [], [], [], [], []
    agent_lags, alt_lags = Lags(), Lags()
    agent_down, alt_down = [], []

    def flip():
        state["pair"] = "B" if state["pair"] == "A" else "A"
        pair_present(state["pair"], False)
        return state["pair"]

    def run_agent():
        target = flip()
        ev = Events()
        r = timed(agent_deploy_cmd(target, f"bench-full-{target}"), ENV_AGENT, what="agent deploy (full)")
        agent_down.append(ev.downtime())
        check_running(target, "agent deploy (full)")
        agent_lags.add(r.end_wall)
        agent.append(r.ms)
        agent_cpu.append(r.cpu_ms)
        agent_stages.append(r.stages("WAVEMAP_RUNTIME_DEPLOY_STAGE_MS"))
        if "pulling" not in r.stderr:
            raise BenchError(f"agent full deploy did not pull:\n{r.stderr[-2000:]}")

    def run_alt():
        target = flip()
        ev = Events()
        r = timed([BENCH / "alt-deploy.sh", PROJECT, COMPOSE_FILE, ENV_DIR, PREFIX, REGISTRY,
                   IMAGES[("backend", target)], IMAGES[("frontend", target)]],
                  ENV_ALT, what="bench/alt-deploy.sh")
        alt_down.append(ev.downtime())
        check_running(target, "bench/alt-deploy.sh")
        alt_lags.add(r.end_wall)
        alt.append(r.ms)
        alt_cpu.append(r.cpu_ms)
        alt_stages.append(r.stages("ALT_DEPLOY_STAGE_MS"))

    for i in range(RUNS):
        interleave(i, run_agent, run_alt)
    res = {"agent": summary(agent), "alt": summary(alt), "agent_cpu": summary(agent_cpu),
           "alt_cpu": summary(alt_cpu), "agent_stages": agent_stages, "alt_stages": alt_stages,
           "paired": summary(paired_ratios(agent, alt)),
           "agent_lags": agent_lags.result(), "alt_lags": alt_lags.result(),
           "agent_down": downtime_summary(agent_down), "alt_down": downtime_summary(alt_down)}
    for stage in ("env-render", "ecr-login", "pull", "converge", "health"):
        res[f"stage_{stage}"] = summary([s.get(stage, 0) for s in agent_stages])
    for stage in ("render", "login", "pull", "up"):
        res[f"alt_stage_{stage}"] = summary([s.get(stage, 0) for s in alt_stages])
    RESULTS["scenarios"]["full"] = res
    pair_present("A", True)
    pair_present("B", True)
    log(f"full: agent {fmt_ms(res['agent'])}, shell pipeline {fmt_ms(res['alt'])}")


def ensure_agent_release_a():
    pair_present("A", True)
    sh(agent_deploy_cmd("A", "bench-setup"), env=ENV_AGENT)
    check_running("A", "deploy of A")


def scenario_status():
    note_load("status")
    ensure_agent_release_a()
    times = []
    for _ in range(STATUS_RUNS):
        r = timed([AGENT, "--config", CONFIG, "status"], ENV_AGENT, what="status")
        times.append(r.ms)
    res = {"all": summary(times), "p50": percentile(times, 50), "p95": percentile(times, 95)}
    json_times = []
    for _ in range(max(5, STATUS_RUNS // 5)):
        json_times.append(timed([AGENT, "--config", CONFIG, "status", "--json"], ENV_AGENT).ms)
    res["json_p50"] = percentile(json_times, 50)
    res["json_p95"] = percentile(json_times, 95)
    RESULTS["scenarios"]["status"] = res
    log(f"status: p50 {res['p50']:.0f} ms, p95 {res['p95']:.0f} ms")


class Daemon:
    """`wavemap-agent daemon` under a NOTIFY_SOCKET we listen on, with the
    unit's WatchdogSec=60 (WATCHDOG_USEC) and WATCHDOG_PID set as systemd does."""

    def __init__(self, tag):
        self.sock_path = WORK / f"notify-{tag}.sock"
        if self.sock_path.exists():
            self.sock_path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.sock_path))
        self.sock.settimeout(0.2)
        self.messages = []
        env = dict(ENV_AGENT)
        env["NOTIFY_SOCKET"] = str(self.sock_path)
        env["WATCHDOG_USEC"] = "60000000"
        self.log = open(WORK / f"daemon-{tag}.log", "w")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            ["sh", "-c", 'WATCHDOG_PID=$$ exec "$0" "$@"', str(AGENT), "--config", str(CONFIG), "daemon"],
            env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, limit=300):
        until = time.perf_counter() + limit
        while time.perf_counter() < until:
            try:
                data = self.sock.recv(4096).decode(errors="replace")
            except socket.timeout:
                if self.proc.poll() is not None:
                    raise BenchError(f"daemon exited with {self.proc.returncode} before READY: {self.messages}")
                continue
            self.messages.append(data)
            if "READY=1" in data.splitlines():
                self.ready_wall = time.time()
                return (time.perf_counter() - self.started) * 1000.0
        raise BenchError(f"daemon not READY within {limit}s: {self.messages}")

    def stop(self):
        """SIGTERM, as systemd does (the app's containers keep running)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.sock.close()
        self.log.close()
        if self.sock_path.exists():
            self.sock_path.unlink()


def proc_sample(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kb = int(fields["VmRSS"].split()[0])
    hwm_kb = int(fields["VmHWM"].split()[0])
    threads = int(fields["Threads"].strip())
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rindex(")") + 2:].split()
    ticks = int(rest[11]) + int(rest[12])  # utime, stime (fields 14, 15)
    return rss_kb, hwm_kb, threads, ticks


def scenario_idle():
    note_load("idle")
    ensure_agent_release_a()
    d = Daemon("idle")
    try:
        ready_ms = d.wait_ready()
        time.sleep(2)  # let the READY bookkeeping settle
        pid = d.proc.pid
        hz = os.sysconf("SC_CLK_TCK")
        rss, threads = [], []
        _, _, _, t0 = proc_sample(pid)
        w0 = time.perf_counter()
        end = w0 + IDLE_SECONDS
        while time.perf_counter() < end:
            r, hwm, th, _ = proc_sample(pid)
            rss.append(r / 1024.0)
            threads.append(th)
            time.sleep(1.0)
        rss_kb, hwm_kb, th, t1 = proc_sample(pid)
        wall = time.perf_counter() - w0
        cpu_pct = (t1 - t0) / hz / wall * 100.0
        # Drain messages gathered meanwhile.
        while True:
            try:
                d.messages.append(d.sock.recv(4096).decode(errors="replace"))
            except socket.timeout:
                break
        res = {"ready_ms": ready_ms, "rss_mb": summary(rss), "hwm_mb": hwm_kb / 1024.0,
               "threads": max(threads) if threads else 0, "cpu_pct": cpu_pct,
               "cpu_ticks": t1 - t0, "hz": hz, "seconds": wall,
               "watchdog_pings": sum(m.count("WATCHDOG=1") for m in d.messages)}
    finally:
        d.stop()
    RESULTS["scenarios"]["idle"] = res
    log(f"idle: RSS {res['rss_mb']['median']:.1f} MB (max {res['rss_mb']['max']:.1f}), "
        f"CPU {res['cpu_pct']:.3f}% over {res['seconds']:.0f}s")


def scenario_boot():
    """Containers gone (as after a host stop with the project pruned):
    daemon to READY vs `docker compose up -d --wait` from the same state."""
    note_load("boot")
    ensure_agent_release_a()
    daemon, alt, recov = [], [], []
    agent_lags, alt_lags = Lags(), Lags()

    def run_daemon():
        remove_containers()
        d = Daemon(f"boot-{len(daemon)}")
        try:
            daemon.append(d.wait_ready())
        finally:
            d.stop()
        check_running("A", "boot recovery")
        agent_lags.add(d.ready_wall)
        path = WORK / "state/boot-recovery.json"
        if path.exists():
            recov.append(json.loads(path.read_text()))

    def run_alt():
        remove_containers()
        r = timed(["docker", "compose", "-p", PROJECT, "-f", COMPOSE_FILE, "up", "-d", "--wait"],
                  compose_env("A"), what="docker compose up -d --wait (boot)")
        check_running("A", "docker compose up -d --wait (boot)")
        alt_lags.add(r.end_wall)
        alt.append(r.ms)

    for i in range(RUNS):
        interleave(i, run_daemon, run_alt)
    res = {"daemon": summary(daemon), "alt": summary(alt),
           "beyond": [a - b for a, b in zip(daemon, alt)], "recovery": recov,
           "paired": summary(paired_ratios(daemon, alt)),
           "agent_lags": agent_lags.result(), "alt_lags": alt_lags.result()}
    res["beyond_summary"] = summary(res["beyond"])
    for key in ("toDockerMs", "toConvergedMs", "toHealthyMs"):
        vals = [r.get(key) for r in recov if r.get(key) is not None]
        if vals:
            res[key] = summary(vals)
    RESULTS["scenarios"]["boot"] = res
    log(f"boot: daemon READY {fmt_ms(res['daemon'])}, compose up --wait {fmt_ms(res['alt'])}")


# ---------------------------------------------------------------- report


def machine():
    mem_kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    cpu_model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                      if l.startswith("model name")), "unknown")
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": next((l.split("=", 1)[1].strip('"') for l in Path("/etc/os-release").read_text().splitlines()
                    if l.startswith("PRETTY_NAME=")), "unknown"),
        "docker": version_of(["docker", "version", "--format",
                              "client {{.Client.Version}}, engine {{.Server.Version}} (API {{.Server.APIVersion}})"]),
        "compose_v2": version_of(["docker", "compose", "version"]),
        "compose_v1": version_of([COMPOSE_V1, "version", "--short"]) if Path(COMPOSE_V1).exists() else "absent",
        "aws": version_of(["aws", "--version"]),
        "jq": version_of(["jq", "--version"]),
        "rustc": version_of(["rustc", "--version"]),
        "agent": version_of([str(AGENT), "--version"]),
        "git": version_of(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "binary_bytes": AGENT.stat().st_size,
    }


def verdict(ok):
    return "PASS" if ok else "MISS"


def write_report(started, finished):
    m = RESULTS["machine"]
    s = RESULTS["scenarios"]
    rows = []

    def row(what, agent_s, alt_s, alt_name, target, r=None, extra=""):
        rr = ratio(agent_s, alt_s) if r is None else r
        rows.append(f"| {what} | {fmt_ms(agent_s)} | {alt_name}: {fmt_ms(alt_s)} | **{rr:.2f}**{extra} "
                    f"| ≤ {target} | {verdict(rr <= target)} |")

    def spread(res):
        p = res.get("paired", {})
        return f" (per-run {p['min']:.2f}–{p['max']:.2f})" if p.get("n") else ""

    if "noop" in s:
        n = s["noop"]
        row("No-op converge: `runtime deploy --execute` of the running pair (renders env from SSM, checks images, plans, converges nothing, checks health)",
            n["agent"], n["v2"], "`docker compose up -d` (v2)", 0.1, extra=spread(n))
        row("No-op converge: the agent's converge stage only (`WAVEMAP_RUNTIME_DEPLOY_STAGE_MS` converge)",
            n["agent_converge"], n["v2"], "`docker compose up -d` (v2)", 0.1)
        if "v1" in n:
            row("No-op converge, second row: `runtime deploy --execute` vs Compose v1",
                n["agent"], n["v1"], "`docker-compose up -d` (1.29)", 0.1)
            row("No-op converge, second row: converge stage only vs Compose v1",
                n["agent_converge"], n["v1"], "`docker-compose up -d` (1.29)", 0.1)
    if "changed" in s:
        c = s["changed"]
        row("Pair changed, images already pulled (api + frontend recreated, to healthy)",
            c["agent"], c["alt"], "`docker compose up -d --wait`", 0.7, extra=spread(c))
    if "render" in s:
        r = s["render"]
        row(f"Env render, {RENDER_PARAMS} parameters, one value changed before each run",
            r["agent"], r["shell"], "`aws ssm get-parameters-by-path` + jq", 0.3, extra=spread(r))
        row(f"Env render, {RENDER_PARAMS} parameters, nothing changed (agent writes nothing)",
            r["agent_unchanged"], r["shell"], "same shell render (always rewrites)", 0.3)
    if "full" in s:
        f = s["full"]
        row("Full deploy of a changed pair, images not on the host (login + pull + converge + health)",
            f["agent"], f["alt"], "`bench/alt-deploy.sh`", 0.7, extra=spread(f))
    abs_rows = []
    if "status" in s:
        st = s["status"]
        abs_rows.append(f"| `status` latency ({st['all']['n']} runs) | p50 {st['p50']:.0f} ms, p95 {st['p95']:.0f} ms "
                        f"(min {st['all']['min']:.0f}, max {st['all']['max']:.0f}); `status --json` p50 {st['json_p50']:.0f} ms, p95 {st['json_p95']:.0f} ms "
                        f"| p50 < 50 ms | {verdict(st['p50'] < 50)} |")
    if "idle" in s:
        i = s["idle"]
        abs_rows.append(f"| Daemon idle RSS over {i['seconds']:.0f} s (converged project) | median {i['rss_mb']['median']:.1f} MB, "
                        f"max {i['rss_mb']['max']:.1f} MB (peak since start, VmHWM: {i['hwm_mb']:.1f} MB; {i['threads']} threads) "
                        f"| < 20 MB | {verdict(i['rss_mb']['max'] < 20)} |")
        abs_rows.append(f"| Daemon idle CPU over {i['seconds']:.0f} s | {i['cpu_pct']:.3f}% of one core "
                        f"({i['cpu_ticks']} ticks of 1/{i['hz']} s; {i['watchdog_pings']} watchdog pings) "
                        f"| < 0.5% | {verdict(i['cpu_pct'] < 0.5)} |")
    abs_rows.append(f"| Release binary size | {m['binary_bytes'] / 1024 / 1024:.1f} MiB ({m['binary_bytes']} bytes, "
                    f"stripped, `lto = \"thin\"`) | — | — |")
    if "boot" in s:
        b = s["boot"]
        bs = b["beyond_summary"]
        abs_rows.append(f"| Boot recovery beyond the containers' own start and health | daemon start → READY "
                        f"{fmt_ms(b['daemon'])} minus `docker compose up -d --wait` {fmt_ms(b['alt'])} = "
                        f"**{bs['median']:.0f} ms** median per run pair ({bs['min']:.0f} to {bs['max']:.0f}); "
                        f"ratio {ratio(b['daemon'], b['alt']):.2f} | — | — |")

    L = []
    L.append("# Benchmarks: wavemap-agent against what users would run instead")
    L.append("")
    L.append("Generated by `bench/run` (do not edit by hand: rerun it). "
             f"This run: {started:%Y-%m-%d %H:%M} to {finished:%H:%M} UTC, "
             f"{RUNS} runs per side (`BENCH_RUNS`), commit `{m['git']}`.")
    L.append("")
    loads = RESULTS["load"]
    busy = [x for x in loads if x["busy"] > 0]
    if busy:
        L.append("**Other work ran on this machine during this run** (other agents building and "
                 f"testing in the same tree, on the same 2 cores; seen at {len(busy)} of "
                 f"{len(loads)} sample points): load average "
                 + ", ".join(f"{x['loadavg'][0]} at {x['scenario']}" for x in loads)
                 + ". Absolute times are inflated by it; the ratios are fairer because the two sides "
                 "of each row ran interleaved, in alternating order, in the same minutes.")
    else:
        L.append("No other builds or tests ran at the moments this run sampled (compilers and test "
                 "binaries of other work are counted at the start of every scenario); the load "
                 "average, which includes this benchmark's own containers, moto and CLIs, was "
                 + ", ".join(f"{x['loadavg'][0]} at {x['scenario']}" for x in loads)
                 + ". Other agents' sessions worked on this 2-core machine before and after.")
    L.append("")
    L.append("## Results")
    L.append("")
    L.append("Times are the median over the runs, with (min–max). Ratio = agent median / "
             "alternative median, measured in the same run; \"per-run\" is the spread of the "
             "ratio of each interleaved pair of runs.")
    L.append("")
    L.append("| measure | agent | alternative | ratio agent/alt | target | result |")
    L.append("|---|---|---|---|---|---|")
    L.extend(rows)
    L.append("")
    L.append("| measure | agent | target | result |")
    L.append("|---|---|---|---|")
    L.extend(abs_rows)
    L.append("")
    L.extend(details())
    L.append("")
    L.extend(gap_section())
    L.append("")
    L.append("## Machine")
    L.append("")
    L.append(f"- {m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB memory, kernel {m['kernel']}, {m['os']}")
    L.append(f"- Docker {m['docker']}")
    L.append(f"- Compose v2: {m['compose_v2']} (CLI plugin); Compose v1: {m['compose_v1']} (Debian's `/usr/bin/docker-compose`)")
    L.append(f"- {m['aws']}; {m['jq']}; {m['rustc']}; {m['agent']}")
    L.append("- Services on loopback from `scripts/stack/up`: moto (SSM + ECR) on 127.0.0.1:5055, the "
             "htpasswd registry on 127.0.0.1:5000, dockerd on its Unix socket.")
    L.append("")
    L.extend(method())
    L.append("")
    L.append("## Rerun")
    L.append("")
    L.append("```sh")
    L.append("bench/run                      # build (release), start the stack, measure, rewrite BENCHMARKS.md")
    L.append("BENCH_RUNS=11 bench/run        # more runs per side (default 7)")
    L.append("BENCH_ONLY=noop,status bench/run   # a subset: noop,changed,render,full,status,idle,boot")
    L.append("BENCH_OUT=/tmp/b.md bench/run  # write elsewhere")
    L.append("```")
    L.append("")
    L.append("Also `BENCH_STATUS_RUNS` (default 60) and `BENCH_IDLE_SECONDS` (default 60). "
             "It needs root (dockerd), Debian 12 with the Docker Engine running; it installs "
             "what is missing (the aws CLI from PyPI, jq from apt, boto3). The measurements took "
             f"{(finished - started).total_seconds() / 60:.0f} minutes in this run, after the release "
             "build (seconds when it is fresh, over ten minutes on these 2 cores when other work "
             "holds cargo's lock). Every sample is in the appendix below; the raw JSON of the run "
             "is printed on stdout at the end.")
    L.append("")
    L.extend(appendix())
    OUT.write_text("\n".join(L) + "\n")


def stage_line(res, names, prefix="stage_"):
    parts = []
    for n in names:
        x = res.get(prefix + n)
        if x and x.get("n"):
            parts.append(f"{n} {x['median']:.0f}")
    return ", ".join(parts)


def lag_line(res, alt_name):
    a, b = res.get("agent_lags"), res.get("alt_lags")
    if not a or not a["final"].get("n") or not b["final"].get("n"):
        return ""
    dep = ""
    if a["dep"].get("n") and b["dep"].get("n"):
        dep = (f"api healthy → new frontend container created {a['created']['median']:+.0f} ms for the "
               f"agent, {b['created']['median']:+.0f} ms for {alt_name} (negative: before api was healthy), "
               f"→ started {a['dep']['median']:+.0f} ms for the agent, {b['dep']['median']:+.0f} ms for "
               f"{alt_name}; ")
    return (f" Noticing health (Docker's own timestamps, median): {dep}frontend healthy → "
            f"command returned {a['final']['median']:.0f} ms for the agent, "
            f"{b['final']['median']:.0f} ms for {alt_name}.")


def downtime_line(res, alt_name):
    a, b = res.get("agent_down"), res.get("alt_down")
    if not a or not b:
        return ""
    parts = []
    for svc in ("api", "frontend"):
        if a[svc].get("n") and b[svc].get("n"):
            parts.append(f"{svc} {a[svc]['median'] / 1000:.1f} s with the agent, "
                         f"{b[svc]['median'] / 1000:.1f} s with {alt_name}")
    if not parts:
        return ""
    return (" Unavailable per deploy (old container's `die` to the new one's first `healthy`, "
            "from `docker events`, median): " + "; ".join(parts) + ".")


def details():
    s = RESULTS["scenarios"]
    L = ["## Where the time goes", ""]
    agent_stages = ("env-render", "ecr-login", "pull", "converge", "health")
    if "noop" in s:
        n = s["noop"]
        st = {k: summary([x.get(k, 0) for x in n["agent_stages"]]) for k in agent_stages}
        L.append(f"- **No-op converge.** Agent stages (median ms, from `WAVEMAP_RUNTIME_DEPLOY_STAGE_MS`): "
                 + ", ".join(f"{k} {v['median']:.0f}" for k, v in st.items())
                 + f"; the rest of the {n['agent']['median']:.0f} ms wall time is process start, config, "
                 f"release validation, lock and journal. Client CPU: agent {n['agent_cpu']['median']:.0f} ms, "
                 f"`docker compose` {n['v2_cpu']['median']:.0f} ms"
                 + (f", `docker-compose` 1.29 {n['v1_cpu']['median']:.0f} ms" if "v1_cpu" in n else "")
                 + ". Containers recreated by Compose v2 across the interleaved runs: "
                 + ("**yes**" if n["v2_recreated"] else "none (the agent's config hash matches Compose v2's)")
                 + ".")
        if "v1" in n:
            L.append(f"  Compose v1 computes its own config hash: its warm-up run "
                     + ("recreated the containers the agent had created" if n.get("v1_warmup_recreated") else "kept the agent's containers")
                     + ", its measured runs then "
                     + ("recreated them again" if n.get("v1_recreated") else "changed nothing")
                     + "; the agent's next deploy "
                     + (f"changed `{n['agent_after_v1_changed']}`" if n.get("agent_after_v1_changed") else "changed nothing")
                     + ".")
    if "changed" in s:
        c = s["changed"]
        L.append(f"- **Pair changed, images present.** Agent stages (median ms): "
                 + stage_line(c, agent_stages)
                 + ". Both tools wait for Docker's health checks (`interval: 2s` in the project), "
                 "api before frontend (`depends_on: service_healthy`); that wait is most of both columns. "
                 f"Client CPU: agent {c['agent_cpu']['median']:.0f} ms, `docker compose` {c['alt_cpu']['median']:.0f} ms."
                 + lag_line(c, "Compose") + downtime_line(c, "Compose"))
    if "render" in s:
        r = s["render"]
        L.append(f"- **Env render.** The agent and the shell wrote "
                 + ("byte-identical variable lines" if r["identical"] else "**different** lines")
                 + f" ({r['lines']} lines over three files, modes {', '.join(r['modes'])}); "
                 f"both page through GetParametersByPath 10 at a time (30 calls to moto). For reference, "
                 f"the same 30 calls from a warm boto3 client inside the benchmark process (no process "
                 f"start, no file writes) take {r['floor']['median']:.0f} ms "
                 f"({r['floor']['min']:.0f}–{r['floor']['max']:.0f}): most of either side's time is moto answering. "
                 f"Client CPU: agent {r['agent_cpu']['median']:.0f} ms, shell (aws + jq) {r['shell_cpu']['median']:.0f} ms.")
        for d in r.get("first_differences", []):
            L.append(f"  - {d}")
    if "full" in s:
        f = s["full"]
        L.append(f"- **Full deploy.** Agent stages (median ms): " + stage_line(f, agent_stages)
                 + f". Shell pipeline stages: " + stage_line(f, ("render", "login", "pull", "up"), "alt_stage_")
                 + f". Client CPU: agent {f['agent_cpu']['median']:.0f} ms, pipeline {f['alt_cpu']['median']:.0f} ms."
                 + lag_line(f, "the pipeline") + downtime_line(f, "the pipeline"))
    if "boot" in s:
        b = s["boot"]
        parts = [f"{k} {b[k]['median']:.0f}" for k in ("toDockerMs", "toConvergedMs", "toHealthyMs") if k in b]
        L.append(f"- **Boot recovery.** The daemon's own record (`boot-recovery.json`, median ms since start): "
                 + ", ".join(parts) + "." + lag_line(b, "Compose").replace("the agent", "the daemon"))
    if "idle" in s:
        i = s["idle"]
        L.append(f"- **Daemon.** READY {i['ready_ms']:.0f} ms after start with the project already running.")
    return L


def gap_section():
    s = RESULTS["scenarios"]
    L = ["## What would close the gap", ""]
    misses = []

    def lag_fix(res, alt_key="alt"):
        """What faster health noticing would save the agent: the final wait's
        lag beyond Compose's, and the dependency poll before it creates the
        new frontend; and the ratio without them."""
        a, c = res.get("agent_lags", {}), res.get("alt_lags", {})
        if not a.get("final", {}).get("n") or not c.get("final", {}).get("n"):
            return 0.0, float("nan")
        save = max(0.0, a["final"]["median"] - c["final"]["median"])
        if a.get("created", {}).get("n"):
            save += max(0.0, a["created"]["median"] - 100.0)
        agent = res.get("agent") or res["daemon"]
        return save, (agent["median"] - save) / res[alt_key]["median"]

    if "noop" in s:
        n = s["noop"]
        r = ratio(n["agent"], n["v2"])
        if r > 0.1:
            st = {k: statistics.median([x.get(k, 0) for x in n["agent_stages"]])
                  for k in ("env-render", "ecr-login", "converge", "health")}
            misses.append(
                f"- **No-op converge ({r:.2f} against 0.1).** The converge stage alone is "
                f"{n['agent_converge']['median']:.0f} ms (ratio {ratio(n['agent_converge'], n['v2']):.2f}, "
                f"a PASS); the whole command is {n['agent']['median']:.0f} ms because `runtime deploy` "
                f"also renders the env files from SSM on every call ({st['env-render']:.0f} ms median: "
                f"the SDK's setup and GetParametersByPath against moto), checks that both images are "
                f"present ({st['ecr-login']:.0f} ms) and reads health ({st['health']:.0f} ms). The agent "
                "has no narrower converge command (`wavemap-agent --help`). What would close it: a "
                "converge-only path (for example `runtime converge`, or the daemon's periodic "
                "check converging) would be the converge stage's number. The render is a "
                "correctness step of every deploy by design (parameters may have changed since the "
                "last one), so for `runtime deploy` the honest comparison is the first row.")
    if "changed" in s and ratio(s["changed"]["agent"], s["changed"]["alt"]) > 0.7:
        c = s["changed"]
        save, fixed = lag_fix(c)
        a, b = c["agent_lags"], c["alt_lags"]
        misses.append(
            f"- **Pair changed ({ratio(c['agent'], c['alt']):.2f} against 0.7).** Both sides spend "
            f"nearly all their time waiting for Docker's health checks: the agent's converge stage "
            f"is {c['stage_converge']['median']:.0f} ms (it recreates api, then waits for api to be "
            f"healthy before it replaces frontend, as `depends_on: condition: service_healthy` asks) "
            f"and its health stage {c['stage_health']['median']:.0f} ms. Docker runs a container's "
            "first health check one `interval` (2 s here) after it starts, so two services in "
            "sequence cost at least 4 s whoever drives them. The two tools order the work "
            "differently: Compose stops the old frontend and creates the new one while api is "
            f"still starting ({b['created']['median']:+.0f} ms relative to api healthy), so the "
            "frontend is down for the whole api replacement; the agent keeps the old frontend "
            f"serving until the new api is healthy and replaces it {a['created']['median']:+.0f} ms "
            "after (shorter frontend downtime, one dependency poll and a stop/create more on the "
            "critical path). "
            + (f"The agent notices the end later than Compose: frontend healthy → return "
               f"{a['final']['median']:.0f} ms against {b['final']['median']:.0f} ms (its waits poll "
               f"Docker, agent/src/compose/health.rs); polling faster or waking on Docker's "
               f"`health_status` events would save about {save:.0f} ms per deploy: {fixed:.2f} "
               f"instead of {ratio(c['agent'], c['alt']):.2f}. "
               if save > 200 else
               f"Noticing health is not the gap: frontend healthy → return takes the agent "
               f"{a['final']['median']:.0f} ms against Compose's {b['final']['median']:.0f} ms "
               "(its waits poll every 200 ms since commit 1ecd641; they polled every 1 s and "
               "500 ms before, which cost about a second per deploy in an earlier run). ")
            + "Reaching "
            "0.7 needs the health checks themselves to run sooner: `healthcheck.start_interval` "
            "(Engine 25+; this host has 20.10) in the project, or the agent running the service's "
            "check command itself right after start (`docker exec`) instead of waiting for "
            "Docker's first scheduled check, which changes what \"healthy\" means and is a design "
            "decision.")
    if "render" in s and ratio(s["render"]["agent"], s["render"]["shell"]) > 0.3:
        r = s["render"]
        misses.append(
            f"- **Env render ({ratio(r['agent'], r['shell']):.2f} against 0.3).** The agent uses "
            f"{r['agent_cpu']['median']:.0f} ms of CPU in its {r['agent']['median']:.0f} ms; the rest "
            f"is waiting for moto; a warm in-process boto3 client needs {r['floor']['median']:.0f} ms "
            f"for the same 30 pages ({r['floor']['median'] / r['shell']['median']:.2f} of the shell's "
            f"time). The shell pays the same moto time plus "
            "the aws CLI's Python start-up and three jq runs. What would close it: nothing on the "
            "agent's side against moto; against real SSM the 30 pages are 30 network round trips, "
            "and fetching the three group paths concurrently (10 pages each) would overlap them.")
    if "full" in s and ratio(s["full"]["agent"], s["full"]["alt"]) > 0.7:
        f = s["full"]
        save, fixed = lag_fix(f)
        misses.append(
            f"- **Full deploy ({ratio(f['agent'], f['alt']):.2f} against 0.7).** The health wait "
            f"dominates both (agent converge {f['stage_converge']['median']:.0f} ms + health "
            f"{f['stage_health']['median']:.0f} ms; the pipeline's `up -d --wait` "
            f"{f['alt_stage_up']['median']:.0f} ms); the agent saves the CLI start-ups "
            f"(render {f['stage_env-render']['median']:.0f} vs {f['alt_stage_render']['median']:.0f} ms, "
            f"login {f['stage_ecr-login']['median']:.0f} vs {f['alt_stage_login']['median']:.0f} ms, "
            f"pull {f['stage_pull']['median']:.0f} vs {f['alt_stage_pull']['median']:.0f} ms). "
            f"Noticing health sooner (see the row above) would give about {fixed:.2f}.")
    if "status" in s and s["status"]["p50"] >= 50:
        misses.append(f"- **status p50 {s['status']['p50']:.0f} ms (against 50).** See the samples in the appendix.")
    if "idle" in s and s["idle"]["rss_mb"]["max"] >= 20:
        misses.append(f"- **Idle RSS {s['idle']['rss_mb']['max']:.1f} MB (against 20).**")
    if "idle" in s and s["idle"]["cpu_pct"] >= 0.5:
        misses.append(f"- **Idle CPU {s['idle']['cpu_pct']:.2f}% (against 0.5%).**")
    if "boot" in s:
        b = s["boot"]
        save, _ = lag_fix(b, "alt")
        beyond = b["beyond_summary"]["median"]
        misses.append(
            f"- **Boot recovery (no target).** The daemon is READY {abs(beyond):.0f} ms "
            f"{'after' if beyond >= 0 else 'before'} `docker compose up -d --wait` returns from the "
            "same state (median of the run pairs), although it also renders the env files from "
            "SSM and waits for Docker first (its record above): the containers' own start and "
            "health are the whole boot time."
            + (f" It notices health later than Compose, about {save:.0f} ms." if save > 200 else ""))
    L.extend(misses or ["Every target is met in this run."])
    return L


def method():
    return [
        "## Method",
        "",
        "`bench/run` builds the agent with `cargo build --release -p wavemap-agent`, starts the "
        "local stack (`scripts/stack/up`, idempotent), installs what is missing, and runs "
        "`bench/bench.py`. Everything happens on one Compose project, the production-shaped "
        "`tests/fixtures/runtime/compose.yaml` (postgres, api, frontend with health checks and "
        "`depends_on: service_healthy`), under a project name unique to the run, with its own "
        "SSM prefix in moto and its own image repository in the local registry (private copies "
        "of the stack's test pairs A and B, pushed at the start); `docker compose down -v` and "
        "the parameters' deletion clean up at the end. The agent's config points every path "
        "into a temp dir and every endpoint at the stack, as on a host.",
        "",
        "Each row runs the agent and the alternative the same number of times, interleaved, the "
        "order flipping every run (agent first, then alternative first), so both sides see the "
        "same background load. Wall time is measured around the whole process (Python's "
        "`perf_counter` around `subprocess.run`); client CPU time from `RUSAGE_CHILDREN`.",
        "",
        "- **No-op converge.** The project runs and is healthy (deployed by the agent). Agent: "
        "`wavemap-agent runtime deploy --backend-image A --frontend-image A ... --execute`, the "
        "narrowest command that converges (`--help` has no converge-only command); it renders "
        "the env files from SSM, checks the images are present, plans, converges nothing and "
        "checks health; the converge stage alone comes from its `WAVEMAP_RUNTIME_DEPLOY_STAGE_MS` "
        "marker. Alternative: `docker compose -p P -f F up -d` with the same variables, on the "
        "same containers (the run checks no container was recreated). Compose v1 "
        "(`/usr/bin/docker-compose up -d`) runs in its own block after one untimed warm-up, "
        "because its config hash differs from v2's and the agent's.",
        "- **Pair changed, images present.** The agent deploys pair B while A runs, then A while B "
        "runs, and so on; `docker compose up -d --wait` does the same with the B (or A) "
        "variables. A release is a pair built from one commit (the agent refuses mixed tags), so "
        "api and frontend both change and postgres is kept. Both return once every service is "
        "healthy; the run checks the images and health after each.",
        f"- **Env render.** {RENDER_PARAMS} parameters in moto, 100 per group, every other one a "
        "SecureString, values with quotes, `$`, `#`, `=`, backslashes and a multi-line one. "
        "Before each run of either side one value changes, so every run renders and writes. Agent: "
        "`runtime-env --execute`. Alternative: `bench/alt-render.sh` = "
        "`aws ssm get-parameters-by-path --recursive --with-decryption` and one `jq` per group "
        "(`bench/render.jq`: the agent's quoting rules), each file written 0600 to a temp file and "
        "renamed. At the end both render the same input and the run compares the files. The "
        "no-change row is the agent on unchanged parameters (it compares and writes nothing); the "
        "shell has no such path.",
        "- **Full deploy.** Before each run the changed pair's private copies are removed from the "
        "host (`docker rmi`), so login and pull happen (the layers stay on disk under the "
        "stack's own tags: this measures the tools, not the network). Agent: `runtime deploy "
        "--execute`. Alternative: `bench/alt-deploy.sh` = `bench/alt-render.sh`, "
        "`aws ecr get-login-password | docker login --password-stdin`, `docker compose pull`, "
        "`docker compose up -d --wait`, what an SSM document would otherwise run.",
        f"- **status.** `wavemap-agent status` {STATUS_RUNS} times on the converged project, "
        "p50/p95 by linear interpolation.",
        f"- **Daemon idle.** `wavemap-agent daemon` with `NOTIFY_SOCKET` (a Unix datagram socket "
        "this script listens on), `WATCHDOG_USEC=60000000` (the unit's `WatchdogSec=60`) and "
        "`WATCHDOG_PID`, on the converged project; after `READY=1` (and 2 s), `/proc/PID/status` "
        f"VmRSS is sampled every second and `/proc/PID/stat` utime+stime read at both ends of "
        f"{IDLE_SECONDS} s. CPU % is of one core. Default config: health observed every 30 s.",
        "- **Boot recovery.** The project's containers are removed (volume and network kept), "
        "then either the daemon starts and the time to `READY=1` is taken, or `docker compose "
        "up -d --wait` runs from the same state; interleaved. The daemon's READY includes "
        "the containers' start and health, so \"beyond\" = daemon time minus Compose time of "
        "the same run pair.",
        "- **Binary size.** `target/release/wavemap-agent` as built (the release profile strips "
        "symbols).",
    ]


def appendix():
    L = ["## Appendix: every sample (ms)", ""]
    s = RESULTS["scenarios"]

    def line(name, res, digits=0):
        if res and res.get("n"):
            L.append(f"- {name}: " + ", ".join(f"{x:.{digits}f}" for x in res["samples"]))

    if "noop" in s:
        line("no-op, agent", s["noop"]["agent"])
        line("no-op, agent converge stage", s["noop"]["agent_converge"])
        line("no-op, docker compose up -d", s["noop"]["v2"])
        line("no-op, docker-compose 1.29 up -d", s["noop"].get("v1"))
    if "changed" in s:
        line("pair changed, agent", s["changed"]["agent"])
        line("pair changed, docker compose up -d --wait", s["changed"]["alt"])
    if "render" in s:
        line("render, agent", s["render"]["agent"])
        line("render, agent unchanged", s["render"]["agent_unchanged"])
        line("render, aws + jq", s["render"]["shell"])
    if "full" in s:
        line("full deploy, agent", s["full"]["agent"])
        line("full deploy, shell pipeline", s["full"]["alt"])
    for key, name in (("changed", "pair changed"), ("full", "full deploy")):
        for side, who in (("agent_down", "agent"), ("alt_down", "alternative")):
            for svc in ("api", "frontend"):
                line(f"{name}, {svc} unavailable, {who}", s.get(key, {}).get(side, {}).get(svc))
    if "status" in s:
        line("status", s["status"]["all"])
    if "boot" in s:
        line("boot, daemon to READY", s["boot"]["daemon"])
        line("boot, docker compose up -d --wait", s["boot"]["alt"])
    if "idle" in s:
        line("daemon idle VmRSS (MB, every second)", s["idle"]["rss_mb"], 1)
    return L


# ---------------------------------------------------------------- main

SCENARIOS = [
    ("noop", scenario_noop),
    ("changed", scenario_changed),
    ("render", scenario_render),
    ("full", scenario_full),
    ("status", scenario_status),
    ("idle", scenario_idle),
    ("boot", scenario_boot),
]


def cleanup():
    # Containers of either Compose carry the project label; v2 removes them all.
    if COMPOSE_FILE.exists():
        env = compose_env("A") if IMAGES else ENV_ALT
        subprocess.run(["docker", "compose", "-p", PROJECT, "-f", str(COMPOSE_FILE), "down", "-v",
                        "--remove-orphans", "-t", "2"], env=env, capture_output=True)
    for image in IMAGES.values():
        subprocess.run(["docker", "rmi", image], capture_output=True)
    delete_parameters()
    shutil.rmtree(WORK, ignore_errors=True)


def main():
    started = datetime.datetime.utcnow()
    if not AGENT.exists():
        raise BenchError(f"no {AGENT}: cargo build --release -p wavemap-agent")
    log(f"work dir {WORK}, project {PROJECT}, {RUNS} runs per side")
    try:
        write_configs()
        log("seeding SSM parameters and pushing private image copies")
        seed_parameters()
        private_copies()
        for name, fn in SCENARIOS:
            if ONLY and name not in ONLY:
                continue
            log(f"scenario {name}")
            fn()
        RESULTS["machine"] = machine()
        note_load("end")
        finished = datetime.datetime.utcnow()
        write_report(started, finished)
        print(json.dumps(RESULTS, indent=1, default=str))
        log(f"wrote {OUT}")
    finally:
        cleanup()


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        log(f"FAILED: {e}")
        sys.exit(1)
