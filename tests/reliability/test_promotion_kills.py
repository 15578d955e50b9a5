"""SIGKILL a process publishing, promoting or rolling back, at injected points and at random
moments, then check what an operator relies on; and race two compare-and-swap promotions.

After every kill: production names a complete bundle whose hash verifies (and is the state
before or after the interrupted step), the history agrees with the pointer, `gc` clears the
debris without touching a complete bundle, a retry of the publish succeeds, and `rollback`
walks back through every bundle that was production, down to the first. Bundles are a few small
fake files: no TensorFlow. Every case goes to the reliability tally (`promotion_kills`).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.errors import PipelineError
from pipelines.faults import ENV as FAULT_ENV
from pipelines.registry import (
    CHAIN_LIMIT,
    FAULT_POINTS,
    TMP_BUNDLE,
    TMP_POINTER,
    Registry,
    content_hash,
)

REPO = Path(__file__).parents[2]
LOOP_STEPS = 9  # publish + promote each, a rollback after every third
RANDOM_KILLS = 32

# The child: `op` is publish (C, then promote it against the production it found), rollback,
# loop (LOOP_STEPS publish/promote/rollback steps) or race (publish, wait for "go", promote).
CHILD = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from pipelines.errors import PromotionConflict
from pipelines.registry import Registry

root, staging, op, name = sys.argv[1:5]
registry = Registry(root)
print("ready", flush=True)
if op == "publish":
    champion = registry.production()
    bundle_id = registry.publish(f"{{staging}}/{{name}}", {{"created_at": name}})
    registry.promote(bundle_id, reason="kill test", expected=champion)
elif op == "rollback":
    registry.rollback()
elif op == "loop":
    for n in range({LOOP_STEPS}):
        champion = registry.production()
        bundle_id = registry.publish(f"{{staging}}/L{{n}}", {{"created_at": f"L{{n}}"}})
        registry.promote(bundle_id, reason=f"step {{n}}", expected=champion)
        if n % 3 == 2:
            registry.rollback()
elif op == "race":
    champion = registry.production()
    bundle_id = registry.publish(f"{{staging}}/{{name}}", {{"created_at": name}})
    print("published", flush=True)
    sys.stdin.readline()
    try:
        registry.promote(bundle_id, reason="race", expected=champion)
        print("won", bundle_id, flush=True)
    except PromotionConflict as exc:
        print("conflict", str(exc).replace(chr(10), " "), flush=True)
print("done", flush=True)
if op == "loop":
    sys.stdin.readline()  # stay alive until killed, however slow or fast the loop ran
"""


