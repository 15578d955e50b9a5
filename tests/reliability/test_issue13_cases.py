"""Issue 13 cases that had no test of their own (or only a weak one), each named after the case.

The rest of issue 13's cases are covered elsewhere (tests/pipelines/sources/test_readers.py,
tests/data_checks/test_raw_checks.py, tests/pipelines/registry/test_registry.py, tests/reliability/*,
tests/docker, tests/tfrs_models); these fill the gaps: the run's own promotion is a
compare-and-swap against the champion it was gated on, `run_pipeline` holds the artifact root's
lock, a features retry after a late write reads only the validated snapshot, the CLI's exit
codes (gate rejection, disk full without a small filesystem, `promote --bundle ../../..`),
`--no-resume` reaching training, and the smoke test naming items outside the catalog instead
of a length mismatch that did not happen.

Every case is recorded in the reliability tally (suite "issue13_cases"). All fast: no training,
no Beam; the heavy steps are replaced only where the case is about the CLI around them.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ContractSource, tree_digest

from pipelines.cli import main
from pipelines.config import load_config
from pipelines.errors import DataValidationError, PipelineError, PromotionConflict
from pipelines.layout import RunLayout, RunSummary
from pipelines.registry import Registry

SUITE = "issue13_cases"


def config(root: Path, source: Path | None = None):
    data = {"artifact_root": str(root)}
    if source is not None:
        data["source"] = str(source)
    return load_config(env={}, overrides={"data": data})


def staging_bundle(where: Path, payload: str) -> Path:
    where.mkdir(parents=True)
    (where / "item_ids.txt").write_text(payload)
    (where / "weights.bin").write_bytes(payload.encode() * 100)
    return where


# -- item 5: promotion without compare-and-swap (the run's own promote step) -------------------


def evaluated_run_dir(run_dir: Path, payload: str) -> Path:
    """What the promote step reads from a run: the model, evaluation, features manifest."""
    staging_bundle(run_dir / "model", payload)
    (run_dir / "evaluation").mkdir()
    (run_dir / "evaluation" / "metrics.json").write_text(
        json.dumps({"challenger": {"recall@100": 0.4}})
    )
    (run_dir / "features").mkdir()
    window = {"history_start": 0, "window_end": 86_400}
    (run_dir / "features" / "manifest.json").write_text(
        json.dumps({"window_epoch_s": window, "window": {k: str(v) for k, v in window.items()}})
    )
    return run_dir


def test_promotion_without_compare_and_swap_run_gated_on_x_never_replaces_y(tmp_path, tally):
    """A run gated against champion X must not replace Y, promoted meanwhile by another run."""
    from pipelines.steps.promote import promote

    root = tmp_path / "artifacts"
    cfg = config(root)
    registry = Registry(root)
    x = registry.publish(staging_bundle(tmp_path / "x", "x"), {"run_id": "x"})
    registry.promote(x, reason="champion when the run started")
    y = registry.publish(staging_bundle(tmp_path / "y", "y"), {"run_id": "y"})
    registry.promote(y, reason="another run, promoted 4 s earlier")
    run_dir = evaluated_run_dir(tmp_path / "runs" / "late", "challenger")
    decision = {"promote": True, "decision": "promote: beats the champion"}
    try:
        promote(cfg, RunLayout(run_dir), decision, "late", champion_id=x)
        outcome = "data_lost"  # Y replaced by a model never compared with it
    except PromotionConflict as exc:
        named = x in str(exc) and y in str(exc) and "Re-run" in str(exc)
        outcome = "clear_error" if named else "crash"
    assert tally.record(SUITE, "promotion_without_cas", outcome, registry.production()) == (
        "clear_error"
    )
    assert registry.production() == y and registry.verify(y)
    assert [e["bundle_id"] for e in registry.history()] == [x, y]
    # Gated against the current production, the same run promotes.
    out = promote(cfg, RunLayout(run_dir), decision, "late", champion_id=y)
    assert out["promoted"] and registry.production() == out["bundle_id"] not in (x, y)


def test_promotion_without_compare_and_swap_first_run_gated_on_no_champion(tmp_path, tally):
    """A run that started with no production must not replace one promoted meanwhile."""
    from pipelines.steps.promote import promote

    root = tmp_path / "artifacts"
    registry = Registry(root)
    other = registry.publish(staging_bundle(tmp_path / "o", "o"), {"run_id": "o"})
    registry.promote(other)
    run_dir = evaluated_run_dir(tmp_path / "runs" / "first", "first")
    with pytest.raises(PromotionConflict, match="gated against champion none"):
        promote(config(root), RunLayout(run_dir), {"promote": True, "decision": "promote"},
                "first", None)  # fmt: skip
    ok = registry.production() == other
    assert tally.record(SUITE, "promotion_cas_no_champion", "handled" if ok else "data_lost") == (
        "handled"
    )


def test_promotion_conflict_in_run_exits_1_with_the_reason(tmp_path, monkeypatch, capsys, tally):
    import pipelines.steps.pipeline

    def conflicted(cfg, run_id, **kwargs):
        raise PromotionConflict(
            "registry r: not promoting b: this run was gated against champion x, but "
            "production is now y", bundle_id="b", expected="x", current="y",
        )  # fmt: skip

    monkeypatch.setattr(pipelines.steps.pipeline, "run_pipeline", conflicted)
    rc = main(["run", "--artifact-root", str(tmp_path), "--run-id", "r1", "--engine", "local"])
    out = capsys.readouterr()
    ok = rc == 1 and "run r1 not promoted" in out.out and "production is now y" in out.out
    assert tally.record(SUITE, "run_promotion_conflict_exit", "clear_error" if ok else "crash",
                        out.out + out.err) == "clear_error"  # fmt: skip


# -- item 5: runs collide (run_pipeline itself holds the artifact root's lock) -----------------


def test_runs_collide_second_run_pipeline_on_one_root_is_refused(tmp_path, capsys, tally):
    """`run_pipeline` (not only `run_lock` on its own) refuses a second run on the same
    artifact root, before it touches any run directory or the registry."""
    from pipelines.steps.pipeline import run_lock, run_pipeline

    root = tmp_path / "artifacts"
    source = ContractSource(tmp_path / "source", days=2, rows_per_day=5).write()
    with run_lock(root, "first-run"):
        with pytest.raises(PipelineError, match=r"in use by run first-run \(pid \d+\)"):
            run_pipeline(config(root, source), "second-run", engine="local")
        rc = main(["run", "--artifact-root", str(root), "--source", str(source),
                   "--run-id", "third-run", "--engine", "local"])  # fmt: skip
    err = capsys.readouterr().err
    untouched = not (root / "runs").exists() and not (root / "registry").exists()
    ok = rc == 2 and "one run at a time per artifact root" in err and "Traceback" not in err
    outcome = "clear_error" if ok and untouched else "data_lost" if not untouched else "crash"
    assert tally.record(SUITE, "runs_collide_same_root", outcome, err[-300:]) == "clear_error"


# -- item 1: features retries re-read the source ------------------------------------------------


def test_rows_written_after_validation_passed_never_reach_a_features_retry(tmp_path, tally):
    """Validation passes, then a late writer adds a partition (weight -1e9, an unknown item):
    the features step and each of its retries read the validated snapshot, not the source."""
    from pipelines.steps.validate import take_snapshot, validated_snapshot

    source = ContractSource(tmp_path / "source", days=10, rows_per_day=60)
    root = source.write()
    cfg = config(tmp_path / "artifacts", root)
    layout = RunLayout(tmp_path / "run")
    report = take_snapshot(cfg, layout)
    assert report.success, report.summary()
    late = source.days_frames[source.last_day].head(20).assign(item_id="smuggled", weight=-1e9)
    path = source.partition_file(source.last_day).with_name("part-late.csv")
    late.assign(timestamp=late["timestamp"].map(lambda t: t.isoformat())).to_csv(path, index=False)
    attempts = [validated_snapshot(cfg, layout) for _ in range(2)]  # + a retry
    leaked = [
        "smuggled" in set(s.interactions["item_id"]) or s.interactions["weight"].min() < 0
        for s in attempts
    ]
    outcome = "data_lost" if any(leaked) else "handled"
    assert tally.record(SUITE, "late_rows_features_retry", outcome, str(leaked)) == "handled"
    assert [len(s.interactions) for s in attempts] == [report.rows] * 2 == [600, 600]


# -- item 8: `run` exits 0 when the gate rejects --------------------------------------------------


def fake_summary(run_dir: Path, promote: bool) -> RunSummary:
    layout = RunLayout(run_dir)
    layout.evaluation.mkdir(parents=True)
    layout.report.write_text("# evaluation\n")
    layout.gate_md.write_text("# gate\n")
    decision = "promote" if promote else "reject: recall@100 below the champion"
    return RunSummary.of(
        layout, champion="c" * 16, decision=decision, promoted=promote,
        production_bundle="d" * 16 if promote else "c" * 16,
        steps={"gate": {"promote": promote, "decision": decision},
               "promote": {"promoted": promote, "decision": decision}},
    )  # fmt: skip


@pytest.mark.parametrize(
    "gate_promotes, extra, expected",
    [(False, [], 1), (False, ["--dry-run"], 0), (True, [], 0)],
    ids=["gate_rejects", "gate_rejects_dry_run", "gate_promotes"],
)
def test_run_exits_0_when_the_gate_rejects(
    tmp_path, monkeypatch, capsys, tally, gate_promotes, extra, expected
):
    """Exit 1 means "a step said no": the gate keeping production is one (a scheduler or CI
    must see it), a dry run is not (it promises not to promote), a promotion is success."""
    import pipelines.steps.pipeline

    seen = {}

    def finished(cfg, run_id, **kwargs):
        seen["dry_run"] = cfg.gate.dry_run
        return fake_summary(tmp_path / "runs" / run_id, gate_promotes)

    monkeypatch.setattr(pipelines.steps.pipeline, "run_pipeline", finished)
    rc = main(["run", "--artifact-root", str(tmp_path), "--run-id", "r1", "--engine", "local",
               *extra])  # fmt: skip
    out = capsys.readouterr().out
    assert seen["dry_run"] is bool(extra)
    case = "run_exit_code_" + ("promoted" if gate_promotes else "rejected") + "".join(extra)
    if rc == expected:
        outcome = "clear_error" if expected == 1 else "handled"
    else:
        outcome = "silent_accept" if rc == 0 else "crash"
    assert tally.record(SUITE, case, outcome, f"rc={rc}") in ("clear_error", "handled")
    assert "run r1: " in out and "production bundle" in out


# -- item 7: disk full exit code (without mounting a small filesystem) ----------------------------


def test_disk_full_exit_code_is_2_in_features_without_a_tmpfs(tmp_path, monkeypatch, capsys,
                                                             tally):  # fmt: skip
    """ENOSPC while the validated snapshot is written (the real code path up to the write):
    exit 2 (environment), "disk full" and the file, no traceback, the source untouched.
    tests/reliability/test_run_faults.py does this on a real full tmpfs where it can mount one."""
    import pipelines.features.snapshot as snapshot

    source = ContractSource(tmp_path / "source", days=10, rows_per_day=30).write()
    before = tree_digest(source)

    def full(writer, *args, **kwargs):
        (writer.out / "items.parquet").write_bytes(b"PAR1 half")  # what a full disk leaves
        raise OSError(errno.ENOSPC, "No space left on device", str(writer.out / "items.parquet"))

    monkeypatch.setattr(snapshot.SnapshotWriter, "finish", full)
    rc = main(["features", "--source", str(source), "--run-dir", str(tmp_path / "run"),
               "--engine", "local"])  # fmt: skip
    err = capsys.readouterr().err
    ok = rc == 2 and "disk full" in err and "items.parquet" in err and "Traceback" not in err
    outcome = "handled" if ok else "crash"
    if tree_digest(source) != before:
        outcome = "data_lost"
    assert tally.record(SUITE, "disk_full_exit_code_features", outcome, err[-300:]) == "handled"
    assert not (tmp_path / "run" / "features" / "manifest.json").exists()


def test_disk_full_exit_code_is_2_in_run(tmp_path, monkeypatch, capsys, tally):
    import pipelines.steps.pipeline

    def full(cfg, run_id, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/artifacts/runs/r1/model/x")

    monkeypatch.setattr(pipelines.steps.pipeline, "run_pipeline", full)
    rc = main(["run", "--artifact-root", str(tmp_path), "--run-id", "r1", "--engine", "local"])
    err = capsys.readouterr().err
    ok = rc == 2 and "disk full (/artifacts/runs/r1/model/x)" in err and "gc" in err
    assert tally.record(SUITE, "disk_full_exit_code_run", "handled" if ok else "crash", err) == (
        "handled"
    )


# -- item 9: `promote --bundle ../../..` ----------------------------------------------------------


@pytest.mark.parametrize("bad", ["../../..", "../../../outside", "..", "0123456789abcdef\n"])
def test_promote_bundle_dot_dot_is_refused_by_the_cli(tmp_path, capsys, tally, bad):
    """The CLI path: exit 2 naming the rule, production still the registered bundle, even when
    the traversal leads to a directory that looks like a complete bundle."""
    root = tmp_path / "artifacts"
    registry = Registry(root)
    a = registry.publish(staging_bundle(tmp_path / "a", "a"), {"run_id": "a"})
    registry.promote(a)
    outside = tmp_path / "outside"  # <root>/registry/bundles/../../../outside
    staging_bundle(outside, "evil")
    (outside / "manifest.json").write_text(json.dumps(registry.manifest(a)))
    pointer = (Path(registry.root) / "production.json").read_bytes()
    rc = main(["promote", "--bundle", bad, "--artifact-root", str(root)])
    err = capsys.readouterr().err
    ok = rc == 2 and "is not a bundle id" in err and "Traceback" not in err
    unchanged = (
        registry.production() == a
        and (Path(registry.root) / "production.json").read_bytes() == pointer
    )
    outcome = "clear_error" if ok and unchanged else "data_lost" if not unchanged else "crash"
    assert tally.record(SUITE, f"promote_bundle_{bad!r}", outcome, err[-300:]) == "clear_error"


# -- item 4: no --no-resume -------------------------------------------------------------------------


@pytest.mark.parametrize("flag, resume", [([], True), (["--no-resume"], False)])
def test_no_resume_flag_reaches_run_pipeline(tmp_path, monkeypatch, tally, flag, resume):
    import pipelines.steps.pipeline

    seen = {}

    def stop(cfg, run_id, **kwargs):
        seen.update(kwargs)
        raise DataValidationError("stop here")

    monkeypatch.setattr(pipelines.steps.pipeline, "run_pipeline", stop)
    rc = main(["run", "--artifact-root", str(tmp_path), "--run-id", "r1", "--engine", "local",
               *flag])  # fmt: skip
    ok = rc == 1 and seen.get("resume") is resume
    assert tally.record(SUITE, f"no_resume_run{''.join(flag)}", "handled" if ok else "crash",
                        str(seen)) == "handled"  # fmt: skip


# -- item 3: the smoke test's misleading message, and --k 20 serving unknown items ---------------

CATALOG = [f"it{i:02d}" for i in range(12)]
END = 100 * 86_400


class _Index:
    def __init__(self, n: int):
        self.n = n

    def search(self, vectors, k, exclude=None):
        found = np.tile(np.arange(min(k, self.n)), (len(vectors), 1))
        return found, np.ones(found.shape, dtype=np.float32)


class FakeServingModel:
    """The SavedModel side of a served directory (its catalog is item_ids.txt); the state,
    the popularity fallback and `Recommender`/`smoke_test` are the real ones."""

    def __init__(self, directory):
        self.item_ids = np.array(Path(directory, "item_ids.txt").read_text().split(), dtype=object)
        self.inputs = ["user_id", "timestamp", "history_item_ids", "history_timestamps"]
        self.index = _Index(len(self.item_ids))

    def embed(self, features):
        return np.zeros((len(features["user_id"]), 4), dtype=np.float32)

    def rows(self, seen):
        return [i for i, item in enumerate(self.item_ids) if item in set(seen)]


@pytest.fixture
def served_dir(tmp_path, monkeypatch):
    """A served directory whose state `build_serving_state` built from events in which an item
    outside the catalog (first seen in the eval period) is the most popular this week."""
    import pipelines.recommend
    from pipelines.serving import build_serving_state

    monkeypatch.setattr(pipelines.recommend, "ServingModel", FakeServingModel)
    run_dir, model_dir = tmp_path / "run", tmp_path / "run" / "model"
    (run_dir / "features").mkdir(parents=True)
    (run_dir / "raw" / "interactions").mkdir(parents=True)
    model_dir.mkdir()
    (run_dir / "features" / "manifest.json").write_text(json.dumps({
        "window_epoch_s": {"history_start": 0, "window_end": END},
        "config": {"history_length": 5},
    }))  # fmt: skip
    rows = [("u1", "eval-only-item", END - 10)] * 30
    rows += [(f"u{k % 3}", item, END - 100 - k) for k, item in enumerate(CATALOG[:6])]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_parquet(
        run_dir / "raw" / "interactions" / "part-00000.parquet", index=False
    )
    (model_dir / "item_ids.txt").write_text("".join(f"{i}\n" for i in CATALOG))
    build_serving_state(run_dir, model_dir)
    return model_dir


def test_popularity_fallback_serves_items_outside_the_catalog_not_even_at_k_20(served_dir, tally):
    from pipelines.recommend import Recommender
    from pipelines.steps.gate import smoke_test

    rec = Recommender(served_dir)
    [unknown] = rec.recommend(["someone-new"], k=20)
    served = [i["item_id"] for i in unknown["items"]]
    outside = [i for i in served if i not in CATALOG]
    outcome = "silent_accept" if outside else "handled"
    assert tally.record(SUITE, "popularity_fallback_k20", outcome, str(outside)) == "handled"
    assert unknown["source"] == "popularity" and len(served) == len(CATALOG)
    assert smoke_test(served_dir) is None


def test_smoke_test_names_items_outside_the_catalog_not_a_length_mismatch(served_dir, tally):
    """A fallback that still names an unknown item (as the old ranking wrote it): the gate's
    smoke test must say so, not claim the user got the wrong number of items."""
    from pipelines.steps.gate import smoke_test

    popular = ["ghost-item", *CATALOG[:9]]  # 10 items, as many as the smoke test asks for
    (served_dir / "popular_items.txt").write_text("".join(f"{i}\n" for i in popular))
    message = smoke_test(served_dir) or ""
    clear = (
        "not in the catalog" in message and "ghost-item" in message and "popularity" in message
        and "expected" not in message
    )  # fmt: skip
    outcome = "clear_error" if clear else ("silent_accept" if not message else "crash")
    assert tally.record(SUITE, "smoke_test_message", outcome, message) == "clear_error"
    # A real shortfall is still reported as one.
    (served_dir / "popular_items.txt").write_text("".join(f"{i}\n" for i in CATALOG[:4]))
    assert smoke_test(served_dir) == (
        "user __smoke_test_unknown_user__ (popularity): 4 items, expected 10"
    )
