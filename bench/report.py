#!/usr/bin/env python3
"""Render BENCHMARKS.md from a run's JSON (bench/measure.py) and the
template bench/report.md.in. Usage: bench/report.py RUN.json > OUT.md

Every sentence stating a measured fact is built here from the JSON; the
template holds only static text (Method, Rerun). Numbers are printed with
one rule, half up to the digits shown (wmbench.core.half_up)."""

import decimal
import json
import string
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wmbench.core import half_up  # noqa: E402
from wmbench import prose  # noqa: E402

TEMPLATE = Path(__file__).resolve().parent / "report.md.in"


def f0(x):
    return half_up(x, 0)


def fmt_ms(s):
    if not s or not s.get("n"):
        return "n/a"
    return f"{f0(s['median'])} ms ({f0(s['min'])}–{f0(s['max'])})"


def ratio_text(a, b):
    """The printed ratio of two medians, or None."""
    if not a or not b or not a.get("n") or not b.get("n") or not b["median"]:
        return None
    return half_up(a["median"] / b["median"], 2)


def verdict(printed, target):
    return "PASS" if decimal.Decimal(printed) <= decimal.Decimal(str(target)) else "MISS"


def spread(p):
    if not p or not p.get("n"):
        return ""
    return f" (per run {half_up(p['min'], 2)}–{half_up(p['max'], 2)})"


def ratio_rows(d):
    s = d["scenarios"]
    rows = []

    def row(what, a, b, alt_name, target, paired=None):
        r = ratio_text(a, b)
        if r is None:
            return
        rows.append(f"| {what} | {fmt_ms(a)} | {alt_name}: {fmt_ms(b)} | **{r}**{spread(paired)} "
                    f"| ≤ {target} | {verdict(r, target)} |")

    def reference_row(what, a, b, alt_name, why):
        """A ratio shown for scale only: the two sides do not do the same
        work, so there is no target and no verdict."""
        r = ratio_text(a, b)
        if r is None:
            return
        rows.append(f"| {what} | {fmt_ms(a)} | {alt_name}: {fmt_ms(b)} | {r} | — | no verdict: {why} |")

    if "noop" in s:
        n = s["noop"]
        what = ("No-op converge: `runtime deploy --execute` of the running pair (renders env from SSM, "
                "checks images, plans, converges nothing, checks health)")
        row(what, n["agent"], n["v2"], "`docker compose up -d` (v2)", 0.1, n.get("paired_v2"))
        if "v1" in n:
            row(what.split(":")[0] + ": the same agent runs against Compose v1 (on its own copy of the project)",
                n["agent"], n["v1"], f"`docker-compose up -d` ({d['machine']['compose_v1']})", 0.1,
                n.get("paired_v1"))
    if "changed" in s:
        c = s["changed"]
        for key, name in (("agent_start_first", "api `start-first`"), ("agent_stop_first", "stop-first")):
            what = f"Pair changed, images present, agent with {name} (api + frontend recreated, to healthy)"
            if "unsupported" in c[key]:
                rows.append(f"| {what} | not measured: the agent refused the compose file (exit 2) "
                            f"| `docker compose up -d --wait`: {fmt_ms(c['compose']['wall'])} | — | ≤ 0.7 | — |")
            else:
                row(what, c[key]["wall"], c["compose"]["wall"], "`docker compose up -d --wait`", 0.7,
                    c[key].get("paired"))
    if "render" in s:
        r = s["render"]
        row(f"Env render, {r['parameters']} parameters, one value changed before each run",
            r["agent"], r["shell"], "`aws ssm get-parameters-by-path` + jq", 0.3, r.get("paired"))
        reference_row(f"Env render, {r['parameters']} parameters, nothing changed (agent writes nothing)",
                      r["agent_unchanged"], r["shell"], "the shell render above (it has no such path)",
                      "not like for like (the agent's no-write path against the shell's write path)")
    if "full" in s:
        f = s["full"]
        row("Full deploy of a changed pair, images not on the host (login + pull + converge + health)",
            f["agent"], f["alt"], "`bench/alt-deploy.sh`", 0.7, f.get("paired"))
    if "prune" in s:
        p = s["prune"]
        r = ratio_text(p["agent"], p["hand"])
        if r is not None:
            rows.append(f"| Prune of {p['pairs']} old pairs ({2 * p['pairs']} images of {p['image_kib']} KiB), "
                        f"`runtime prune --execute` | {fmt_ms(p['agent'])}, {mib(p['agent_bytes'])} MiB freed "
                        f"(data root gained {mib(p['agent_disk_freed'])} MiB) | `docker image prune -a -f "
                        f"--filter label=…`: {fmt_ms(p['hand'])}, {mib(p['hand_bytes'])} MiB reclaimed "
                        f"| **{r}** | — | — |")
    return rows


