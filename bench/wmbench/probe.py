"""Availability as a client on the project network sees it.

A container on the project network requests http://api:8080/health and
http://frontend:8080/health through the service names every 50 ms, one
loop per service, each request bounded to 1 s, from just before a deploy
until just after it returned. Per service: `failed` counts failed
requests and `gap_ms` is the longest time without a successful answer.

Two probes, the first one available:
- `fake-backend probe`, the checkout's tests/fake-backend built by
  bench/run and mounted into the stack's backend image (as the zero-downtime
  end-to-end test runs it):
  a request tries each address the name resolves to, as Node's and curl's
  clients do, and fails when none connects, on a non-200 status or after
  1 s. Its longest gap also counts from the start to the first success and
  from the last success to the end.
- otherwise a busybox loop (the stack's `wavemap/busybox`): `timeout 1
  wget` per request (`wget -T` crashes the Debian busybox-static build),
  which tries one address only; the gap is between consecutive successful
  answers, timed by /proc/uptime (10 ms).
The run records which one it used (`probe.kind` in the JSON)."""

import json
import subprocess
import time

from .core import BenchError, sh, whole_ms

INTERVAL_MS = 50
TIMEOUT_MS = 1000
SERVICES = ("api", "frontend")

BUSYBOX_SCRIPT = """
probe() {
  while :; do
    if timeout 1 wget -q -O /dev/null "http://$1:8080/health" 2>/dev/null; then r=ok; else r=fail; fi
    read up idle </proc/uptime
    echo "$up $1 $r"
    sleep %s
  done
}
%s
wait
"""


def kind(b):
    """'fake-backend' when the checkout's fake-backend binary (BENCH_PROBE_BIN,
    built by bench/run) has `probe`, else 'busybox'."""
    binary = b.probe_bin
    if not binary.exists():
        return "busybox"
    proc = subprocess.run([str(binary), "probe", "--once", "--timeout-ms", "100", "http://127.0.0.1:9/health"],
                          capture_output=True, text=True)
    return "busybox" if "unknown command" in proc.stderr + proc.stdout else "fake-backend"


class Probe:
    def __init__(self, b, tag):
        self.b = b
        self.kind = b.probe_kind
        self.name = f"{b.project}-probe-{tag}"
        base = ["docker", "run", "-d", "--name", self.name, "--network", b.network(),
                "--label", f"org.wavemap.bench={b.project}"]
        if self.kind == "fake-backend":
            # The binary mounted into the backend image, whose root has its libraries.
            sh(base + ["-v", f"{b.probe_bin}:/probe:ro", "--entrypoint", "/probe",
                       b.need("WAVEMAP_TEST_BACKEND_IMAGE_A"), "probe",
                       "--interval-ms", str(INTERVAL_MS), "--timeout-ms", str(TIMEOUT_MS),
                       *[f"http://{s}:8080/health" for s in SERVICES]], b.env_setup)
            self.wait_log("probe: requesting")
            time.sleep(0.2)  # its first requests
        else:
            loops = "\n".join(f"probe {s} &" for s in SERVICES)
            sh(base + [b.need("WAVEMAP_TEST_BUSYBOX_IMAGE"), "sh", "-c",
                       BUSYBOX_SCRIPT % (f"{INTERVAL_MS / 1000:.3f}", loops)], b.env_setup)
            self.wait_busybox_ok()

    def logs(self):
        p = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True)
        return p.stdout, p.stderr

    def wait_log(self, text, limit=30):
        until = time.time() + limit
        while time.time() < until:
            if text in self.logs()[1]:
                return
            time.sleep(0.05)
        raise BenchError(f"probe {self.name} did not start within {limit}s: {self.logs()}")

    def busybox_rows(self):
        rows = []
        for line in self.logs()[0].splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in SERVICES:
                rows.append((float(parts[0]), parts[1], parts[2] == "ok"))
        return rows

    def wait_busybox_ok(self, limit=30):
        until = time.time() + limit
        while time.time() < until:
            if {s for _, s, good in self.busybox_rows() if good} == set(SERVICES):
                return
            time.sleep(0.1)
        raise BenchError(f"probe {self.name}: no successful answer from every service within {limit}s")

    def stop(self):
        """Stop probing; per service {requests, failed, gap_ms, failure_samples}."""
        time.sleep(2 * INTERVAL_MS / 1000)
        try:
            if self.kind == "fake-backend":
                sh(["docker", "stop", "-t", "10", self.name], self.b.env_setup)
                return self.fake_backend_result()
            return self.busybox_result()
        finally:
            self.kill()

    def fake_backend_result(self):
        out, err = self.logs()
        result = {}
        for line in out.splitlines():
            try:
                x = json.loads(line)
            except ValueError:
                continue
            for svc in SERVICES:
                if x.get("url") == f"http://{svc}:8080/health":
                    result[svc] = {"requests": x["requests"], "failed": x["failures"],
                                   "gap_ms": x["longest_gap_ms"], "failure_samples": x["failure_samples"]}
        if set(result) != set(SERVICES):
            raise BenchError(f"probe {self.name} reported {sorted(result)}: {out[-1000:]} {err[-1000:]}")
        return result

    def busybox_result(self):
        rows = self.busybox_rows()
        result = {}
        for svc in SERVICES:
            mine = [(t, good) for t, s, good in rows if s == svc]
            oks = [t for t, good in mine if good]
            gaps = [y - x for x, y in zip(oks, oks[1:])]
            if not mine or not mine[-1][1]:
                raise BenchError(f"probe: {svc} did not answer at the end of the run: {mine[-5:]}")
            result[svc] = {"requests": len(mine), "failed": sum(1 for _, good in mine if not good),
                           "gap_ms": whole_ms(max(gaps) * 1000.0) if gaps else None,
                           "failure_samples": []}
        return result

    def kill(self):
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)
