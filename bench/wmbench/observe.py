"""What Docker itself recorded about a deploy: when each service's new
container was created, started and first healthy (`docker inspect`), and
each service's outage from the old container's `die` to the new one's
first `healthy` (`docker events`)."""

import json
import subprocess
import time

from .core import sh, summary, whole_ms
from .project import parse_ts


def health_lags(b, end_wall):
    """How long a tool took to notice health, from Docker's own records, in
    whole ms: `dep` api healthy -> frontend started (the depends_on wait),
    `created` api healthy -> frontend's new container created (negative:
    before), `final` frontend healthy -> the tool returned. A service is
    healthy at the end of its first passing check."""
    c = b.containers()
    names = [c[s][0][3] for s in ("api", "frontend")]
    info = json.loads(sh(["docker", "inspect", *names], b.env_setup))
    by = {x["Config"]["Labels"]["com.docker.compose.service"]: x for x in info}

    def healthy_at(x):
        started = parse_ts(x["State"]["StartedAt"])
        passing = [parse_ts(h["End"]) for h in x["State"]["Health"]["Log"]
                   if h["ExitCode"] == 0 and parse_ts(h["Start"]) >= started]
        return min(passing) if passing else None

    api_ok, front_ok = healthy_at(by["api"]), healthy_at(by["frontend"])
    front_started = parse_ts(by["frontend"]["State"]["StartedAt"])
    front_created = parse_ts(by["frontend"]["Created"])
    return {
        "dep": whole_ms((front_started - api_ok) * 1000.0) if api_ok else None,
        "created": whole_ms((front_created - api_ok) * 1000.0) if api_ok else None,
        "final": whole_ms((end_wall - front_ok) * 1000.0) if front_ok else None,
    }


class Lags:
    """health_lags() of every run of one side."""

    def __init__(self):
        self.runs = []

    def add(self, b, end_wall):
        self.runs.append(health_lags(b, end_wall))

    def result(self):
        return {k: summary([r[k] for r in self.runs if r[k] is not None]) for k in ("dep", "created", "final")}


class Events:
    """`docker events` of the project while one run happens, to measure how
    long each service was unavailable by Docker's account: its old
    container's `die` to the new container's first `health_status:
    healthy`."""

    def __init__(self, b):
        self.proc = subprocess.Popen(
            ["docker", "events", "--since", f"{time.time():.3f}",
             "--filter", f"label=com.docker.compose.project={b.project}",
             "--filter", "type=container",
             "--format", '{{.TimeNano}}\t{{.Action}}\t{{index .Actor.Attributes "com.docker.compose.service"}}'],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=b.env_setup)

    def downtime(self):
        """service -> whole ms from die to healthy (absent: never down).
        Also sets `self.ready`: service -> whole ms from its new container's
        `start` to its first `healthy` (the container's own start plus its
        first passing check)."""
        time.sleep(0.5)  # let the last events arrive
        self.proc.terminate()
        out, _ = self.proc.communicate()
        died, started, result, self.ready = {}, {}, {}, {}
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) != 3:
                continue
            t, action, service = int(parts[0]) / 1e9, parts[1], parts[2]
            if action == "die" and service not in died:
                died[service] = t
            elif action == "start" and service not in started:
                started[service] = t
            elif action.startswith("health_status") and "unhealthy" not in action:
                if service in died and service not in result:
                    result[service] = whole_ms((t - died[service]) * 1000.0)
                if service in started and service not in self.ready:
                    self.ready[service] = whole_ms((t - started[service]) * 1000.0)
        return result


def downtime_summary(runs):
    return {svc: summary([r[svc] for r in runs if svc in r]) for svc in ("api", "frontend")}