def mib(s):
    """The median of a bytes summary in MiB, one decimal, or n/a."""
    if not s or not s.get("n"):
        return "n/a"
    return half_up(s["median"] / 1048576, 1)


def absolute_rows(d):
    s, m = d["scenarios"], d["machine"]
    rows = []
    if "status" in s:
        st = s["status"]
        rows.append(f"| `status` latency ({st['all']['n']} runs) | p50 {f0(st['p50'])} ms, p95 {f0(st['p95'])} ms "
                    f"(min {f0(st['all']['min'])}, max {f0(st['all']['max'])}); `status --json` "
                    f"({st['json']['n']} runs) p50 {f0(st['json_p50'])} ms, p95 {f0(st['json_p95'])} ms "
                    f"| p50 < 50 ms | {'PASS' if float(f0(st['p50'])) < 50 else 'MISS'} |")
    if "idle" in s:
        i = s["idle"]
        mx = half_up(i["rss_mb"]["max"], 1)
        rows.append(f"| Daemon idle RSS over {f0(i['seconds'])} s (converged project) | median "
                    f"{half_up(i['rss_mb']['median'], 1)} MB, max {mx} MB (peak since start, VmHWM: "
                    f"{half_up(i['hwm_mb'], 1)} MB; {i['threads']} threads) | < 20 MB "
                    f"| {'PASS' if float(mx) < 20 else 'MISS'} |")
        pct = half_up(i["cpu_pct"], 3)
        rows.append(f"| Daemon idle CPU over {f0(i['seconds'])} s | {pct}% of one core ({i['cpu_ticks']} "
                    f"ticks of 1/{i['hz']} s; {i['watchdog_pings']} watchdog pings at `WatchdogSec="
                    f"{i['watchdog_sec']}`) | < 0.5% | {'PASS' if float(pct) < 0.5 else 'MISS'} |")
    prof = ", ".join(f"`{k} = {json.dumps(v)}`" for k, v in sorted(m.get("release_profile", {}).items()))
    rows.append(f"| Binary size (`{Path(d.get('agent_path', 'wavemap-agent')).name}`) | "
                f"{half_up(m['binary_bytes'] / 1024 / 1024, 1)} MiB ({m['binary_bytes']} bytes; "
                f"release profile: {prof or 'none'}) | — | — |")
    if "boot" in s:
        b = s["boot"]
        be = b["beyond"]
        rows.append(f"| Boot recovery beyond the containers' own start and health (interleaved) | daemon "
                    f"start → READY {fmt_ms(b['daemon'])} minus `docker compose up -d --wait` "
                    f"{fmt_ms(b['alt'])} = **{f0(be['median'])} ms** median per round ({f0(be['min'])} to "
                    f"{f0(be['max'])}); ratio {ratio_text(b['daemon'], b['alt'])} | — | — |")
        before = baseline_boot()
        if before:
            commit, bb = before
            rows.append(f"| Wake before wake-from-disk (boot recovery re-rendered env files from SSM; "
                        f"the run that measured commit `{commit}`, from its BENCHMARKS.json; not this run) | "
                        f"daemon start → READY {fmt_ms(bb['daemon'])} minus `docker compose up -d --wait` "
                        f"{fmt_ms(bb['alt'])} = **{f0(bb['beyond']['median'])} ms** median per round; "
                        f"this run: **{f0(be['median'])} ms** | — | — |")
    return rows


# The commit holding BENCHMARKS.json of the last run before boot recovery
# stopped calling SSM (issue 23): the wake row's "before" is read from that
# run's own data, never typed in.
BASELINE_COMMIT = "019ea8a"


def baseline_boot():
    """(commit, boot scenario) of BASELINE_COMMIT's run, or None."""
    try:
        out = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:BENCHMARKS.json"],
                             capture_output=True, check=True, cwd=Path(__file__).resolve().parent)
        d = json.loads(out.stdout)
        return d.get("commit", BASELINE_COMMIT), d["scenarios"]["boot"]
    except (OSError, subprocess.CalledProcessError, ValueError, KeyError):
        return None


def machine_lines(d):
    m = d["machine"]
    v1 = (f"Compose v1: {m['compose_v1']} (`{m['compose_v1_path']}`)" if m.get("compose_v1")
          else f"Compose v1: absent (`{m['compose_v1_path']}`)")
    return "\n".join([
        f"- {m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB memory, kernel {m['kernel']}, {m['os']}",
        f"- Docker client {m['docker_client']}, Engine {m['docker_engine']} (API {m['docker_api']})",
        f"- Compose v2: {m['compose_v2']} (`docker compose`, CLI plugin); {v1}",
        f"- {m['aws']}; {m['jq']}; {m['rustc']}; {m['agent']}",
    ])


