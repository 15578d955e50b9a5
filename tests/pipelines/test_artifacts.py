"""`pipelines.artifacts`: run directories of a URL artifact root worked on in local staging
copies (pull only what changed, push with the markers last), a URL never turned into a local
directory, `file://` exactly a local root; the alert incident book and the Two-tower view on a
URL root. `memory://` is fsspec's in-process object store (no rename, no lock, like S3)."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from pathlib import Path

import fsspec
import pytest

from pipelines.artifacts import MARKERS, ArtifactRoot, Sync, staging_copy
from pipelines.errors import PipelineError
from pipelines.layout import RunLayout, RunSummary, landing_dir, runs_dir
from pipelines.orchestration import alerts, views


@pytest.fixture
def url(tmp_path, monkeypatch):
    """A fresh `memory://` root; staging copies under tmp_path (TTR_STAGING_DIR)."""
    monkeypatch.setenv("TTR_STAGING_DIR", str(tmp_path / "staging"))
    name = f"memory://h4-{uuid.uuid4().hex[:8]}/tt"
    yield name
    fs, root = fsspec.core.url_to_fs(name)
    fs.rm(root.split("/tt")[0], recursive=True)


def host(url: str, tmp_path: Path, name: str) -> ArtifactRoot:
    """The root as another host sees it: its own staging copy."""
    return ArtifactRoot(url, staging_dir=tmp_path / name)


def remote_files(root: ArtifactRoot, run: str) -> dict[str, bytes]:
    base = f"{root.root}/runs/{run}/"
    return {p.split(base, 1)[1]: root.fs.cat_file(p) for p in root.fs.find(base)}


def test_a_step_pushes_and_another_host_pulls_only_what_changed(url, tmp_path):
    a, b = host(url, tmp_path, "a"), host(url, tmp_path, "b")
    assert a.local != b.local and not a.local.is_relative_to(Path.cwd())
    with a.synced_run("r1") as layout:  # a step on host a
        (layout.model / "query_tower").mkdir(parents=True)
        (layout.model / "query_tower" / "saved_model.pb").write_bytes(b"graph")
        (layout.model / "item_ids.txt").write_text("i1\ni2\n")
        (layout.model / "train_manifest.json").write_text("{}")
    assert remote_files(a, "r1") == {
        "model/query_tower/saved_model.pb": b"graph", "model/item_ids.txt": b"i1\ni2\n",
        "model/train_manifest.json": b"{}",
    }  # fmt: skip

    run = "runs/r1"
    assert set(b.pull(run).copied) == set(remote_files(a, "r1"))
    assert b.pull(run).copied == () and b.push(run).copied == ()  # nothing changed anywhere

    layout_a = a.run_layout("r1")
    (layout_a.model / "item_ids.txt").write_text("i1\ni2\ni3\n")
    (layout_a.model / "query_tower" / "saved_model.pb").unlink()
    assert a.push(run) == Sync(("model/item_ids.txt",), ("model/query_tower/saved_model.pb",))
    pulled = b.pull(run)
    assert pulled.copied == ("model/item_ids.txt",)
    assert pulled.deleted == ("model/query_tower/saved_model.pb",)
    model_b = b.run_layout("r1").model
    assert (model_b / "item_ids.txt").read_text() == "i1\ni2\ni3\n"
    assert not (model_b / "query_tower" / "saved_model.pb").exists()

    (model_b / "item_ids.txt").write_text("edited here, never pushed")  # the store wins a pull
    assert b.pull(run).copied == ("model/item_ids.txt",)
    assert (model_b / "item_ids.txt").read_text() == "i1\ni2\ni3\n"


def test_a_push_removes_then_writes_markers_last(url, tmp_path, monkeypatch):
    """Cut short anywhere, a push never leaves a marker beside files it does not describe."""
    a = host(url, tmp_path, "a")
    layout = a.run_layout("r1")
    layout.model.mkdir(parents=True)
    (layout.model / "weights.bin").write_bytes(b"old")
    (layout.model / "train_manifest.json").write_text('{"epochs": 1}')
    a.push_run(layout)
    (layout.model / "weights.bin").write_bytes(b"new weights")
    (layout.model / "train_manifest.json").write_text('{"epochs": 2}')
    (layout.run_dir / "summary.json").write_text("{}")

    events = []
    for name in ("_upload", "_delete"):
        real = getattr(a, name)

        def record(relative, names, real=real, name=name):
            events.append((name, [n.rsplit("/", 1)[-1] for n in names]))
            if name == "_upload" and "weights.bin" in events[-1][1]:
                raise OSError("connection reset")  # the push dies after the data files
            return real(relative, names)

        monkeypatch.setattr(a, name, record)
    with pytest.raises(OSError, match="connection reset"):
        a.push_run(layout)
    assert events[0] == ("_delete", ["train_manifest.json"])  # the old marker goes first
    assert remote_files(a, "r1") == {"model/weights.bin": b"old"}  # not "trained"
    monkeypatch.undo()
    a.push_run(layout)
    assert remote_files(a, "r1") == {
        "model/weights.bin": b"new weights", "model/train_manifest.json": b'{"epochs": 2}',
        "summary.json": b"{}",
    }  # fmt: skip
    assert {"train_manifest.json", "summary.json"} <= set(MARKERS)


def test_a_failed_step_still_pushes_its_reports(url, tmp_path):
    a = host(url, tmp_path, "a")
    with pytest.raises(RuntimeError), a.synced_run("r1") as layout:
        layout.raw_report.mkdir(parents=True)
        (layout.raw_report / "validation.json").write_text('{"success": false}')
        raise RuntimeError("data checks failed")
    assert remote_files(a, "r1") == {"raw_report/validation.json": b'{"success": false}'}


def test_a_url_never_becomes_a_local_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for url in ("s3://bucket/tt", "gs://bucket/tt", "memory://bucket/tt"):
        for make, args in ((runs_dir, [url]), (landing_dir, [url, "small"]),
                           (RunLayout.for_run, [url, "r1"]), (RunLayout, [url])):  # fmt: skip
            with pytest.raises(PipelineError, match="URL"):
                make(*args)
    with pytest.raises(PipelineError, match="lost a '/'"):
        RunLayout(Path("gs://bucket/tt/runs/r1"))  # what `Path(artifact_root)` used to make
    with pytest.raises(PipelineError, match="URL"):
        alerts.IncidentBook(Path("s3://bucket/tt"))
    assert list(tmp_path.iterdir()) == []


def test_file_urls_are_local_roots_used_in_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TTR_STAGING_DIR", str(tmp_path / "staging"))
    plain, url = ArtifactRoot(tmp_path / "art"), ArtifactRoot(f"file://{tmp_path}/art")
    assert not plain.remote and not url.remote and plain.local == url.local == tmp_path / "art"
    with url.synced_run("r1") as layout:
        assert layout == RunLayout.for_run(tmp_path / "art", "r1")
        layout.run_dir.mkdir(parents=True)
        (layout.run_dir / "summary.json").write_text("{}")
    assert url.pull("runs/r1").copied == () and url.push("runs/r1").copied == ()
    assert not (tmp_path / "staging").exists()  # no copies of a local root
    with pytest.raises(PipelineError, match="absolute path"):
        ArtifactRoot("file://artifacts")  # not the current directory in disguise


def test_staging_copies_are_keyed_by_the_url(tmp_path):
    one, other = "s3://bucket/tt", "s3://bucket/tt2"
    assert staging_copy(one, staging_dir=tmp_path) == staging_copy(one + "/", staging_dir=tmp_path)
    assert staging_copy(one, staging_dir=tmp_path) != staging_copy(other, staging_dir=tmp_path)
    assert staging_copy(one, staging_dir=tmp_path) != staging_copy(
        one, "read", staging_dir=tmp_path
    )


def test_incident_book_on_an_object_store(url, tmp_path):
    """Conditional writes instead of a lock: a writer that got there first is read again, so
    no update is lost."""
    now = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    book = alerts.IncidentBook(url, quiet=dt.timedelta(hours=1), clock=lambda: now)
    payload = {"dag_id": "d", "kind": "task_failure", "fingerprint": "f", "text": "t",
               "run_id": "r1"}  # fmt: skip
    assert book.open(payload, "r1/train/1") == payload
    assert book.open({**payload, "run_id": "r2"}) is None  # a repeat inside the quiet period
    assert book.covers("d", "r1/train/1") and not book.covers("d", "r2/train/1")

    other = alerts.IncidentBook(url, quiet=dt.timedelta(hours=1), clock=lambda: now)
    real = book._transact
    raced = []

    def change_under_us(change):  # another process writes between our read and our write
        def racing(state):
            if not raced:
                raced.append(other.open({**payload, "kind": "data_check_failure"}))
            return change(state)

        return real(racing)

    book._transact = change_under_us
    assert book.open({**payload, "fingerprint": "g"}) is not None
    kinds = sorted((i["kind"], i["fingerprint"]) for i in other.incidents())
    assert kinds == [("data_check_failure", "f"), ("task_failure", "f"), ("task_failure", "g")]
    assert [i["fingerprint"] for i in other.resolve("d")] == ["f", "f", "g"]
    assert other.incidents() == []
    fs, root = fsspec.core.url_to_fs(url)
    assert json.loads(fs.cat_file(f"{root}/alerts/incidents.json")) == {}


def test_the_two_tower_view_reads_a_url_roots_runs(url, tmp_path):
    worker = host(url, tmp_path, "worker")
    with worker.synced_run("r1") as layout:
        layout.evaluation.mkdir(parents=True)
        layout.report.write_text("# Evaluation\n")
        layout.gate_json.write_text(json.dumps({"decision": "promote", "rules": []}))
        (layout.snapshot / "data.csv").parent.mkdir()
        (layout.snapshot / "data.csv").write_text("rows a viewer must not get\n")
        RunSummary.of(
            layout, champion=None, decision="promote", promoted=True, production_bundle=None
        ).write(layout)
    runs = views.recent_runs(url, 5)
    assert [r["run"] for r in runs] == ["r1"] and runs[0]["decision"] == "promote"
    assert runs[0]["reports"]["Evaluation report"] == "evaluation/report.md"
    page = views._run_layout(url, "r1")  # the view's own copy, reports only
    assert views.report_file(page, "evaluation/report.md").read_text() == "# Evaluation\n"
    assert page.run_dir != layout.run_dir and not page.snapshot.exists()
    with pytest.raises(views.HTTPException):
        views._run_layout(url, "r2")


def test_staged_copies_of_old_runs_are_removed_the_store_keeps_them(url, tmp_path):
    a = host(url, tmp_path, "a")
    for run in ("old", "recent"):
        with a.synced_run(run) as layout:
            layout.run_dir.mkdir(parents=True, exist_ok=True)
            (layout.run_dir / "summary.json").write_text(run)
    two_days_ago = time.time() - 2 * 86_400
    os.utime(a._state_path("runs/old"), (two_days_ago, two_days_ago))
    with a.synced_run("new"):
        pass
    assert not a.run_layout("old").run_dir.exists() and a.run_layout("recent").run_dir.exists()
    assert remote_files(a, "old") == {"summary.json": b"old"}

    local = ArtifactRoot(tmp_path / "art")  # a local root: its runs are the data itself
    local.run_layout("old").run_dir.mkdir(parents=True)
    os.utime(local.run_layout("old").run_dir, (two_days_ago, two_days_ago))
    assert local.prune_staged_runs() == [] and local.run_layout("old").run_dir.exists()
