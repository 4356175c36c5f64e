"""Host scenarios: the env render against aws CLI + jq, `status` latency,
the idle daemon, and boot recovery against `docker compose up -d --wait`."""

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from .core import BenchError, log, percentile, rotate, summary, timed, whole_ms
from .countproxy import CountingProxy
from .deploys import paired
from .observe import Lags
from .project import GROUPS, RENDER_PARAMS


def read_env_lines(directory):
    out = {}
    for g in GROUPS:
        text = (directory / f"{g}.env").read_text()
        out[g] = [line for line in text.splitlines() if not line.startswith("#")]
    return out


def render(b, runs):
    """300 parameters into three env files; one value changes before each
    run of the agent and of the shell, so both render and write; a third
    side is the agent on parameters it has already rendered."""
    client = b.ssm()
    agent, shell, same, agent_cpu, shell_cpu, same_cpu, floor = [], [], [], [], [], [], []
    render_cmd = [b.agent, "--config", b.render_config, "runtime-env", "--execute"]
    shell_cmd = [b.root / "bench/alt-render.sh", b.render_prefix, b.render_shell_dir, *GROUPS]
    timed(render_cmd, b.env_agent, what="agent runtime-env (warm-up)")
    counter = {"n": 0}

    def change():
        counter["n"] += 1
        client.put_parameter(Name=f"{b.render_prefix}backend/VAR_001",
                             Value=f"changed {counter['n']} {time.time()}", Type="String", Overwrite=True)

    def run_agent():
        change()
        r = timed(render_cmd, b.env_agent, what="agent runtime-env")
        m = r.markers()
        if m.get("WAVEMAP_RUNTIME_ENV_RESULT") != "rendered" or m.get("WAVEMAP_RUNTIME_ENV_PARAMETERS") != str(RENDER_PARAMS):
            raise BenchError(f"agent render did not render {RENDER_PARAMS} parameters: {m}")
        agent.append(r.ms)
        agent_cpu.append(r.cpu_ms)

    def run_shell():
        change()
        r = timed(shell_cmd, b.env_alt, what="bench/alt-render.sh")
        shell.append(r.ms)
        shell_cpu.append(r.cpu_ms)

    pages = {"n": 0}

    def moto_floor():
        # The same pages fetched by a warm in-process client: what moto
        # itself needs, the floor under both sides.
        t0 = time.perf_counter()
        n = pages["n"] = 0
        for page in client.get_paginator("get_parameters_by_path").paginate(
                Path=b.render_prefix.rstrip("/"), Recursive=True, WithDecryption=True):
            n += len(page["Parameters"])
            pages["n"] += 1
        floor.append(whole_ms((time.perf_counter() - t0) * 1000.0))
        if n != RENDER_PARAMS:
            raise BenchError(f"moto returned {n} parameters, expected {RENDER_PARAMS}")

    def run_same():
        # The agent on parameters it has already rendered: first an untimed
        # render catching up with the other sides' change, then the timed
        # run, which compares and writes nothing.
        timed(render_cmd, b.env_agent, what="agent runtime-env (catching up)")
        r = timed(render_cmd, b.env_agent, what="agent runtime-env (unchanged)")
        if r.markers().get("WAVEMAP_RUNTIME_ENV_RESULT") != "unchanged":
            raise BenchError(f"agent render changed something on an unchanged input: {r.markers()}")
        same.append(r.ms)
        same_cpu.append(r.cpu_ms)

    for i in range(runs):
        rotate(i, [run_agent, run_shell, run_same])
        moto_floor()
    calls = count_calls(b, render_cmd, shell_cmd, change)
    # The same input for both, then the files must say the same.
    change()
    timed(render_cmd, b.env_agent)
    timed(shell_cmd, b.env_alt)
    a, s = read_env_lines(b.render_agent_dir), read_env_lines(b.render_shell_dir)
    modes = sorted({f"{(d / f'{g}.env').stat().st_mode & 0o777:04o}"
                    for d in (b.render_agent_dir, b.render_shell_dir) for g in GROUPS})
    res = {"parameters": RENDER_PARAMS, "agent": summary(agent), "shell": summary(shell),
           "agent_unchanged": summary(same), "agent_cpu": summary(agent_cpu),
           "shell_cpu": summary(shell_cpu), "agent_unchanged_cpu": summary(same_cpu),
           "identical": a == s, "lines": sum(len(v) for v in a.values()), "modes": modes,
           "paired": summary(paired(agent, shell)), "floor": summary(floor),
           "floor_pages": pages["n"], "calls": calls}
    if a != s:
        diff = [(g, x, y) for g in GROUPS for x, y in zip(a[g], s[g]) if x != y][:3]
        res["first_differences"] = [f"{g}: agent {x!r} / shell {y!r}" for g, x, y in diff]
    log(f"render: agent {agent}, shell {shell}, unchanged {same}, calls {calls}")
    return res


def count_calls(b, render_cmd, shell_cmd, change):
    """One untimed run of each side through the counting proxy."""
    proxy = CountingProxy(b.need("AWS_ENDPOINT_URL_SSM"))
    try:
        cfg = b.work / "agent-render-counted.toml"
        cfg.write_text(b.render_config.read_text().replace(
            json.dumps(b.need("AWS_ENDPOINT_URL_SSM")), json.dumps(proxy.url), 1))
        change()
        timed([b.agent, "--config", cfg, *render_cmd[3:]], b.env_agent, what="agent runtime-env (counted)")
        agent_calls = proxy.take()
        env = dict(b.env_alt)
        env["AWS_ENDPOINT_URL_SSM"] = proxy.url
        change()
        timed(shell_cmd, env, what="bench/alt-render.sh (counted)")
        return {"agent": agent_calls, "shell": proxy.take()}
    finally:
        proxy.close()