def appendix(d):
    s = d["scenarios"]
    out = []

    def line(name, res, digits=0, unit="ms"):
        if res and res.get("n"):
            out.append(f"- {name} ({unit}): " + ", ".join(half_up(x, digits) for x in res["samples"]))

    if "noop" in s:
        n = s["noop"]
        line("no-op, agent", n["agent"])
        line("no-op, docker compose up -d", n["v2"])
        line("no-op, docker-compose (v1) up -d", n.get("v1"))
        line("no-op, agent converge stage", n["agent_stages"].get("converge"))
    if "changed" in s:
        for key, name in prose.CHANGED_SIDES:
            c = s["changed"][key]
            if "wall" not in c:
                continue
            line(f"pair changed, {name}", c["wall"])
            for svc in ("api", "frontend"):
                line(f"pair changed, {name}, {svc} failed probes", c["probe"][svc]["failed"], unit="count")
                line(f"pair changed, {name}, {svc} longest gap", c["probe"][svc]["gap_ms"])
                line(f"pair changed, {name}, {svc} die → healthy", c["down"][svc])
                line(f"pair changed, {name}, {svc} new container start → healthy", c.get("ready", {}).get(svc))
    if "render" in s:
        line("render, agent", s["render"]["agent"])
        line("render, agent unchanged", s["render"]["agent_unchanged"])
        line("render, aws + jq", s["render"]["shell"])
        line("render, warm boto3 client in the benchmark", s["render"]["floor"])
    if "full" in s:
        f = s["full"]
        line("full deploy, agent", f["agent"])
        line("full deploy, shell pipeline", f["alt"])
        for side, who in (("agent_down", "agent"), ("alt_down", "pipeline")):
            for svc in ("api", "frontend"):
                line(f"full deploy, {who}, {svc} die → healthy", f[side][svc])
    if "status" in s:
        line("status", s["status"]["all"])
        line("status --json", s["status"]["json"])
    if "prune" in s:
        line("prune of 20 old pairs, agent", s["prune"]["agent"])
        line("prune of 20 old pairs, docker image prune -a --filter", s["prune"]["hand"])
        line("prune, agent bytes freed (estimate)", s["prune"]["agent_bytes"], unit="bytes")
        line("prune, docker reclaimed", s["prune"]["hand_bytes"], unit="bytes")
    if "boot" in s:
        line("boot, daemon to READY", s["boot"]["daemon"])
        line("boot, docker compose up -d --wait", s["boot"]["alt"])
    if "idle" in s:
        line("daemon idle VmRSS, every second", s["idle"]["rss_mb"], 1, "MB")
    loads = d["load"]["samples"]
    out.append(f"- load average (1 min) every {d['load']['sample_seconds']} s: "
               + ", ".join(half_up(x["loadavg"][0], 2) for x in loads))
    return "\n".join(out)


def render(d, json_name="BENCHMARKS.json"):
    cfg = d["config"]
    header = (f"This run: {d['started'][:16].replace('T', ' ')} to {d['finished'][11:16]} UTC, "
              f"{cfg['runs']} runs per side (`BENCH_RUNS`), commit `{d['commit']}`.")
    if d.get("dirty_paths"):
        header += (f" **Measured from a tree with uncommitted changes** (`--allow-dirty`): "
                   + ", ".join(f"`{p}`" for p in d["dirty_paths"][:8]) + ".")
    if cfg.get("only"):
        header += f" Only these scenarios ran (`BENCH_ONLY`): {', '.join(cfg['only'])}."
    avail_intro, avail_table = prose.availability(d)
    values = {
        "header": header,
        "load": prose.load_sentence(d),
        "ratio_rows": "\n".join(ratio_rows(d)) or "| (no scenario with an alternative ran) | | | | | |",
        "absolute_rows": "\n".join(absolute_rows(d)),
        "availability_intro": avail_intro,
        "availability_table": avail_table,
        "details": "\n".join(prose.details(d)),
        "gaps": "\n".join(prose.gaps(d, ratio_text)),
        "machine": machine_lines(d),
        "sample_seconds": str(d["load"]["sample_seconds"]),
        "rule_names": ", ".join(f"`{n}`" for n in d["load"]["rule_names"]),
        "rule_prefixes": ", ".join(f"`{n}`" for n in d["load"]["rule_prefixes"]),
        "probe_interval_ms": str(cfg["probe_interval_ms"]),
        "render_params": str(cfg["render_params"]),
        "duration": (f"The measurements took {half_up(d['minutes'], 1)} min in this run, after the "
                     "release build."),
        "appendix": appendix(d),
        "json_name": json_name,
    }
    return string.Template(TEMPLATE.read_text()).substitute(values)


def main(argv):
    if len(argv) != 1:
        print("usage: bench/report.py RUN.json > OUT.md", file=sys.stderr)
        return 2
    path = Path(argv[0])
    sys.stdout.write(render(json.loads(path.read_text()), path.name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
