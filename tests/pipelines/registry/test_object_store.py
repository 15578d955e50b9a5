"""The bundle registry on a real S3 API (moto's server on loopback) and on memory://.

Writers are real processes: one SIGKILLed while uploading, two racing to promote. Bundles are
a few small files, no TensorFlow.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fsspec
import pytest
import s3_support

from pipelines.errors import BundleIntegrityError, PipelineError
from pipelines.faults import ENV as FAULT_ENV
from pipelines.registry import Registry, content_hash

s3_server, s3_bucket = s3_support.s3_server, s3_support.s3_bucket  # the fixtures
REPO = Path(__file__).parents[3]

# A child process: `publish` (a staging directory), `promote` (publish it, then promote it
# against the production it found) or `race` (the same, waiting for the parent's "go" after
# reading the pointer; it prints what happened).
CHILD = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from pipelines.errors import PromotionConflict
from pipelines.registry import Registry

root, op, staging = sys.argv[1:4]
registry = Registry(root)
if op == "publish":
    registry.publish(staging, {{"created_at": "killed"}})
elif op == "promote":
    champion = registry.production()
    registry.promote(registry.publish(staging, {{"created_at": "c"}}), expected=champion)
elif op == "race":
    champion = registry.production()
    bundle_id = registry.publish(staging, {{"created_at": staging}})
    read_versioned = registry._pointer.read_versioned

    def read_then_wait():  # both racers hold the same pointer version before either writes
        registry._pointer.read_versioned = read_versioned  # only promote's own read waits
        found = read_versioned()
        print("read", flush=True)
        sys.stdin.readline()
        return found

    registry._pointer.read_versioned = read_then_wait
    try:
        registry.promote(bundle_id, reason="race", expected=champion, actor=f"racer-{{bundle_id}}")
        print("won", bundle_id, flush=True)
    except PromotionConflict as exc:
        print("conflict", str(exc).replace(chr(10), " "), flush=True)
"""


def make_bundle(root: Path, payload: str) -> Path:
    """A fake bundle with the shape of a real one (query_tower/, index/, item files)."""
    bundle = root / f"staging-{payload}-{uuid.uuid4().hex[:6]}"
    for rel, data in {
        "query_tower/saved_model.pb": payload.encode() * 50,
        "query_tower/variables/variables.index": b"index " + payload.encode(),
        "index/blob.bin": payload.encode() * 2000,
        "item_ids.txt": payload.encode(),
        "item_embeddings.npy": b"\x93NUMPY" + payload.encode() * 10,
    }.items():
        (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
        (bundle / rel).write_bytes(data)
    return bundle


def child(root: str, op: str, staging: Path, kill_at: str | None = None, **kwargs):
    env = None
    if kill_at:
        import os

        env = {**os.environ, FAULT_ENV: kill_at}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, root, op, str(staging)],
        env=env, stdout=subprocess.PIPE, text=True, **kwargs,
    )  # fmt: skip


@pytest.fixture
def memory_root():
    root = f"memory://reg-{uuid.uuid4().hex[:8]}"
    yield root
    fsspec.filesystem("memory").rm(root.removeprefix("memory:/"), recursive=True)


@pytest.mark.parametrize("store", ["s3", "memory"])
def test_round_trip(store, request, tmp_path):
    root = request.getfixturevalue("s3_bucket" if store == "s3" else "memory_root")
    registry = Registry(root)
    a, b = (registry.publish(make_bundle(tmp_path, p), {"created_at": p}) for p in "ab")
    assert [x["bundle_id"] for x in registry.bundles()] == [a, b]
    assert registry.manifest(a)["files"][0] == "index/blob.bin"
    registry.promote(a, reason="first", expected=None)
    registry.promote(b, reason="second", expected=a, actor="os:alice")
    assert Registry(root).production() == b  # a fresh reader (another process) sees it
    local = registry.fetch(b, tmp_path / "cache")
    assert (local / "item_ids.txt").read_text() == "b"
    assert content_hash(local) == registry.manifest(b)["content_hash"]
    assert registry.rollback(reason="undo")["bundle_id"] == a
    events = [(e["event"], e["bundle_id"], e["seq"]) for e in Registry(root).history()]
    assert events == [("promote", a, 1), ("promote", b, 2), ("rollback", a, 3)]
    # Uploaded in place (no temporary copies), the history as one object per record.
    fs, top = registry.fs, registry.root
    names = {p.removeprefix(top + "/") for p in fs.find(top)}
    assert not [n for n in names if "/.tmp-" in n or n.startswith(".")]
    assert {"production.json", "history/0000000003.json"} <= names
    assert "history.jsonl" not in names
    c = registry.publish(make_bundle(tmp_path, "c"), {"created_at": "c"})
    assert registry.prune(keep=1) == [b]  # a is production
    assert [x["bundle_id"] for x in Registry(root).bundles()] == [a, c]