def make_bundle(staging: Path, name: str) -> Path:
    """A fake bundle: the shape of a real one, a few hundred KB."""
    bundle = staging / name
    (bundle / "query_tower" / "variables").mkdir(parents=True)
    (bundle / "index").mkdir()
    (bundle / "item_ids.txt").write_text(f"{name}\n" * 100)
    (bundle / "query_tower" / "saved_model.pb").write_bytes(name.encode() * 5000)
    (bundle / "query_tower" / "variables" / "variables.data").write_bytes(os.urandom(64_000))
    (bundle / "index" / "blob.bin").write_bytes(name.encode() * 100_000)
    return bundle


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Staged bundles and two registries to copy per case: empty, and A then B promoted."""
    base = tmp_path_factory.mktemp("promotion_kills")
    staging = base / "staging"
    names = ["A", "B", "C", "D", *(f"L{n}" for n in range(LOOP_STEPS))]
    names += [f"R{n}-{k}" for n in range(5) for k in (0, 1)]
    for name in names:
        make_bundle(staging, name)
    Registry(base / "empty")
    registry = Registry(base / "AB")
    ids = {name: registry.publish(staging / name, {"created_at": name}) for name in "AB"}
    registry.promote(ids["A"])
    registry.promote(ids["B"])
    return {"base": base, "staging": staging, **ids}


def fresh_root(world, tmp_path, base: str) -> Path:
    root = tmp_path / "artifacts"
    shutil.copytree(world["base"] / base, root, symlinks=True)
    return root


def child(root: Path, world, op: str, name: str = "", point: str | None = None, **popen):
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if point:
        env[FAULT_ENV] = point
    argv = [sys.executable, "-c", CHILD, str(root), str(world["staging"]), op, name]
    return subprocess.Popen(argv, env=env, cwd=REPO, text=True, stdout=subprocess.PIPE, **popen)


def replay(history: list[dict]) -> tuple[str | None, list[str]]:
    """Production and the rollback chain as the history tells them."""
    current, chain = None, []
    for entry in history:
        if entry["event"] == "promote":
            chain = ([current, *chain] if current else chain)[:CHAIN_LIMIT]
        else:
            chain = chain[1:]
        current = entry["bundle_id"]
    return current, chain


def check_after_kill(root: Path, world, allowed: set | None, retry: list[str]) -> list[str]:
    """Every invariant an operator relies on after a kill; the broken ones, in words."""
    problems = []
    registry = Registry(root)
    try:
        production = registry.production()
        chain = (registry.pointer() or {}).get("chain", [])
        listed = {b["bundle_id"] for b in registry.bundles()}
        if allowed is not None and production not in allowed:
            problems.append(f"production {production} is neither the state before nor after")
        if production is not None:
            if production not in listed or not registry.verify(production):
                problems.append(f"production {production} is not a complete, verified bundle")
            registry.production_dir()
        if replay(registry.history()) != (production, chain):
            problems.append(f"history {registry.history()} disagrees with the pointer")
        registry.gc(older_than_s=0)
        debris = [
            p
            for sub in ("", "/bundles")
            for p in registry.fs.ls(registry.root + sub, detail=False)
            if p.rsplit("/", 1)[-1].startswith((TMP_BUNDLE, TMP_POINTER))
        ]
        if debris or {b["bundle_id"] for b in registry.bundles()} != listed:
            problems.append(f"gc left {debris} or removed a complete bundle")
        # The retry: the interrupted publish (and any the child began) succeeds and verifies.
        for name in retry:
            bundle_id = registry.publish(world["staging"] / name, {"created_at": name})
            if not registry.verify(bundle_id):
                problems.append(f"republished {name} does not verify")
        c = registry.publish(world["staging"] / "C", {"created_at": "C"})
        registry.promote(c, reason="retry", expected=registry.production())
        d = registry.publish(world["staging"] / "D", {"created_at": "D"})
        registry.promote(d, reason="next run", expected=c)
        if replay(registry.history()) != (d, registry.pointer()["chain"]):
            problems.append(f"after the retry, history {registry.history()} misses a step")
        if production == c:
            expected = [c, *chain]
        else:
            expected = [c, *([production, *chain] if production else [])]
        restored = []
        while True:
            try:
                restored.append(registry.rollback()["bundle_id"])
            except PipelineError as exc:
                if "no previous production bundle" not in str(exc):
                    raise
                break
            if not registry.verify(restored[-1]):
                problems.append(f"rolled back to {restored[-1]}, which does not verify")
        if restored != expected[:CHAIN_LIMIT]:
            problems.append(f"rollback restored {restored}, expected {expected}")
        pointer = registry.pointer()
        if replay(registry.history()) != (pointer["bundle_id"], pointer["chain"]):
            problems.append("after the retry and the rollbacks, history disagrees with the pointer")
    except Exception as exc:  # noqa: BLE001 - any failure here is a broken invariant
        problems.append(f"{type(exc).__name__}: {exc}")
    return problems


def record(tally, case: str, problems: list[str]) -> None:
    outcome = tally.record(
        "promotion_kills", case, "data_lost" if problems else "handled", "; ".join(problems)
    )
    assert outcome == "handled", problems


PROMOTE_POINTS = list(FAULT_POINTS)
ROLLBACK_POINTS = [p for p in FAULT_POINTS if not p.startswith("publish.")]


@pytest.mark.parametrize("base", ["empty", "AB"])
@pytest.mark.parametrize("point", PROMOTE_POINTS)
def test_kill_during_publish_and_promote(world, tmp_path, tally, base, point):
    root = fresh_root(world, tmp_path, base)
    proc = child(root, world, "publish", "C", point)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"{point} was never reached"
    before = world["B"] if base == "AB" else None
    allowed = {before, content_hash(world["staging"] / "C")[:16]}
    record(tally, f"publish+promote/{base}/{point}", check_after_kill(root, world, allowed, ["C"]))


@pytest.mark.parametrize("point", ROLLBACK_POINTS)
def test_kill_during_rollback(world, tmp_path, tally, point):
    root = fresh_root(world, tmp_path, "AB")
    proc = child(root, world, "rollback", "", point)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"{point} was never reached"
    allowed = {world["A"], world["B"]}
    record(tally, f"rollback/{point}", check_after_kill(root, world, allowed, []))


@pytest.fixture(scope="module")
def loop_duration(world, tmp_path_factory):
    """Seconds the loop child needs after it is ready (measured unkilled, once)."""
    root = tmp_path_factory.mktemp("loop") / "artifacts"
    shutil.copytree(world["base"] / "AB", root)
    proc = child(root, world, "loop", stdin=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "ready"
    start = time.monotonic()
    assert proc.stdout.readline().strip() == "done"
    duration = time.monotonic() - start
    proc.communicate("\n", timeout=60)
    assert proc.returncode == 0
    return duration


@pytest.mark.parametrize("seed", range(RANDOM_KILLS))
def test_kill_at_a_random_moment(world, tmp_path, tally, loop_duration, seed):
    root = fresh_root(world, tmp_path, "AB")
    proc = child(root, world, "loop", stdin=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(random.Random(seed).uniform(0.0, 0.95 * loop_duration))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    retry = [f"L{n}" for n in range(LOOP_STEPS)]
    problems = check_after_kill(root, world, None, retry)
    chain = Registry(root).pointer()["chain"]  # after the retry's rollbacks: the bottom, A
    if Registry(root).production() != world["A"] or chain:
        problems.append(f"rollbacks ended at {Registry(root).production()}, not the first bundle")
    record(tally, f"random/{seed}", problems)


@pytest.mark.parametrize("round_", range(5))
def test_two_promotions_race_and_exactly_one_wins(world, tmp_path, tally, round_):
    """Both gated against B, both promote at once: one wins, the other is refused."""
    root = fresh_root(world, tmp_path, "AB")
    procs = [child(root, world, "race", f"R{round_}-{k}", stdin=subprocess.PIPE) for k in (0, 1)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
        assert proc.stdout.readline().strip() == "published"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [proc.communicate(timeout=60)[0].splitlines()[0] for proc in procs]
    winners = [line.split()[1] for line in outputs if line.startswith("won ")]
    conflicts = [line for line in outputs if line.startswith("conflict ")]
    registry = Registry(root)
    problems = []
    if len(winners) != 1 or len(conflicts) != 1:
        problems.append(f"expected one winner and one conflict, got {outputs}")
    else:
        message = conflicts[0]
        if f"champion {world['B']}" not in message or winners[0] not in message:
            problems.append(f"the conflict does not name the champion and the winner: {message}")
        if "Re-run" not in message:
            problems.append(f"the conflict does not say what to do: {message}")
        if registry.production() != winners[0] or not registry.verify(winners[0]):
            problems.append(f"production is {registry.production()}, the winner {winners[0]}")
        promotions = [e["bundle_id"] for e in registry.history() if e["event"] == "promote"]
        if promotions != [world["A"], world["B"], winners[0]]:
            problems.append(f"history promotions {promotions}")
        if registry.rollback()["bundle_id"] != world["B"]:
            problems.append("rollback after the race does not restore the champion")
    record(tally, f"cas-race/{round_}", problems)
