"""The project every scenario measures, and the tools to look at it.

One Compose project, the production-shaped
tests/fixtures/runtime/compose.yaml, under a name unique to the run, with
its own SSM prefix in moto and its own image repository in the local
registry (private copies of the stack's pairs A and B). `Bench` holds the
paths, environments and agent configs; `cleanup()` removes all of it.
"""

import datetime
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .core import BenchError, log, sh

RENDER_PARAMS = 300
GROUPS = ["backend", "frontend", "postgres"]


def read_stack_env(root):
    path = root / ".stack/env"
    if not path.exists():
        raise BenchError("no .stack/env: scripts/stack/up did not run")
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def toml_str(s):
    return json.dumps(str(s))


def api_order(text, order):
    """The fixture with `deploy.update_config.order: <order>` on the api
    service: the word replaced where the fixture names an order, else the
    block inserted right under `api:`. None: the key removed (the fixture's
    own word left out), which is Compose's default, stop-first."""
    if re.search(r"order:\s*(start|stop)-first", text):
        if order is None:
            return re.sub(r"order:\s*(start|stop)-first", "order: stop-first", text)
        return re.sub(r"order:\s*(start|stop)-first", f"order: {order}", text)
    if order is None:
        return text
    block = f"    deploy:\n      update_config:\n        order: {order}\n"
    return re.sub(r"(?m)^(  api:\n)", lambda m: m.group(1) + block, text, count=1)


