"""Running a command and timing it, and the one rounding rule.

Rounding: every time sample is stored in whole milliseconds, rounded half
up when it is taken (`whole_ms`). Medians, quartiles and ratios are
computed from those stored integers, and every printed figure goes through
`half_up` to the digits it shows. The table and the appendix therefore
print the same number for the same thing.
"""

import decimal
import math
import resource
import statistics
import subprocess
import sys
import time


class BenchError(Exception):
    """A measurement could not be taken; the run stops and writes nothing."""


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def whole_ms(x):
    """A sample in whole milliseconds, rounded half up."""
    return int(math.floor(x + 0.5))


def half_up(x, digits=0):
    """x rounded half up to `digits` decimals, as text."""
    q = decimal.Decimal(1).scaleb(-digits)
    return str(decimal.Decimal(repr(float(x))).quantize(q, rounding=decimal.ROUND_HALF_UP))


def summary(values):
    """n, median, min, max, quartiles and the samples themselves."""
    v = sorted(values)
    if not v:
        return {"n": 0, "samples": []}
    q = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0]] * 3
    return {"n": len(v), "median": statistics.median(v), "min": v[0], "max": v[-1],
            "q1": q[0], "q3": q[2], "samples": list(values)}


def percentile(values, p):
    """Linear interpolation between closest ranks."""
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


class Run:
    """One finished command: wall ms and client CPU ms (whole), exit code,
    output, and the wall clock when it returned."""

    def __init__(self, ms, cpu_ms, proc, end_wall):
        self.ms = whole_ms(ms)
        self.cpu_ms = whole_ms(cpu_ms)
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.end_wall = end_wall

    def markers(self):
        out = {}
        for line in self.stdout.splitlines():
            if "=" in line and (line.startswith("WAVEMAP_") or line.startswith("ALT_")):
                k, v = line.split("=", 1)
                out[k] = v
        return out

    def stages(self, key):
        """`a:1,b:2` marker -> {"a": 1, "b": 2}."""
        out = {}
        for part in filter(None, self.markers().get(key, "").split(",")):
            name, _, ms = part.partition(":")
            out[name] = int(ms)
        return out


def timed(cmd, env, check=True, stdin=None, what=None):
    """Run cmd to completion. Wall time from perf_counter around the whole
    process; CPU time of the client processes (the command and the children
    it waited for) from RUSAGE_CHILDREN. Work done inside dockerd is in
    neither."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], env=env, input=stdin, capture_output=True,
                          text=True, stdin=None if stdin is not None else subprocess.DEVNULL)
    ms = (time.perf_counter() - t0) * 1000.0
    end_wall = time.time()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1000.0
    run = Run(ms, cpu, proc, end_wall)
    if check and proc.returncode != 0:
        raise BenchError(
            f"{what or cmd[0]} failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n"
            f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
    return run


def sh(cmd, env, check=True, stdin=None):
    """Run an untimed helper command; its stdout, stripped."""
    proc = subprocess.run([str(c) for c in cmd], env=env, input=stdin, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(map(str, cmd))} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout.strip()


def rotate(i, sides):
    """Run every side once, the starting side rotating with i, so that over
    the runs each side goes first, in the middle and last alike."""
    k = i % len(sides)
    for side in sides[k:] + sides[:k]:
        side()
