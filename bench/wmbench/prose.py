"""The sentences of BENCHMARKS.md that state measured facts, each built
from the run's JSON: which values it prints, and which way it reads
(e.g. "before"/"after") follow the data, never fixed text."""

import re

from .core import half_up

CHANGED_SIDES = (("agent_start_first", "agent, api start-first"),
                 ("agent_stop_first", "agent, stop-first"),
                 ("compose", "docker compose up -d --wait"))
STAGES = ("env-render", "ecr-login", "pull", "converge", "health")


def f0(x):
    return half_up(x, 0)


def med(s):
    return f0(s["median"]) if s and s.get("n") else "n/a"


def seconds(duration):
    """Compose's normalised duration ("2s", "1m30s", "500ms") in seconds."""
    total = 0.0
    for n, unit in re.findall(r"([\d.]+)(ms|h|m|s)", duration or ""):
        total += float(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def load_sentence(d):
    ld, m = d["load"], d.get("machine", {})
    n, k = len(ld["samples"]), ld["samples_with_other_work"]
    avgs = [x["loadavg"][0] for x in ld["samples"]]
    span = f"{half_up(min(avgs), 2)}–{half_up(max(avgs), 2)}" if avgs else "n/a"
    if ld["other_work_ran"]:
        head = (f"**Other work ran on this machine during this run**: {k} of {n} samples (one every "
                f"{ld['sample_seconds']} s) saw its processes ({', '.join(f'`{x}`' for x in ld['other_work_names'])}). "
                "Absolute times are inflated by it; the ratios are fairer, because the sides of each "
                "row ran interleaved in the same minutes.")
    else:
        head = (f"No other work was seen on this machine during this run: none of the {n} samples (one "
                f"every {ld['sample_seconds']} s) saw a process of other work (the rule is in Method).")
    return (head + f" The 1-minute load average on these {m.get('nproc', '?')} cores ranged {span} "
            "(it includes the benchmark's own containers and tools).")


def stage_text(stages):
    """Stages in the order the agent runs them (others after, by name)."""
    order = {k: i for i, k in enumerate(("env-render", "render", "ecr-login", "login", "pull", "converge",
                                         "health", "up"))}
    keys = sorted(stages, key=lambda k: (order.get(k, 99), k))
    return ", ".join(f"{k} {med(stages[k])}" for k in keys if stages[k].get("n"))


def lag_text(a, b, who_a, who_b):
    if not a or not b or not a["final"].get("n") or not b["final"].get("n"):
        return ""
    text = " Noticing health (Docker's own timestamps, median): "
    if a["created"].get("n") and b["created"].get("n"):
        def rel(x):
            v = x["median"]
            return f"{f0(abs(v))} ms {'before' if v < 0 else 'after'}"
        text += (f"the new frontend container was created {rel(a['created'])} api was healthy for "
                 f"{who_a}, {rel(b['created'])} for {who_b}; ")
    return text + (f"frontend healthy → command returned: {med(a['final'])} ms for {who_a}, "
                   f"{med(b['final'])} ms for {who_b}.")


def down_text(down, who):
    parts = []
    for svc in ("api", "frontend"):
        s = down.get(svc, {})
        if s.get("n"):
            parts.append(f"{svc} {half_up(s['median'] / 1000, 1)} s")
        else:
            parts.append(f"{svc} never (no `die` before its new container's `healthy`)")
    return f"{who}: " + ", ".join(parts)


def availability(d):
    s = d["scenarios"]
    if "changed" not in s:
        return "The pair-changed block did not run in this run (`BENCH_ONLY`).", ""
    c = s["changed"]
    cols = [c[k] for k, _ in CHANGED_SIDES]
    n = c["compose"]["wall"]["n"]

    def cell(side, svc, key, unit=""):
        if "unsupported" in side:
            return "not measured"
        x = side["probe"][svc][key]
        if not x.get("n"):
            return "n/a"
        return f"{f0(x['median'])}{unit} (max {f0(x['max'])}{unit})"

    sf, comp = c["agent_start_first"], c["compose"]
    rows = ["| per flip, median (max) | agent, api `start-first` | agent, stop-first "
            "| `docker compose up -d --wait` | target | result |", "|---|---|---|---|---|---|"]
    api_target = "0 in every flip (start-first)"
    front_target = ("start-first: median below Compose's and below the new frontend's own start → "
                    "healthy (row below)")
    if "unsupported" in sf:
        api_res = front_res = "not measured"
    else:
        api_res = "PASS" if sf["probe"]["api"]["failed"]["max"] == 0 else "MISS"
        a, b = sf["probe"]["frontend"]["gap_ms"], comp["probe"]["frontend"]["gap_ms"]
        ready = sf.get("ready", {}).get("frontend", {})
        front_res = "PASS" if (a.get("n") and b.get("n") and ready.get("n") and a["median"] < b["median"]
                               and a["median"] <= ready["median"]) else "MISS"
    for svc, key, label, unit, target, res in (
            ("api", "failed", "api: failed probes", "", api_target, api_res),
            ("api", "gap_ms", "api: longest gap", " ms", "—", "—"),
            ("frontend", "failed", "frontend: failed probes", "", "—", "—"),
            ("frontend", "gap_ms", "frontend: longest gap", " ms", front_target, front_res),
            ("api", "requests", "api: requests per flip", "", "—", "—")):
        rows.append(f"| {label} | " + " | ".join(cell(x, svc, key, unit) for x in cols) + f" | {target} | {res} |")
        if label == "frontend: longest gap":
            def ready_cell(x):
                r = x.get("ready", {}).get("frontend", {}) if "unsupported" not in x else {}
                return f"{f0(r['median'])} ms (max {f0(r['max'])} ms)" if r.get("n") else "not measured"
            rows.append("| frontend: new container `start` → first `healthy` (`docker events`) | "
                        + " | ".join(ready_cell(x) for x in cols) + " | — | — |")
    kind = d["config"].get("probe", "busybox")
    intro = (f"A container on the project network requested each service's `/health` through its "
             f"service name every {d['config']['probe_interval_ms']} ms during every run of the "
             f"pair-changed block ({n} flips per side, interleaved), with "
             + ("`fake-backend probe` (the checkout's tests/fake-backend)"
                if kind == "fake-backend" else
                "the busybox fallback (the checkout's `fake-backend` has no `probe`; the fallback tries "
                "one address per request)")
             + "; Method says what counts as failed and as a gap.")
    for key, name in CHANGED_SIDES:
        ex = c[key].get("probe_failure_samples") or []
        if ex:
            intro += f" First failures seen, {name}: " + "; ".join(
                f"`{x.replace('`', chr(39))[:120]}`" for x in ex[:2]) + "."
    if "unsupported" in sf:
        msg = sf["unsupported"].replace("`", "'").strip().splitlines()
        intro += (" **The agent at this commit refused the start-first compose file** (exit 2, nothing "
                  f"changed), so that column is not measured: `{msg[-1][:300] if msg else ''}`")
    return intro, "\n".join(rows)


def details(d):
    s, fx = d["scenarios"], d.get("fixture", {})
    out = []
    if "noop" in s:
        n = s["noop"]
        st = n["agent_stages"]
        inside = sum(v["median"] for v in st.values() if v.get("n"))
        conv = st.get("converge", {})
        line = (f"- **No-op converge.** Agent stages (median ms, `WAVEMAP_RUNTIME_DEPLOY_STAGE_MS`): "
                f"{stage_text(st)}; {f0(max(0, n['agent']['median'] - inside))} ms of the "
                f"{med(n['agent'])} ms wall time fall outside the stages (process start, config, lock, "
                "journal).")
        if conv.get("n") and n["v2"].get("n"):
            line += (f" The converge stage alone is {half_up(conv['median'] / n['v2']['median'], 2)} of "
                     "`docker compose up -d`'s whole process.")
        line += (f" Client CPU: agent {med(n['agent_cpu'])} ms, `docker compose` {med(n['v2_cpu'])} ms"
                 + (f", `docker-compose` (v1) {med(n['v1_cpu'])} ms" if "v1_cpu" in n else "") + ". "
                 + ("Compose v2 **recreated containers** the agent had made."
                    if n["v2_recreated"] else
                    "Compose v2 recreated none of the agent's containers in its runs."))
        out.append(line)
        if "v1" in n:
            rec = n.get("v1_on_agent_project_recreated") or []
            out.append("  Compose v1 " + ("recreated containers" if n["v1_recreated"] else "recreated nothing")
                       + " on its own copy during the rounds. Run once on the agent's containers "
                       "afterwards (untimed), it recreated "
                       + (", ".join(f"`{x}`" for x in rec) if rec else "nothing")
                       + "; the agent's next deploy then changed "
                       + (f"`{n['agent_after_v1_changed']}`" if n.get("agent_after_v1_changed") else "nothing")
                       + ".")
    if "changed" in s:
        c = s["changed"]
        api, front = fx.get("api", {}), fx.get("frontend", {})
        line = (f"- **Pair changed, images present.** The fixture's health checks run every "
                f"`{api.get('healthcheck_interval')}` (api) and `{front.get('healthcheck_interval')}` "
                f"(frontend); frontend depends on {', '.join(front.get('depends_on', [])) or 'nothing'}; "
                f"the fixture's api order is {api.get('update_order')}, its frontend's "
                f"{front.get('update_order')}, and the frontend publishes "
                f"{'a host port' if front.get('ports') else 'no host port'}. ")
        for key, name in CHANGED_SIDES[:2]:
            if "wall" in c[key]:
                line += (f"{name[0].upper() + name[1:]}: stages (median ms) {stage_text(c[key]['stages'])}; "
                         f"client CPU {med(c[key]['cpu'])} ms. ")
        line += f"Compose: client CPU {med(c['compose']['cpu'])} ms."
        if "wall" in c["agent_stop_first"]:
            line += lag_text(c["agent_stop_first"]["lags"], c["compose"]["lags"], "the agent (stop-first)", "Compose")
        line += (" Old container's `die` to the new one's first `healthy` (`docker events`, median): "
                 + "; ".join(down_text(c[k]["down"], name) for k, name in CHANGED_SIDES if "down" in c[k]) + ".")
        out.append(line)
    if "render" in s:
        r = s["render"]
        calls = r.get("calls", {})

        def calls_text(x):
            return ", ".join(f"{v} {k}" for k, v in sorted(x.items())) or "none"

        out.append(
            f"- **Env render.** The agent and the shell wrote "
            + ("byte-identical variable lines" if r["identical"] else "**different** lines")
            + f" ({r['lines']} lines over three files, modes {', '.join(r['modes'])}). Calls to moto "
            f"(counted through a proxy, one untimed run each): the agent {calls_text(calls.get('agent', {}))}; "
            f"the shell {calls_text(calls.get('shell', {}))}. The same {r['floor_pages']} pages from a warm "
            f"boto3 client inside the benchmark process (no process start, no file writes) take "
            f"{med(r['floor'])} ms ({f0(r['floor']['min'])}–{f0(r['floor']['max'])}), "
            f"{half_up(r['floor']['median'] / r['agent']['median'], 2)} of the agent's median. Client CPU: "
            f"agent {med(r['agent_cpu'])} ms, shell (aws + jq) {med(r['shell_cpu'])} ms.")
        for x in r.get("first_differences", []):
            out.append(f"  - {x}")
    if "full" in s:
        f = s["full"]
        out.append(f"- **Full deploy.** Agent stages (median ms): {stage_text(f['agent_stages'])}. Shell "
                   f"pipeline stages: {stage_text(f['alt_stages'])}. Client CPU: agent {med(f['agent_cpu'])} ms, "
                   f"pipeline {med(f['alt_cpu'])} ms."
                   + lag_text(f["agent_lags"], f["alt_lags"], "the agent", "the pipeline")
                   + " Old container's `die` to the new one's first `healthy` (median): "
                   + down_text(f["agent_down"], "agent") + "; " + down_text(f["alt_down"], "pipeline") + ".")
    if "boot" in s:
        b = s["boot"]
        rec = ", ".join(f"{k} {med(b['recovery'][k])}" for k in ("toDockerMs", "toConvergedMs", "toHealthyMs")
                        if k in b["recovery"])
        out.append(f"- **Boot recovery.** The daemon's own record (`boot-recovery.json`, median ms since "
                   f"start): {rec or 'not written'}."
                   + lag_text(b["agent_lags"], b["alt_lags"], "the daemon", "Compose"))
    if "idle" in s:
        out.append(f"- **Daemon.** READY {f0(s['idle']['ready_ms'])} ms after start with the project "
                   "already running.")
    return out or ["No scenario ran."]


def gaps(d, ratio_text):
    s, fx, m = d["scenarios"], d.get("fixture", {}), d.get("machine", {})
    out = []
    if "noop" in s:
        n = s["noop"]
        r = ratio_text(n["agent"], n["v2"])
        if r and float(r) > 0.1:
            st = n["agent_stages"]
            out.append(f"- **No-op converge ({r} against 0.1).** The whole command is {med(n['agent'])} ms; "
                       f"its stages: {stage_text(st)} (median ms). `runtime deploy` renders the env files "
                       "from SSM on every call by design (parameters may have changed); of its stages, "
                       f"converge itself is {med(st.get('converge'))} ms.")
    if "changed" in s:
        c = s["changed"]
        iv = [seconds(fx.get(x, {}).get("healthcheck_interval")) for x in ("api", "frontend")]
        engine = m.get("docker_engine", "")
        major = int(re.match(r"(\d+)", engine).group(1)) if re.match(r"\d+", engine) else 0
        for key, name in CHANGED_SIDES[:2]:
            if "wall" not in c[key]:
                continue
            r = ratio_text(c[key]["wall"], c["compose"]["wall"])
            if not r or float(r) <= 0.7:
                continue
            st = c[key]["stages"]
            out.append(
                f"- **Pair changed, {name} ({r} against 0.7).** Docker runs a container's first health "
                f"check one `interval` after it starts ({half_up(iv[0], 1)} s for api and "
                f"{half_up(iv[1], 1)} s for frontend in the fixture), and frontend waits for api to be "
                f"healthy, so the two in sequence cost at least {half_up(iv[0] + iv[1], 1)} s whoever "
                f"drives them; the agent's converge stage is {med(st.get('converge'))} ms and its health "
                f"stage {med(st.get('health'))} ms (how each tool notices health is under \"Where "
                "the time goes\")."
                + " Health checks that run sooner need `healthcheck.start_interval` (Docker Engine 25 "
                f"and later; this Engine is {engine}"
                + (", so not here" if major and major < 25 else "") + ") or the agent running the check "
                "command itself right after start, which changes what \"healthy\" means.")
    if "render" in s:
        r = s["render"]
        rt = ratio_text(r["agent"], r["shell"])
        if rt and float(rt) > 0.3:
            out.append(f"- **Env render ({rt} against 0.3).** The agent uses {med(r['agent_cpu'])} ms of "
                       f"CPU in its {med(r['agent'])} ms; a warm in-process client needs {med(r['floor'])} ms "
                       f"for the same {r['floor_pages']} pages from moto, and the shell uses "
                       f"{med(r['shell_cpu'])} ms of CPU.")
    if "full" in s:
        f = s["full"]
        rt = ratio_text(f["agent"], f["alt"])
        if rt and float(rt) > 0.7:
            out.append(f"- **Full deploy ({rt} against 0.7).** Agent stages: {stage_text(f['agent_stages'])}; "
                       f"pipeline stages: {stage_text(f['alt_stages'])} (median ms).")
    if "status" in s and float(f0(s["status"]["p50"])) >= 50:
        out.append(f"- **status p50 {f0(s['status']['p50'])} ms (against 50).** Every sample is in the appendix.")
    if "idle" in s:
        i = s["idle"]
        if float(half_up(i["rss_mb"]["max"], 1)) >= 20:
            out.append(f"- **Idle RSS {half_up(i['rss_mb']['max'], 1)} MB (against 20).**")
        if float(half_up(i["cpu_pct"], 3)) >= 0.5:
            out.append(f"- **Idle CPU {half_up(i['cpu_pct'], 3)}% (against 0.5%).**")
    if "boot" in s:
        be = s["boot"]["beyond"]["median"]
        out.append(f"- **Boot recovery (no target).** The daemon is READY {f0(abs(be))} ms "
                   f"{'after' if be >= 0 else 'before'} `docker compose up -d --wait` returns from the same "
                   "state (median of the rounds).")
    return out or ["Every target is met in this run."]
