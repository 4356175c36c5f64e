"""Availability as a client on the project network sees it.

A busybox container (the stack's own image, nothing pulled from outside)
joins the project network and, for each service, requests
http://<service>:8080/health through the service name every 50 ms: one
loop per service, each request bounded to 1 s, each answer written as
`<uptime seconds> <service> ok|fail` (/proc/uptime, 10 ms resolution). A
failed request is anything but a complete answer: no name, refused, reset,
a non-2xx status or the 1 s bound.

Per service: `failed` counts failed requests, and `gap_ms` is the longest
time between two consecutive successful answers (with no failure, about
the probe interval plus one request)."""

import subprocess
import time

from .core import BenchError, sh, whole_ms

INTERVAL_MS = 50
SERVICES = ("api", "frontend")

# `wget -T` crashes the Debian busybox-static build; `timeout 1` bounds it.
SCRIPT = """
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


class Probe:
    def __init__(self, b, tag):
        self.b = b
        self.name = f"{b.project}-probe-{tag}"
        loops = "\n".join(f"probe {s} &" for s in SERVICES)
        script = SCRIPT % (f"{INTERVAL_MS / 1000:.3f}", loops)
        sh(["docker", "run", "-d", "--name", self.name, "--network", b.network(),
            "--label", f"org.wavemap.bench={b.project}",
            b.need("WAVEMAP_TEST_BUSYBOX_IMAGE"), "sh", "-c", script], b.env_setup)
        self.wait_first_ok()

    def lines(self):
        out = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True).stdout
        rows = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in SERVICES:
                rows.append((float(parts[0]), parts[1], parts[2] == "ok"))
        return rows

    def wait_first_ok(self, limit=30):
        until = time.time() + limit
        while time.time() < until:
            ok = {s for _, s, good in self.lines() if good}
            if ok == set(SERVICES):
                return
            time.sleep(0.1)
        raise BenchError(f"probe {self.name}: no successful answer from every service within {limit}s: "
                         f"{self.lines()[-6:]}")

    def stop(self):
        """Stop probing; per service {requests, failed, gap_ms}."""
        time.sleep(2 * INTERVAL_MS / 1000)
        rows = self.lines()
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)
        result = {}
        for svc in SERVICES:
            mine = [(t, good) for t, s, good in rows if s == svc]
            oks = [t for t, good in mine if good]
            gaps = [b - a for a, b in zip(oks, oks[1:])]
            if not mine or not mine[-1][1]:
                raise BenchError(f"probe: {svc} did not answer at the end of the run: {mine[-5:]}")
            result[svc] = {"requests": len(mine), "failed": sum(1 for _, good in mine if not good),
                           "gap_ms": whole_ms(max(gaps) * 1000.0) if gaps else None}
        return result

    def kill(self):
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)
