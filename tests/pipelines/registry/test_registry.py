"""The bundle registry on a local directory and on an in-memory fsspec filesystem."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fsspec
import pytest

from pipelines.errors import BundleIntegrityError, PipelineError, PromotionConflict
from pipelines.registry import Registry, RegistryLayout, content_hash


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
    with pytest.raises(PipelineError, match="no complete bundle '0123456789abcdef'"):
        registry.promote("0123456789abcdef")
    assert registry.production() == ids[0]


def test_history_records_who_and_which_airflow_run(registry, tmp_path):
    a, b = (registry.publish(make_bundle(tmp_path, p), {"created_at": p}) for p in "ab")
    registry.promote(
        a, reason="run r1: promote", airflow_run_id="manual__2026-11-25T10:00:00+00:00"
    )
    registry.promote(b, reason="hotfix", actor="os:alice")
    pointer = registry.rollback(reason="b is worse on tail items", actor="op")
    assert (pointer["user"], pointer["from"], pointer["airflow_run_id"]) == ("op", b, None)
    assert registry.pointer()["user"] == "op"
    who = [(e["event"], e["bundle_id"], e["user"], e["airflow_run_id"], e["reason"])
           for e in registry.history()]  # fmt: skip
    assert who == [
        ("promote", a, None, "manual__2026-11-25T10:00:00+00:00", "run r1: promote"),
        ("promote", b, "os:alice", None, "hotfix"),
        ("rollback", a, "op", None, "b is worse on tail items"),
    ]


def test_os_user_is_marked_as_such(monkeypatch):
    from pipelines.registry import OS_USER_PREFIX, os_user

    monkeypatch.setenv("LOGNAME", "alice")
    assert os_user() == f"{OS_USER_PREFIX}alice" == "os:alice"
    for var in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("pwd.getpwuid", lambda uid: (_ for _ in ()).throw(KeyError(uid)))
    assert os_user() == f"os:uid-{os.getuid()}"


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
        repo=str(Path(__file__).parents[3]), root=str(root), staging=str(staging)
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


def put(registry, path: str, data: bytes) -> None:
    registry.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    registry.fs.pipe_file(path, data)


def ls_names(registry, sub="bundles") -> set[str]:
    return {
        p.rstrip("/").rsplit("/", 1)[-1]
        for p in registry.fs.ls(f"{registry.root}/{sub}", detail=False)
    }


def test_promote_is_a_compare_and_swap(registry, tmp_path):
    a, b, c = (registry.publish(make_bundle(tmp_path, p), {"created_at": p}) for p in "abc")
    registry.promote(a, reason="first run", expected=None)
    with pytest.raises(PromotionConflict) as caught:
        registry.promote(b, reason="gated with no champion", expected=None)
    message = str(caught.value)
    assert "gated against champion none" in message and f"production is now {a}" in message
    assert "Re-run" in message and (caught.value.expected, caught.value.current) == (None, a)
    assert registry.production() == a
    registry.promote(b, expected=a)
    with pytest.raises(PromotionConflict, match=f"champion {a}, but production is now {b}"):
        registry.promote(c, expected=a)
    assert registry.production() == b and registry.promote(b, expected=a)["bundle_id"] == b
    with pytest.raises(PipelineError, match="is not a bundle id"):
        registry.promote(c, expected="../x")
    assert [e["bundle_id"] for e in registry.history()] == [a, b]


def test_rollback_survives_a_lost_history_append(registry, tmp_path):
    """A writer killed between the pointer swap and the history append breaks nothing."""
    a, b, c, d = (registry.publish(make_bundle(tmp_path, p), {"created_at": p}) for p in "abcd")
    for bundle_id in (a, b, c):
        registry.promote(bundle_id)
    layout = registry.layout
    if registry.local:  # history.jsonl: drop c's line
        lines = registry.fs.cat_file(layout.history).decode().splitlines(keepends=True)
        registry.fs.pipe_file(layout.history, "".join(lines[:-1]).encode())
    else:  # one object per record (object stores): drop c's
        registry.fs.rm_file(layout.history_record(3))
    assert [e["bundle_id"] for e in registry.history()] == [a, b, c]  # the pointer's record
    registry.promote(d, expected=c)
    if registry.local:
        logged = [json.loads(x)["bundle_id"] for x in registry.fs.cat_file(layout.history).splitlines()]  # fmt: skip
    else:
        logged = [json.loads(registry.fs.cat_file(layout.history_record(n)))["bundle_id"]
                  for n in (1, 2, 3, 4)]  # fmt: skip
    assert logged == [a, b, c, d]  # the next writer appended the missing record
    assert [registry.rollback()["bundle_id"] for _ in range(3)] == [c, b, a]
    with pytest.raises(PipelineError, match="no previous production bundle"):
        registry.rollback()


def test_torn_history_line_is_skipped_then_cut(tmp_path, caplog):
    registry = Registry(tmp_path / "artifacts")
    a, b, c = (registry.publish(make_bundle(tmp_path, p), {"created_at": p}) for p in "abc")
    registry.promote(a)
    registry.promote(b)
    history = Path(registry.root) / "history.jsonl"
    with history.open("ab") as f:
        f.write(b'{"event": "promote", "bundle_')  # a writer killed inside its write()
    assert [e["bundle_id"] for e in registry.history()] == [a, b]
    assert "skipping unreadable line 3" in caplog.text
    registry.promote(c)
    assert "cutting a torn last line" in caplog.text
    assert [json.loads(x)["bundle_id"] for x in history.read_text().splitlines()] == [a, b, c]


BAD_IDS = ["../../..", "..", "", "0123456789ABCDEF", "0123456789abcdef\n", "0123456789abcde",
           "0123456789abcdef0", "bundles/../x", "/etc", None]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bundle_ids_are_validated_everywhere(registry, tmp_path, bad):
    a = registry.publish(make_bundle(tmp_path, "a"), {"created_at": "a"})
    registry.promote(a)
    for call in (registry.manifest, registry.fetch, registry.verify, registry.promote,
                 registry.bundle_path, lambda x: registry.promote(a, expected=x or "")):  # fmt: skip
        with pytest.raises(PipelineError, match="is not a bundle id: ids are 16 lowercase hex"):
            call(bad)
    assert registry.production() == a
    # A pointer edited to name a path is refused too, not followed.
    registry.fs.pipe_file(
        f"{registry.root}/production.json", json.dumps({"bundle_id": bad}).encode()
    )
    with pytest.raises(PipelineError, match="is not a bundle id"):
        registry.production_dir()


def test_bundles_lists_only_complete_bundles(registry, tmp_path):
    staging = make_bundle(tmp_path, "a")
    a = registry.publish(staging, {"created_at": "a"})
    assert not (staging / "manifest.json").exists()  # publish leaves its input alone
    bundles = f"{registry.root}/bundles"
    fakes = {
        "1111111111111111": b'{"created_at": "x"}',  # no content hash
        "2222222222222222": b'{"created_at": "x", "content_ha',  # torn
        "3333333333333333": b'{"content_hash": "4444444444444444ffff"}',  # another bundle's
        ".tmp-0a0a": json.dumps(registry.manifest(a)).encode(),  # a copy in flight
    }
    for name, manifest in fakes.items():
        put(registry, f"{bundles}/{name}/item_ids.txt", b"x")
        put(registry, f"{bundles}/{name}/manifest.json", manifest)
    assert [b["bundle_id"] for b in registry.bundles()] == [a]
    for name in list(fakes)[:3]:
        with pytest.raises(PipelineError, match=f"no complete bundle '{name}'"):
            registry.promote(name)


def test_tampered_bundle_is_refused_on_load(registry, tmp_path):
    a = registry.publish(make_bundle(tmp_path, "a"), {"created_at": "a"})
    registry.promote(a)
    cache = tmp_path / "cache"
    assert registry.production_dir(cache) == registry.fetch(a, cache)
    put(registry, f"{registry.bundle_path(a)}/index/blob.bin", b"evil graph")
    if not registry.local:  # the cached copy is still good; a fresh reader sees the change
        cache = tmp_path / "other-cache"
    assert not registry.verify(a)
    with pytest.raises(BundleIntegrityError, match="changed after publishing"):
        registry.fetch(a, cache)
    with pytest.raises(BundleIntegrityError, match="Not loading it"):
        registry.production_dir(cache)


def test_the_registry_writes_only_the_paths_of_its_layout(tmp_path):
    registry = Registry(tmp_path / "artifacts")
    layout = registry.layout
    assert layout == RegistryLayout.under(str(tmp_path / "artifacts"))
    a, b = (registry.publish(make_bundle(tmp_path, p), {"created_at": p}) for p in "ab")
    registry.promote(a)
    registry.promote(b)
    registry.rollback()
    top = {str(p) for p in Path(layout.root).iterdir()}
    assert top == {layout.bundles, layout.pointer, layout.history, layout.lock}
    assert {str(p) for p in Path(layout.bundles).iterdir()} == {
        layout.bundle(a),
        layout.bundle(b),
    }
    assert Path(layout.bundle_manifest(a)).is_file()
    assert layout.temporary_bundle() != layout.temporary_bundle()
    assert layout.temporary_pointer().startswith(f"{layout.root}/.production-")


def test_a_tampered_bundle_is_never_made_production(registry, tmp_path):
    """Promote and rollback refuse a bundle every reader would refuse: production stays."""
    a, b, c = (registry.publish(make_bundle(tmp_path, p), {"created_at": p}) for p in "abc")
    registry.promote(a)
    registry.promote(b)
    put(registry, f"{registry.bundle_path(c)}/item_ids.txt", b"changed")
    with pytest.raises(BundleIntegrityError, match=f"not promoting bundle {c}: .*unchanged"):
        registry.promote(c)
    put(registry, f"{registry.bundle_path(a)}/item_ids.txt", b"changed")
    with pytest.raises(BundleIntegrityError, match=f"not restoring bundle {a}"):
        registry.rollback()
    assert registry.production() == b and len(registry.history()) == 2
    assert registry.promote(b) == registry.pointer()  # already production: nothing to check


def test_a_damaged_cached_copy_is_fetched_again(tmp_path):
    root = f"memory://reg-{uuid.uuid4().hex[:8]}"
    registry = Registry(root)
    a = registry.publish(make_bundle(tmp_path, "a"), {"created_at": "a"})
    local = registry.fetch(a, tmp_path / "cache")
    (local / "item_ids.txt").write_text("tampered in the cache")
    assert (registry.fetch(a, tmp_path / "cache") / "item_ids.txt").read_text() == "a"
    fsspec.filesystem("memory").rm(root.removeprefix("memory:/"), recursive=True)


def test_recommender_refuses_a_tampered_bundle(tmp_path):
    from pipelines.recommend import Recommender

    registry = Registry(tmp_path / "artifacts")
    a = registry.publish(make_bundle(tmp_path, "a"), {"created_at": "a"})
    (Path(registry.bundle_path(a)) / "item_ids.txt").write_text("b")
    with pytest.raises(BundleIntegrityError, match=f"bundle .*{a}: its files hash to"):
        Recommender(registry.bundle_path(a))


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_pointer_history_and_lock_have_the_bundles_file_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        registry = Registry(tmp_path / "artifacts")
        a = registry.publish(make_bundle(tmp_path, "a"), {"created_at": "a"})
        registry.promote(a)
    finally:
        os.umask(old)
    root, bundle = Path(registry.root), Path(registry.bundle_path(a))
    modes = {
        path: stat.S_IMODE(path.stat().st_mode)
        for path in (
            bundle / "item_ids.txt",
            bundle / "manifest.json",
            root / "production.json",
            root / "history.jsonl",
            root / ".lock",
        )  # fmt: skip
    }
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_failed_publish_leaves_nothing_and_the_retry_succeeds(registry, tmp_path, monkeypatch):
    """Disk full in the middle of a copy: no leftover, so the retry has the space it had."""
    staging = make_bundle(tmp_path, "a")
    calls = []

    def disk_full(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(*args, **kwargs)

    if registry.local:
        original = shutil.copyfileobj
        monkeypatch.setattr(shutil, "copyfileobj", disk_full)
    else:
        original = registry.fs.put_file
        monkeypatch.setattr(registry.fs, "put_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        registry.publish(staging, {"created_at": "a"})
    assert ls_names(registry) == set() and registry.bundles() == []
    monkeypatch.undo()
    a = registry.publish(staging, {"created_at": "a"})
    assert registry.verify(a) and [b["bundle_id"] for b in registry.bundles()] == [a]


def test_leftovers_of_a_killed_publish_do_not_block_the_retry(registry, tmp_path):
    staging = make_bundle(tmp_path, "a")
    bundle_id = content_hash(staging)[:16]
    bundles = f"{registry.root}/bundles"
    put(registry, f"{bundles}/.tmp-{uuid.uuid4().hex}/item_ids.txt", b"a")
    put(registry, f"{bundles}/{bundle_id}/item_ids.txt", b"a")  # no manifest yet
    assert registry.bundles() == []
    assert registry.publish(staging, {"created_at": "a"}) == bundle_id
    assert registry.verify(bundle_id)
    assert [b["bundle_id"] for b in registry.bundles()] == [bundle_id]


def test_gc_removes_old_debris_only(registry, tmp_path):
    a, b = (registry.publish(make_bundle(tmp_path, p), {"created_at": p}) for p in "ab")
    registry.promote(a)
    registry.promote(b)
    bundles = f"{registry.root}/bundles"
    debris = ["bundles/.tmp-old", "bundles/7777777777777777", ".production-old"]
    put(registry, f"{bundles}/.tmp-old/index/blob.bin", b"x")
    put(registry, f"{bundles}/7777777777777777/item_ids.txt", b"x")
    put(registry, f"{registry.root}/.production-old", b"{")
    registry.fs.rm(f"{registry.bundle_path(b)}/manifest.json")  # production, yet damaged
    assert registry.gc(older_than_s=3600) == []  # all of it could be a publish in flight
    if registry.local:
        old = time.time() - 7200
        for rel in debris:
            for path in [Path(registry.root, rel), *Path(registry.root, rel).rglob("*")]:
                os.utime(path, (old, old))
        put(registry, f"{bundles}/.tmp-young/item_ids.txt", b"x")
        assert registry.gc(older_than_s=3600) == sorted(debris)
        assert registry.gc(older_than_s=0) == ["bundles/.tmp-young"]
    else:
        assert registry.gc(older_than_s=0) == sorted(debris)
    assert ls_names(registry) == {a, b} and registry.production() == b
    assert registry.verify(a) and ".lock" not in registry.gc(older_than_s=0)
