"""The machine the run happened on, and whether other work shared it.

Other work is decided by one rule, stated in BENCHMARKS.md's Method: a
sampler thread looks at every process every SAMPLE_SECONDS for the whole
run; a process counts as other work when its name is one of OTHER_WORK (or
starts with one of OTHER_WORK_PREFIXES) and it is not a descendant of this
benchmark. "Other work ran" when at least one sample saw one; else "no
other work was seen". Load averages are recorded beside it but decide
nothing (they include the benchmark's own containers)."""

import datetime
import os
import tomllib
import platform
import subprocess
import threading
from pathlib import Path

SAMPLE_SECONDS = 5
OTHER_WORK = {"rustc", "cargo", "clippy-driver", "rustdoc", "cc", "cc1", "collect2", "ld", "ld.lld",
              "rust-lld", "docker", "docker-compose", "wavemap-agent"}
OTHER_WORK_PREFIXES = ("e2e-", "wavemap_agent-", "wavemap_e2e-", "fuzz_")


def processes():
    """pid -> (ppid, comm) of every process we can read."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        out[int(d.name)] = (ppid, comm)
    return out


def other_work():
    """Names of the other-work processes running now (not ours)."""
    procs = processes()
    me = os.getpid()

    def ours(pid):
        seen = 0
        while pid > 1 and seen < 64:
            if pid == me:
                return True
            pid = procs.get(pid, (0, ""))[0]
            seen += 1
        return False

    return sorted(comm for pid, (_, comm) in procs.items()
                  if (comm in OTHER_WORK or comm.startswith(OTHER_WORK_PREFIXES)) and not ours(pid))


class Sampler:
    """Samples load average and other work every SAMPLE_SECONDS until stopped."""

    def __init__(self):
        self.samples = []
        self.scenario = "setup"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            self.sample()
            if self._stop.wait(SAMPLE_SECONDS):
                return

    def sample(self):
        self.samples.append({
            "time": datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S"),
            "scenario": self.scenario,
            "loadavg": [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]],
            "other_work": other_work(),
        })

    def stop(self):
        self._stop.set()
        self._thread.join()
        seen = [s for s in self.samples if s["other_work"]]
        names = sorted({n for s in seen for n in s["other_work"]})
        return {"sample_seconds": SAMPLE_SECONDS, "rule_names": sorted(OTHER_WORK),
                "rule_prefixes": list(OTHER_WORK_PREFIXES), "samples": self.samples,
                "samples_with_other_work": len(seen), "other_work_names": names,
                "other_work_ran": bool(seen)}


def version_of(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - a missing tool is reported, not fatal
        return f"unavailable ({e})"


def machine(b):
    mem_kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    osr = Path("/etc/os-release").read_text().splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpu": next((x.split(":", 1)[1].strip() for x in cpuinfo if x.startswith("model name")), "unknown"),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": next((x.split("=", 1)[1].strip('"') for x in osr if x.startswith("PRETTY_NAME=")), "unknown"),
        "docker_client": version_of(["docker", "version", "--format", "{{.Client.Version}}"]),
        "docker_engine": version_of(["docker", "version", "--format", "{{.Server.Version}}"]),
        "docker_api": version_of(["docker", "version", "--format", "{{.Server.APIVersion}}"]),
        "compose_v2": version_of(["docker", "compose", "version", "--short"]),
        "compose_v1": (version_of([b.compose_v1, "version", "--short"])
                       if Path(b.compose_v1).exists() else None),
        "compose_v1_path": b.compose_v1,
        "aws": version_of(["aws", "--version"]),
        "jq": version_of(["jq", "--version"]),
        "rustc": version_of(["rustc", "--version"]),
        "agent": version_of([str(b.agent), "--version"]),
        "binary_bytes": b.agent.stat().st_size,
        "release_profile": tomllib.loads((b.root / "Cargo.toml").read_text()).get("profile", {}).get("release", {}),
    }