class Bench:
    """Paths, environments and agent configs of one run."""

    def __init__(self, root, agent):
        self.root = root
        self.agent = agent
        self.stack = read_stack_env(root)
        self.work = Path(tempfile.mkdtemp(prefix="wavemap-bench-"))
        self.id = f"wmbench-{os.getpid()}-{int(time.time()) % 100000}"
        self.project = self.id
        self.prefix = f"/wavemap-bench/{self.id}/runtime/"
        self.render_prefix = f"/wavemap-bench/{self.id}/render/"
        self.registry = self.need("WAVEMAP_TEST_REGISTRY")
        self.sha = {"A": self.need("WAVEMAP_TEST_SHA_A"), "B": self.need("WAVEMAP_TEST_SHA_B")}
        self.images = {}  # ("backend"|"frontend", "A"|"B") -> private copy
        self.probe_kind = "busybox"  # set by measure.py (probe.kind)
        self.probe_bin = Path(os.environ.get("BENCH_PROBE_BIN", str(root / "target/release/fake-backend")))
        self.env_setup = self.base_env(self.work / "docker-setup")
        # The alternatives log in for themselves, into their own docker config.
        self.env_alt = self.base_env(self.work / "docker-alt")
        self.env_agent = self.base_env(None)
        self.env_dir = self.work / "runtime/env"
        self.render_agent_dir = self.work / "render-agent"
        self.render_shell_dir = self.work / "render-shell"
        self.compose_v1 = self.stack.get("WAVEMAP_TEST_COMPOSE_V1", "/usr/bin/docker-compose")
        self.db_password = f"bench-{self.id}-pw"
        # compose files: the fixture as it is, and its api-order variants
        self.compose_file = self.work / "runtime/compose.yaml"
        self.compose_start = self.work / "runtime/compose-start-first.yaml"
        self.compose_stop = self.work / "runtime/compose-stop-first.yaml"
        self.config = self.work / "agent.toml"
        self.config_start = self.work / "agent-start-first.toml"
        self.config_stop = self.work / "agent-stop-first.toml"
        self.render_config = self.work / "agent-render.toml"

    def need(self, key):
        value = self.stack.get(key)
        if not value:
            raise BenchError(f".stack/env has no {key}: rerun scripts/stack/up")
        return value

    def base_env(self, docker_config):
        env = dict(os.environ)
        for k in ("WAVEMAP_AGENT_CONFIG", "AWS_PROFILE", "DATABASE_URL", "NOTIFY_SOCKET",
                  "WATCHDOG_USEC", "WATCHDOG_PID", "COMPOSE_PROJECT_NAME", "COMPOSE_FILE"):
            env.pop(k, None)
        for k, v in self.stack.items():
            if k.startswith("AWS_"):
                env[k] = v
        env["AWS_DEFAULT_REGION"] = self.stack.get("AWS_REGION", "us-east-2")
        env["AWS_PAGER"] = ""
        if docker_config:
            env["DOCKER_CONFIG"] = str(docker_config)
        return env

    # ------------------------------------------------------------ setup

    def write_configs(self):
        self.env_dir.mkdir(parents=True)
        fixture = (self.root / "tests/fixtures/runtime/compose.yaml").read_text()
        fixture = fixture.replace("${WAVEMAP_POSTGRES_IMAGE}", self.need("WAVEMAP_TEST_POSTGRES_IMAGE"))
        self.compose_file.write_text(fixture)
        self.compose_start.write_text(api_order(fixture, "start-first"))
        self.compose_stop.write_text(api_order(fixture, None))
        common = f"""# written by bench/
[agent]
state_dir = {toml_str(self.work / 'state')}
run_dir = {toml_str(self.work / 'run')}
lock_timeout = 120

[aws]
region = {toml_str(self.stack.get('AWS_REGION', 'us-east-2'))}
ssm_endpoint = {toml_str(self.need('AWS_ENDPOINT_URL_SSM'))}
ecr_endpoint = {toml_str(self.need('AWS_ENDPOINT_URL_ECR'))}
test_ecr_registry_alias = {toml_str(self.registry)}

[receipt]
path = {toml_str(self.work / 'deployment/last-successful-runtime-release.json')}
"""
        for path, compose in ((self.config, self.compose_file), (self.config_start, self.compose_start),
                              (self.config_stop, self.compose_stop)):
            path.write_text(common + f"""
[runtime]
compose_file = {toml_str(compose)}
env_dir = {toml_str(self.env_dir)}
project_name = {toml_str(self.project)}
parameter_prefix = {toml_str(self.prefix)}
health_timeout = 240
pull_timeout = 300
""")
        self.render_config.write_text(common + f"""
[runtime]
compose_file = {toml_str(self.compose_file)}
env_dir = {toml_str(self.render_agent_dir)}
project_name = {toml_str(self.project)}
parameter_prefix = {toml_str(self.render_prefix)}
""")

    def ssm(self):
        import boto3  # bench/run picks a Python that has it

        return boto3.client(
            "ssm", endpoint_url=self.need("AWS_ENDPOINT_URL_SSM"),
            region_name=self.stack.get("AWS_REGION", "us-east-2"),
            aws_access_key_id=self.stack.get("AWS_ACCESS_KEY_ID", "testing"),
            aws_secret_access_key=self.stack.get("AWS_SECRET_ACCESS_KEY", "testing"))

    def seed_parameters(self):
        client = self.ssm()
        pw = self.db_password
        for name, value, kind in [
            ("postgres/POSTGRES_USER", "wavemap", "String"),
            ("postgres/POSTGRES_DB", "wavemap", "String"),
            ("postgres/POSTGRES_PASSWORD", pw, "SecureString"),
            ("backend/DATABASE_URL", f"postgres://wavemap:{pw}@postgres:5432/wavemap", "SecureString"),
            ("backend/APP_ORIGIN", "https://dev.wavemap.app", "String"),
            ("frontend/PUBLIC_API_ORIGIN", "https://dev.wavemap.app/api", "String"),
        ]:
            client.put_parameter(Name=self.prefix + name, Value=value, Type=kind, Overwrite=True)
        # The render benchmark's 300: 100 per group, every other one a
        # SecureString; values with quotes, $, #, =, backslashes, spaces,
        # and one multi-line value per group.
        for group in GROUPS:
            for i in range(RENDER_PARAMS // len(GROUPS)):
                value = f"value {i} of {group}: it's \"quoted\" $HOME #x =y \\z " + "p" * 24
                if i == 7:
                    value = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----\n"
                if i == 9:
                    value = "plain-" + "q" * 60
                client.put_parameter(Name=f"{self.render_prefix}{group}/VAR_{i:03}", Value=value,
                                     Type="SecureString" if i % 2 == 0 else "String", Overwrite=True)

    def delete_parameters(self):
        try:
            client = self.ssm()
            for prefix in (self.prefix, self.render_prefix):
                names = []
                for page in client.get_paginator("get_parameters_by_path").paginate(
                        Path=prefix.rstrip("/"), Recursive=True):
                    names += [p["Name"] for p in page["Parameters"]]
                for i in range(0, len(names), 10):
                    client.delete_parameters(Names=names[i:i + 10])
        except Exception as e:  # noqa: BLE001 - cleanup is best effort
            log(f"cleanup: cannot delete parameters: {e}")

    def private_copies(self):
        """Push pairs A and B under a repository unique to this run, so that
        `docker rmi` of the copies makes the next deploy log in and pull (the
        layers stay on disk under the stack's own tags: a pull measures the
        tools, not the network)."""
        sh(["docker", "login", "-u", self.need("WAVEMAP_TEST_REGISTRY_USER"), "--password-stdin",
            self.registry], self.env_setup, stdin=self.need("WAVEMAP_TEST_REGISTRY_PASSWORD"))
        for service in ("backend", "frontend"):
            for pair in ("A", "B"):
                original = self.need(f"WAVEMAP_TEST_{service.upper()}_IMAGE_{pair}")
                copy = f"{self.registry}/{self.id}/{service}:{original.rsplit(':', 1)[1]}"
                if not self.image_present(original):
                    sh(["docker", "pull", "-q", original], self.env_setup)
                sh(["docker", "tag", original, copy], self.env_setup)
                sh(["docker", "push", "-q", copy], self.env_setup)
                self.images[(service, pair)] = copy
        for key in ("WAVEMAP_TEST_POSTGRES_IMAGE", "WAVEMAP_TEST_BUSYBOX_IMAGE"):
            if not self.image_present(self.need(key)):
                sh(["docker", "pull", "-q", self.need(key)], self.env_setup)

    def image_present(self, image):
        return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0

    def pair_present(self, pair, present):
        """Make sure the private copies of `pair` are (or are not) tagged locally."""
        for service in ("backend", "frontend"):
            image = self.images[(service, pair)]
            if present and not self.image_present(image):
                sh(["docker", "pull", "-q", image], self.env_setup)
            elif not present and self.image_present(image):
                sh(["docker", "rmi", image], self.env_setup)

    # ------------------------------------------------------------ commands

    def compose_env(self, pair):
        env = dict(self.env_alt)
        env["WAVEMAP_BACKEND_IMAGE"] = self.images[("backend", pair)]
        env["WAVEMAP_FRONTEND_IMAGE"] = self.images[("frontend", pair)]
        env["WAVEMAP_ENV_DIR"] = str(self.env_dir)
        return env

    def compose_cmd(self, *args, project=None, file=None):
        return ["docker", "compose", "-p", project or self.project, "-f", file or self.compose_file, *args]

    def deploy_cmd(self, pair, version, config=None):
        return [self.agent, "--config", config or self.config, "runtime", "deploy",
                "--backend-image", self.images[("backend", pair)],
                "--frontend-image", self.images[("frontend", pair)],
                "--source-sha", self.sha[pair], "--deployment-version", version,
                "--selected-ref", "bench", "--execute"]

    def fixture_facts(self):
        """What the benchmark's prose states about the project, read from
        the compose file as Compose normalises it."""
        # Compose reads the env files even for `config`: empty stand-ins.
        env = self.compose_env("A")
        env["WAVEMAP_ENV_DIR"] = str(self.work / "facts-env")
        (self.work / "facts-env").mkdir(exist_ok=True)
        for g in GROUPS:
            (self.work / "facts-env" / f"{g}.env").touch()
        out = sh(self.compose_cmd("config", "--format", "json"), env)
        services = json.loads(out)["services"]
        facts = {}
        for name, svc in services.items():
            hc = svc.get("healthcheck") or {}
            order = ((svc.get("deploy") or {}).get("update_config") or {}).get("order")
            facts[name] = {"healthcheck_interval": hc.get("interval"),
                           "healthcheck_start_period": hc.get("start_period"),
                           "update_order": order or "stop-first (default)",
                           "ports": [p.get("published") for p in svc.get("ports") or []],
                           "depends_on": sorted((svc.get("depends_on") or {}).keys())}
        for path, want in ((self.compose_start, "start-first"), (self.compose_stop, None)):
            got = json.loads(sh(self.compose_cmd("config", "--format", "json", file=path),
                                env))["services"]["api"]
            order = ((got.get("deploy") or {}).get("update_config") or {}).get("order")
            if order not in (want, "stop-first" if want is None else want):
                raise BenchError(f"{path.name}: api order is {order!r}, expected {want!r}")
        return facts

    # ------------------------------------------------------------ looking

    def containers(self, project=None):
        """service -> [(id, image, status, name)] of the project's containers."""
        out = sh(["docker", "ps", "-a", "--no-trunc",
                  "--filter", f"label=com.docker.compose.project={project or self.project}",
                  "--format", '{{.ID}}\t{{.Label "com.docker.compose.service"}}\t{{.Image}}\t{{.Status}}\t{{.Names}}'],
                 self.env_setup)
        result = {}
        for line in filter(None, out.splitlines()):
            cid, service, image, status, name = line.split("\t")
            result.setdefault(service, []).append((cid, image, status, name))
        return result

    def ids(self, project=None):
        return {s: sorted(x[0] for x in v) for s, v in self.containers(project).items()}

    def check_running(self, pair, what, project=None):
        """Every service has one container, healthy, running the pair."""
        c = self.containers(project)
        problems = []
        for service in ("postgres", "api", "frontend"):
            got = c.get(service, [])
            if len(got) != 1 or "(healthy)" not in got[0][2]:
                problems.append(f"{service}: {got}")
        for service, key in (("api", "backend"), ("frontend", "frontend")):
            got = c.get(service, [])
            if got and got[0][1] != self.images[(key, pair)]:
                problems.append(f"{service} runs {got[0][1]}, expected {self.images[(key, pair)]}")
        if problems:
            raise BenchError(f"after {what}: " + "; ".join(problems))

    def wait_healthy(self, project=None, limit=180):
        until = time.time() + limit
        while time.time() < until:
            c = self.containers(project)
            if all(len(c.get(s, [])) == 1 and "(healthy)" in c[s][0][2] for s in ("postgres", "api", "frontend")):
                return
            time.sleep(0.5)
        raise BenchError(f"project not healthy within {limit}s: {self.containers(project)}")

    def remove_containers(self):
        c = [x[0] for v in self.containers().values() for x in v]
        if c:
            sh(["docker", "rm", "-f", *c], self.env_setup)

    def network(self):
        """The project network the api container is on (the probe joins it)."""
        api = self.containers()["api"][0][0]
        nets = json.loads(sh(["docker", "inspect", api], self.env_setup))[0]["NetworkSettings"]["Networks"]
        names = sorted(nets)
        if len(names) != 1:
            raise BenchError(f"api is on {names}; the probe needs exactly one project network")
        return names[0]

    def cleanup(self):
        for project, file in ((self.project, self.compose_file), (f"{self.project}-v1", self.compose_file)):
            if file.exists():
                env = self.compose_env("A") if self.images else self.env_alt
                subprocess.run(["docker", "compose", "-p", project, "-f", str(file), "down", "-v",
                                "--remove-orphans", "-t", "2"], env=env, capture_output=True)
        for image in self.images.values():
            subprocess.run(["docker", "rmi", image], capture_output=True)
        self.delete_parameters()
        shutil.rmtree(self.work, ignore_errors=True)


def parse_ts(text):
    """Docker's RFC 3339 time with nanoseconds -> Unix seconds."""
    text = text.rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.timezone.utc).timestamp()