@pytest.mark.parametrize(
    "kill_at", ["publish.file_copied", "publish.content_copied", "seen uploading"]
)
def test_a_publish_killed_while_uploading_is_never_complete_and_the_retry_is(
    s3_bucket, tmp_path, kill_at
):
    registry = Registry(s3_bucket)
    a = registry.publish(make_bundle(tmp_path, "a"), {"created_at": "a"})
    registry.promote(a)
    staging = make_bundle(tmp_path, "c")
    if kill_at == "seen uploading":  # SIGKILL from outside once objects show up in the bucket
        (staging / "vocab").mkdir()
        for n in range(40):  # many small objects: the upload takes a while
            (staging / "vocab" / f"part-{n:03d}.txt").write_text(f"token {n}\n")
    bundle_id = content_hash(staging)[:16]
    if kill_at == "seen uploading":
        proc = child(s3_bucket, "publish", staging)
        deadline = time.monotonic() + 30
        while not registry.fs.find(registry.bundle_path(bundle_id)):
            assert proc.poll() is None and time.monotonic() < deadline, "no upload seen"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    else:  # the process SIGKILLs itself at that point of the publish
        proc = child(s3_bucket, "publish", staging, kill_at)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"{kill_at} was never reached"
    uploaded = registry.fs.find(registry.bundle_path(bundle_id))
    assert uploaded and not any(p.endswith("manifest.json") for p in uploaded)
    assert [b["bundle_id"] for b in registry.bundles()] == [a]
    with pytest.raises(PipelineError, match=f"no complete bundle '{bundle_id}'"):
        registry.promote(bundle_id)
    assert registry.production() == a
    assert registry.publish(staging, {"created_at": "c"}) == bundle_id  # the retry uploads
    assert registry.verify(bundle_id) and registry.promote(bundle_id)["bundle_id"] == bundle_id
    assert [b["bundle_id"] for b in registry.bundles()] == [a, bundle_id]


def test_a_promoter_killed_after_the_swap_leaves_a_history_the_next_one_completes(
    s3_bucket, tmp_path
):
    registry = Registry(s3_bucket)
    a, b = (registry.publish(make_bundle(tmp_path, p), {"created_at": p}) for p in "ab")
    registry.promote(a)
    staging = make_bundle(tmp_path, "c")
    proc = child(s3_bucket, "promote", staging, "swap.replaced")
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    c = content_hash(staging)[:16]
    assert registry.production() == c and registry.verify(c)
    assert [e["bundle_id"] for e in registry.history()] == [a, c]  # c's record: the pointer's
    assert not registry.fs.exists(registry.layout.history_record(2))
    registry.promote(b, expected=c)
    records = sorted(registry.fs.find(registry.layout.history_records))
    logged = [json.loads(registry.fs.cat_file(path))["bundle_id"] for path in records]
    assert logged == [a, c, b] and registry.rollback()["bundle_id"] == c


