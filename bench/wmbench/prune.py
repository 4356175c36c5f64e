"""The prune scenario: `wavemap-agent runtime prune --execute` removing 20
old image pairs against `docker image prune -a -f --filter label=...`, the
command an operator would type by hand.

Before each run of either side, 20 old pairs (40 images, each a single
layer of `PRUNE_IMAGE_KIB` KiB of its own random bytes, made with `docker
import` so no layer is shared) are tagged in the run's release
repositories; the current release (pair A, deployed by the agent) runs.
The hand side needs a filter or it would remove every unused image on the
host, of every repository (the stack's own test images included): the
images carry a label unique to the run, and that is the filter. The agent
needs none: it reads the release repositories from its current release.
Both sides must remove exactly the 40 images and leave pair A, postgres and
everything else; the run stops otherwise.
"""

import io
import os
import re
import subprocess
import tarfile

from .core import BenchError, log, rotate, summary, timed

PAIRS = 20
PRUNE_IMAGE_KIB = int(os.environ.get("BENCH_PRUNE_IMAGE_KIB", "1024"))


def _layer(seed):
    """A tar with one file of PRUNE_IMAGE_KIB KiB of bytes unique to `seed`."""
    data = os.urandom(PRUNE_IMAGE_KIB * 1024)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name=f"pad-{seed}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def old_pairs(b, round_no):
    """Import the 20 old pairs; their references."""
    refs = []
    for i in range(PAIRS):
        sha = f"{0xb0000000 + round_no * 100 + i:040x}"
        for service in ("backend", "frontend"):
            ref = f"{b.registry}/{b.id}/{service}:sha-{sha}"
            # Bytes on stdin, which core.sh (text) does not take.
            p = subprocess.run(["docker", "import", "--change", f"LABEL {label_key()}={b.id}", "-", ref],
                               input=_layer(f"{round_no}-{i}-{service}"), capture_output=True,
                               env=b.env_setup)
            if p.returncode != 0:
                raise BenchError(f"docker import {ref}: {p.stderr.decode(errors='replace')[-500:]}")
            refs.append(ref)
    return refs


def label_key():
    return "org.wavemap.bench.prune"


def check_after(b, refs, what):
    left = [r for r in refs if b.image_present(r)]
    if left:
        raise BenchError(f"after {what}: {len(left)} old images still there, e.g. {left[0]}")
    keep = [b.images[("backend", "A")], b.images[("frontend", "A")], b.need("WAVEMAP_TEST_POSTGRES_IMAGE"),
            b.need("WAVEMAP_TEST_BACKEND_IMAGE_A"), b.need("WAVEMAP_TEST_BUSYBOX_IMAGE")]
    gone = [r for r in keep if not b.image_present(r)]
    if gone:
        raise BenchError(f"after {what}: {gone} were removed")


def reclaimed_bytes(text):
    """`Total reclaimed space: 41.94MB` -> bytes (docker's units are 1000-based)."""
    m = re.search(r"Total reclaimed space:\s*([\d.]+)\s*([kKMGT]?B)", text)
    if not m:
        return None
    scale = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[m.group(2)]
    return int(float(m.group(1)) * scale)


def prune(b, runs):
    # The current release: pair A, deployed by the agent; pair B's copies
    # untagged so both sides find the same 40 images.
    b.pair_present("A", True)
    timed(b.deploy_cmd("A", "bench-prune-a"), b.env_agent, what="agent deploy A (prune setup)")
    b.pair_present("B", False)
    agent_cmd = [b.agent, "--config", b.config, "runtime", "prune", "--execute"]
    hand_cmd = ["docker", "image", "prune", "-a", "-f", "--filter", f"label={label_key()}={b.id}"]
    agent, hand, agent_bytes, agent_disk, hand_bytes = [], [], [], [], []
    rounds = {"n": 0}

    def run_agent():
        rounds["n"] += 1
        refs = old_pairs(b, rounds["n"])
        r = timed(agent_cmd, b.env_agent, what="agent runtime prune")
        m = r.markers()
        if m.get("WAVEMAP_RUNTIME_PRUNE_RESULT") != "pruned" or m.get("WAVEMAP_RUNTIME_PRUNE_COUNT") != str(2 * PAIRS):
            raise BenchError(f"agent prune did not remove {2 * PAIRS} images: {m}")
        check_after(b, refs, "agent prune")
        agent.append(r.ms)
        agent_bytes.append(int(m.get("WAVEMAP_RUNTIME_PRUNE_BYTES", "0")))
        if "WAVEMAP_RUNTIME_PRUNE_DISK_FREED_BYTES" in m:
            agent_disk.append(int(m["WAVEMAP_RUNTIME_PRUNE_DISK_FREED_BYTES"]))

    def run_hand():
        rounds["n"] += 1
        refs = old_pairs(b, rounds["n"])
        r = timed(hand_cmd, b.env_setup, what="docker image prune -a --filter")
        check_after(b, refs, "docker image prune")
        hand.append(r.ms)
        got = reclaimed_bytes(r.stdout)
        if got is not None:
            hand_bytes.append(got)

    for i in range(runs):
        rotate(i, [run_agent, run_hand])
    log(f"prune: agent {agent} ms ({agent_bytes} bytes), by hand {hand} ms ({hand_bytes} bytes)")
    return {"pairs": PAIRS, "image_kib": PRUNE_IMAGE_KIB, "agent": summary(agent), "hand": summary(hand),
            "agent_bytes": summary(agent_bytes), "agent_disk_freed": summary(agent_disk),
            "hand_bytes": summary(hand_bytes), "hand_command": " ".join(hand_cmd[:-1]) + " label=<run>"}
