"""The bundle registry on a local directory and on an in-memory fsspec filesystem."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fsspec
import pytest

from pipelines.errors import PipelineError
from pipelines.registry import Registry, content_hash


def make_bundle(root: Path, payload: str) -> Path:
    bundle = root / f"staging-{uuid.uuid4().hex[:8]}"
    (bundle / "index").mkdir(parents=True)
    (bundle / "item_ids.txt").write_text(payload)
    (bundle / "index" / "blob.bin").write_bytes(payload.encode() * 1000)
    return bundle


@pytest.fixture(params=["local", "memory"])
def registry(request, tmp_path):
    if request.param == "local":
        yield Registry(tmp_path / "artifacts")
        return
    root = f"memory://reg-{uuid.uuid4().hex[:8]}"
    yield Registry(root)
    fsspec.filesystem("memory").rm(root.removeprefix("memory:/"), recursive=True)


def test_publish_is_content_addressed(registry, tmp_path):
    a = registry.publish(make_bundle(tmp_path, "a"), {"created_at": "1", "run_id": "r1"})
    same = registry.publish(make_bundle(tmp_path, "a"), {"created_at": "2", "run_id": "r2"})
    b = registry.publish(make_bundle(tmp_path, "b"), {"created_at": "3", "run_id": "r3"})
    assert a == same != b and len(a) == 16
    assert [x["bundle_id"] for x in registry.bundles()] == [a, b]
    manifest = registry.manifest(a)
    assert manifest["run_id"] == "r1" and manifest["content_hash"].startswith(a)
    assert registry.verify(a) and registry.verify(b)
    local = registry.fetch(b, tmp_path / "cache")
    assert (local / "item_ids.txt").read_text() == "b"
    assert content_hash(local) == registry.manifest(b)["content_hash"]


def test_promote_rollback_and_history(registry, tmp_path):
    assert registry.production() is None
    ids = [registry.publish(make_bundle(tmp_path, p), {"created_at": p}) for p in "abc"]
    for bundle_id in ids:
        registry.promote(bundle_id, reason="test")
    assert registry.production() == ids[2] and registry.pointer()["previous"] == ids[1]
    assert registry.rollback()["bundle_id"] == ids[1]
    assert registry.pointer()["previous"] == ids[0]  # the chain continues
    assert registry.rollback()["bundle_id"] == ids[0]
    with pytest.raises(PipelineError, match="no previous production bundle"):
        registry.rollback()
    events = [(e["event"], e["bundle_id"]) for e in registry.history()]
    assert events == [("promote", ids[0]), ("promote", ids[1]), ("promote", ids[2]),
                      ("rollback", ids[1]), ("rollback", ids[0])]  # fmt: skip
    with pytest.raises(PipelineError, match="no complete bundle 'nope'"):
        registry.promote("nope")
    assert registry.production() == ids[0]


def test_prune_keeps_the_newest_and_never_production(registry, tmp_path):
    ids = [
        registry.publish(make_bundle(tmp_path, p), {"created_at": str(i)})
        for i, p in enumerate("abcdef")
    ]
    registry.promote(ids[0])
    registry.promote(ids[1])
    removed = registry.prune(keep=2)
    assert set(removed) == set(ids[2:4])
    assert {b["bundle_id"] for b in registry.bundles()} == {ids[0], ids[1], ids[4], ids[5]}


_WRITER = """
import itertools, sys, uuid
from pathlib import Path
sys.path.insert(0, {repo!r})
from pipelines.registry import Registry
reg = Registry({root!r})
staging = Path({staging!r})
for n in itertools.count():
    bundle = staging / uuid.uuid4().hex
    (bundle / "index").mkdir(parents=True)
    (bundle / "item_ids.txt").write_text(str(n))
    (bundle / "index" / "blob.bin").write_bytes(str(n).encode() * 200_000)
    reg.promote(reg.publish(bundle, {{"created_at": str(n)}}))
    reg.prune(keep=3)
    print(n, flush=True)
"""


@pytest.mark.slow
def test_killed_writer_never_leaves_a_broken_production_pointer(tmp_path):
    """SIGKILL a promote loop at random moments: production always resolves to a whole bundle."""
    root, staging = tmp_path / "artifacts", tmp_path / "staging"
    script = _WRITER.format(
        repo=str(Path(__file__).parents[2]), root=str(root), staging=str(staging)
    )
    rng = random.Random(0)
    checked = 0
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # at least one promotion done
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        registry = Registry(root)
        pointer = json.loads((root / "registry" / "production.json").read_text())
        assert registry.production() == pointer["bundle_id"]
        assert registry.verify(pointer["bundle_id"]), pointer
        checked += 1
    assert checked == 12
    # Leftover temporaries are hidden from listings and never pointed to.
    listed = {b["bundle_id"] for b in Registry(root).bundles()}
    assert all(not b.startswith(".") for b in listed)