@pytest.mark.parametrize("manifest", ["with file list", "legacy, no file list"])
def test_a_manifest_over_missing_files_is_not_complete(s3_bucket, tmp_path, manifest):
    """The old copy-then-delete failure: manifest.json present, query_tower/ never arrived."""
    registry = Registry(s3_bucket)
    staging = make_bundle(tmp_path, "a")
    a = registry.publish(staging, {"created_at": "a"})
    fs, bundle = registry.fs, registry.bundle_path(a)
    if manifest.startswith("legacy"):
        meta = registry.manifest(a)
        del meta["files"]
        fs.pipe_file(f"{bundle}/manifest.json", json.dumps(meta).encode())
    fs.rm(f"{bundle}/query_tower", recursive=True)
    fresh = Registry(s3_bucket)
    assert fresh.bundles() == []
    with pytest.raises(PipelineError, match=f"no complete bundle '{a}'"):
        fresh.promote(a)
    with pytest.raises(PipelineError, match=f"no complete bundle '{a}'"):
        fresh.fetch(a, tmp_path / "cache")
    assert fresh.production() is None
    assert fresh.publish(staging, {"created_at": "retry"}) == a  # re-uploaded, not skipped
    assert fresh.verify(a) and fresh.manifest(a)["created_at"] == "retry"
    assert fresh.promote(a)["bundle_id"] == a
    assert (fresh.fetch(a, tmp_path / "cache") / "query_tower" / "saved_model.pb").is_file()


def test_two_racing_promoters_exactly_one_wins(s3_bucket, tmp_path):
    registry = Registry(s3_bucket)
    champion = registry.publish(make_bundle(tmp_path, "champion"), {"created_at": "0"})
    registry.promote(champion)
    procs = [
        child(s3_bucket, "race", make_bundle(tmp_path, f"r{k}"), stdin=subprocess.PIPE)
        for k in (0, 1)
    ]
    for proc in procs:  # both have read the pointer: nobody has written yet
        assert proc.stdout.readline().strip() == "read"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    winners = [line.split()[1] for line in outputs if line.startswith("won ")]
    conflicts = [line for line in outputs if line.startswith("conflict ")]
    assert len(winners) == 1 and len(conflicts) == 1, outputs
    winner = winners[0]
    assert (
        "production changed while promoting" in conflicts[0]
        and f"{champion} -> {winner} by racer-{winner}" in conflicts[0]
        and "Re-run" in conflicts[0]
    ), conflicts[0]
    assert registry.production() == winner and registry.verify(winner)
    history = registry.history()
    assert [e["bundle_id"] for e in history] == [champion, winner]
    assert [e["user"] for e in history if e["bundle_id"] == winner] == [f"racer-{winner}"]
    assert registry.rollback()["bundle_id"] == champion


def test_a_tampered_object_is_refused(s3_bucket, tmp_path):
    registry = Registry(s3_bucket)
    a, b = (registry.publish(make_bundle(tmp_path, p), {"created_at": p}) for p in "ab")
    registry.promote(a)
    assert registry.fetch(b, tmp_path / "cache").is_dir()
    path = f"{registry.bundle_path(b)}/index/blob.bin"
    good = registry.fs.cat_file(path)
    registry.fs.pipe_file(path, good[:-4] + b"evil")  # same size, same file list
    assert [x["bundle_id"] for x in registry.bundles()] == [a, b] and not registry.verify(b)
    with pytest.raises(BundleIntegrityError, match=f"bundle {b}: its files hash to .* changed"):
        registry.fetch(b, tmp_path / "fresh-cache")
    assert not (tmp_path / "fresh-cache" / b).exists()  # nothing left for a later reader
    with pytest.raises(BundleIntegrityError, match=f"not promoting bundle {b}"):
        registry.promote(b)
    assert registry.production() == a


def test_urls_reach_the_right_filesystem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = Registry(f"file://{tmp_path}/artifacts")
    assert local.local and local.root == f"{tmp_path}/artifacts/registry"
    assert Path(local.layout.bundles).is_dir()
    with pytest.raises(PipelineError, match="lost a '/'.*'gs://bucket/tt'"):
        Registry(Path("gs://bucket/tt"))
    assert list(tmp_path.iterdir()) == [tmp_path / "artifacts"]  # no local gs:/ directory