def ensure_release_a(b):
    b.pair_present("A", True)
    timed(b.deploy_cmd("A", "bench-setup"), b.env_agent, what="deploy of A")
    b.check_running("A", "deploy of A")


def status(b, runs):
    ensure_release_a(b)
    times = [timed([b.agent, "--config", b.config, "status"], b.env_agent, what="status").ms
             for _ in range(runs)]
    json_times = [timed([b.agent, "--config", b.config, "status", "--json"], b.env_agent).ms
                  for _ in range(max(5, runs // 5))]
    log(f"status: p50 {percentile(times, 50)}")
    return {"all": summary(times), "p50": percentile(times, 50), "p95": percentile(times, 95),
            "json": summary(json_times), "json_p50": percentile(json_times, 50),
            "json_p95": percentile(json_times, 95)}


class Daemon:
    """`wavemap-agent daemon` under a NOTIFY_SOCKET we listen on, with the
    unit's WatchdogSec=60 (WATCHDOG_USEC) and WATCHDOG_PID, as systemd
    sets them."""

    WATCHDOG_USEC = 60_000_000

    def __init__(self, b, tag):
        self.sock_path = b.work / f"notify-{tag}.sock"
        if self.sock_path.exists():
            self.sock_path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.sock_path))
        self.sock.settimeout(0.2)
        self.messages = []
        env = dict(b.env_agent)
        env["NOTIFY_SOCKET"] = str(self.sock_path)
        env["WATCHDOG_USEC"] = str(self.WATCHDOG_USEC)
        self.log = open(b.work / f"daemon-{tag}.log", "w")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            ["sh", "-c", 'WATCHDOG_PID=$$ exec "$0" "$@"', str(b.agent), "--config", str(b.config), "daemon"],
            env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

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
                return whole_ms((time.perf_counter() - self.started) * 1000.0)
        raise BenchError(f"daemon not READY within {limit}s: {self.messages}")

    def drain(self):
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode(errors="replace"))
            except socket.timeout:
                return

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
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rindex(")") + 2:].split()
    return (int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0]),
            int(fields["Threads"].strip()), int(rest[11]) + int(rest[12]))  # utime + stime


def idle(b, seconds):
    ensure_release_a(b)
    d = Daemon(b, "idle")
    try:
        ready_ms = d.wait_ready()
        time.sleep(2)  # let the READY bookkeeping settle
        pid, hz = d.proc.pid, os.sysconf("SC_CLK_TCK")
        rss, threads = [], []
        t0 = proc_sample(pid)[3]
        w0 = time.perf_counter()
        while time.perf_counter() < w0 + seconds:
            r, _, th, _ = proc_sample(pid)
            rss.append(round(r / 1024.0, 1))
            threads.append(th)
            time.sleep(1.0)
        _, hwm_kb, _, t1 = proc_sample(pid)
        wall = time.perf_counter() - w0
        d.drain()
        res = {"ready_ms": ready_ms, "rss_mb": summary(rss), "hwm_mb": round(hwm_kb / 1024.0, 1),
               "threads": max(threads) if threads else 0, "cpu_pct": (t1 - t0) / hz / wall * 100.0,
               "cpu_ticks": t1 - t0, "hz": hz, "seconds": round(wall, 1),
               "watchdog_sec": Daemon.WATCHDOG_USEC // 1_000_000,
               "watchdog_pings": sum(m.count("WATCHDOG=1") for m in d.messages)}
    finally:
        d.stop()
    log(f"idle: RSS max {res['rss_mb']['max']} MB, CPU {res['cpu_pct']:.3f}%")
    return res


def boot(b, runs):
    """Containers gone (as after a host stop with the project pruned):
    daemon to READY against `docker compose up -d --wait` from the same
    state, interleaved."""
    ensure_release_a(b)
    daemon, alt, recov = [], [], []
    agent_lags, alt_lags = Lags(), Lags()

    def run_daemon():
        b.remove_containers()
        d = Daemon(b, f"boot-{len(daemon)}")
        try:
            daemon.append(d.wait_ready())
        finally:
            d.stop()
        b.check_running("A", "boot recovery")
        agent_lags.add(b, d.ready_wall)
        path = b.work / "state/boot-recovery.json"
        if path.exists():
            recov.append(json.loads(path.read_text()))

    def run_alt():
        b.remove_containers()
        r = timed(b.compose_cmd("up", "-d", "--wait"), b.compose_env("A"),
                  what="docker compose up -d --wait (boot)")
        b.check_running("A", "docker compose up -d --wait (boot)")
        alt_lags.add(b, r.end_wall)
        alt.append(r.ms)

    for i in range(runs):
        rotate(i, [run_daemon, run_alt])
    res = {"daemon": summary(daemon), "alt": summary(alt), "paired": summary(paired(daemon, alt)),
           "beyond": summary([x - y for x, y in zip(daemon, alt)]),
           "agent_lags": agent_lags.result(), "alt_lags": alt_lags.result(), "recovery": {}}
    for key in ("toDockerMs", "toConvergedMs", "toHealthyMs"):
        vals = [r.get(key) for r in recov if r.get(key) is not None]
        if vals:
            res["recovery"][key] = summary(vals)
    log(f"boot: daemon {daemon}, compose {alt}")
    return res
