"""Where a run keeps its artifacts, and the one schema of its `summary.json`.

    <artifact_root>/runs/<run_id>/
        raw_report/      raw-data checks (HTML, JSON)
        snapshot/        the source as read once and validated (checksummed; every later step
                         and retry reads this, never the source)
        raw/ features/   the feature job's input (snapshot as of `features.as_of`) and output
                         (+ features_report/)
        model/           training output (the selected weights: what evaluation measures);
                         index/, serving_state/ (one file per user shard), popular_items.txt
        model_final/     with train.final_fit: the selected weights trained on with the held-out
                         interactions too (what ships); same layout, its own index and state
        evaluation/      metrics.json, report.md, recall_at_k.png, gate.json, gate.md
        bundle/          the staged bundle (what promotion publishes): the shipped model, its
                         evaluation/, and with a final fit evaluated/ (model/ without
                         checkpoints and logs: what later runs re-evaluate as the champion)
        summary.json     `RunSummary`: what the run decided and what production serves after it
    <artifact_root>/landing/<preset>/   the synthetic world generated for runs without a source

`RunLayout` names the paths of a run directory and `ModelLayout` those of a model directory
(a training output, a bundle, or a bundle's `evaluated/`); nothing else spells them.

These are local paths. An artifact root that is a URL (`s3://`, `gs://`, `memory://`) is
refused here (`local_root`), never turned into a local directory named after it: the steps
work on a local staging copy of its runs (`pipelines.artifacts.ArtifactRoot`). A `file://`
URL is the local directory it names.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipelines.errors import PipelineError
from pipelines.formats.store import is_remote, open_root, scheme_of
from pipelines.schema import FEATURES_MANIFEST

RUNS = "runs"
LANDING = "landing"
EVALUATED = "evaluated"  # in a bundle: the selected weights its evaluation measured
# Left out of a bundle: what training needs to resume, not what serving reads.
TRAINING_ONLY = ("checkpoints", "logs")
# An evaluation directory's files (pipelines.evaluation and pipelines.gate write them).
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
PLOT_FILE = "recall_at_k.png"
GATE_JSON = "gate.json"
GATE_MD = "gate.md"
APPROVAL_JSON = "approval.json"  # a person's answer to the approval request (orchestration)


def local_root(artifact_root: str | os.PathLike) -> Path:
    """The local directory of an artifact root: a path as given, or a `file://` URL's path.

    Raises:
        PipelineError: the root is an object-store URL (work on it through
            `pipelines.artifacts.ArtifactRoot`), or a URL that lost a '/' to pathlib.
    """
    text = os.fspath(artifact_root)
    if is_remote(text):
        raise PipelineError(
            f"artifact root {text} is a URL, not a local directory: its runs are worked on in "
            "a local staging copy (pipelines.artifacts.ArtifactRoot), never in a directory "
            "named after the URL"
        )
    open_root(text)  # refuses `gs:/bucket` (a URL that went through pathlib)
    if not scheme_of(text):
        return Path(text)
    url = urlsplit(text)
    if url.netloc not in ("", "localhost"):  # file://artifacts would be the current directory
        raise PipelineError(
            f"artifact root {text}: a file URL names an absolute path, file:///{url.netloc}..."
        )
    return Path(unquote(url.path))


def runs_dir(artifact_root: str | os.PathLike) -> Path:
    """`<artifact_root>/runs`: one directory per run id (a local root; see `local_root`)."""
    return local_root(artifact_root) / RUNS


def features_manifest(features_dir: str | Path) -> Path:
    """The manifest of a feature job's output directory (window, counts, splits, hashes)."""
    return Path(features_dir) / FEATURES_MANIFEST


def landing_dir(artifact_root: str | os.PathLike, preset: str) -> Path:
    """`<artifact_root>/landing/<preset>`: the synthetic world runs without a source read (a
    local root; see `local_root`)."""
    return local_root(artifact_root) / LANDING / preset


@dataclasses.dataclass(frozen=True)
class ModelLayout:
    """The files of a model directory: `model/`, `model_final/`, a bundle or its `evaluated/`."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def train_manifest(self) -> Path:
        return self.root / "train_manifest.json"

    @property
    def query_tower(self) -> Path:
        """The query-tower SavedModel."""
        return self.root / "query_tower"

    @property
    def logs(self) -> Path:
        """TensorBoard logs (training only; not bundled)."""
        return self.root / "logs"

    @property
    def trained_cuts(self) -> Path:
        """Per user, the end of the interactions the weights trained on (`tfrs_models.lineage`)."""
        return self.root / "trained_cuts.parquet"

    @property
    def item_embeddings(self) -> Path:
        return self.root / "item_embeddings.npy"

    @property
    def item_ids(self) -> Path:
        return self.root / "item_ids.txt"

    @property
    def index(self) -> Path:
        return self.root / "index"

    @property
    def index_manifest(self) -> Path:
        return self.index / "index_manifest.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def evaluation(self) -> Path:
        """In a bundle: the evaluation of the run that published it."""
        return self.root / "evaluation"

    @property
    def evaluated(self) -> Path:
        """In a bundle shipped after a final fit: the selected weights its evaluation measured."""
        return self.root / EVALUATED

    def is_trained(self) -> bool:
        """Training finished here (its manifest is written last)."""
        return self.train_manifest.is_file()


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """Every path under one run directory (`<artifact_root>/runs/<run_id>/`).

    Build it with `RunLayout.for_run(artifact_root, run_id)` for a run id (checked), or
    `RunLayout(directory)` for a directory a person named (`--run-dir`).
    """

    run_dir: Path

    def __post_init__(self):
        if ":/" in os.fspath(self.run_dir):  # a URL (or one pathlib mangled): never local
            local_root(self.run_dir)
        object.__setattr__(self, "run_dir", Path(self.run_dir))

    @classmethod
    def for_run(cls, artifact_root: str | Path, run_id: str) -> RunLayout:
        """The layout of run `run_id` under `artifact_root`.

        Raises:
            PipelineError: the run id is not a plain directory name, or `artifact_root` is
                not local (`local_root`).
        """
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise PipelineError(f"run id {run_id!r} must be a plain name (no '/', not hidden)")
        return cls(runs_dir(artifact_root) / run_id)

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def raw_report(self) -> Path:
        return self.run_dir / "raw_report"

    @property
    def snapshot(self) -> Path:
        return self.run_dir / "snapshot"

    @property
    def raw(self) -> Path:
        return self.run_dir / "raw"

    @property
    def features(self) -> Path:
        return self.run_dir / "features"

    @property
    def features_manifest(self) -> Path:
        return features_manifest(self.features)

    @property
    def features_report(self) -> Path:
        return self.run_dir / "features_report"

    @property
    def model(self) -> Path:
        return self.run_dir / "model"

    @property
    def model_final(self) -> Path:
        return self.run_dir / "model_final"

    @property
    def evaluation(self) -> Path:
        return self.run_dir / "evaluation"

    @property
    def metrics(self) -> Path:
        return self.evaluation / METRICS_FILE

    @property
    def report(self) -> Path:
        return self.evaluation / REPORT_FILE

    @property
    def gate_json(self) -> Path:
        return self.evaluation / GATE_JSON

    @property
    def gate_md(self) -> Path:
        return self.evaluation / GATE_MD

    @property
    def approval(self) -> Path:
        return self.evaluation / APPROVAL_JSON

    @property
    def bundle(self) -> Path:
        return self.run_dir / "bundle"

    @property
    def summary(self) -> Path:
        return self.run_dir / "summary.json"

    def shipped_model(self) -> Path:
        """The model directory the run ships: `model_final/` when it had a final fit, else
        `model/`."""
        final = ModelLayout(self.model_final)
        return final.root if final.is_trained() else self.model


def evaluated_weights_dir(served_dir: str | Path) -> Path:
    """The weights of a served directory that may be re-evaluated or warm-started from.

    A bundle shipped after a final fit keeps its selected weights in `evaluated/`: they trained
    only before its own cuts, while the served weights also trained on its eval period (which
    a later run's eval period overlaps). Other directories are their own evaluated weights.
    """
    evaluated = ModelLayout(served_dir).evaluated
    return evaluated if ModelLayout(evaluated).is_trained() else Path(served_dir)


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What a run decided, written to `<run_dir>/summary.json` by `run` and by the DAG.

    Attributes:
        run_id: the run's id (its directory name).
        run_dir: the run directory (on an object-store artifact root, its URL).
        champion: the production bundle the run was evaluated and gated against (None: none).
        decision: the gate's decision line.
        promoted: whether this run's bundle was published and made production.
        production_bundle: the bundle production serves after the run (None: none).
        report: the evaluation report (`evaluation/report.md`).
        gate_report: the gate report (`evaluation/gate.md`).
        steps: each step's result by step name (validate_raw, features, train, index,
            evaluate, gate, promote) when one process ran them (`run`); the DAG's tasks pass
            theirs through XCom and leave this empty.
        usage: each step's wall time and peak memory by step name (`pipelines.resources`;
            `run` only).
    """

    run_id: str
    run_dir: str
    champion: str | None
    decision: str
    promoted: bool
    production_bundle: str | None
    report: str
    gate_report: str
    steps: dict[str, dict] = dataclasses.field(default_factory=dict)
    usage: dict[str, dict] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(
        cls,
        layout: RunLayout,
        *,
        champion: str | None,
        decision: str,
        promoted: bool,
        production_bundle: str | None,
        steps: dict[str, dict] | None = None,
        location: str | None = None,
        usage: dict[str, dict] | None = None,
    ) -> RunSummary:
        """The summary of the run in `layout` (its id, directory and report paths from there).

        Args:
            location: where the run directory is kept when `layout` is a local copy of it
                (`<artifact_root URL>/runs/<id>`); its paths are then said under it.
        """

        def at(path: Path) -> str:
            if location is None:
                return str(path)
            return f"{location.rstrip('/')}/{path.relative_to(layout.run_dir).as_posix()}"

        return cls(
            run_id=layout.run_id, run_dir=location or str(layout.run_dir), champion=champion,
            decision=decision, promoted=promoted, production_bundle=production_bundle,
            report=at(layout.report), gate_report=at(layout.gate_md), steps=steps or {},
            usage=usage or {},
        )  # fmt: skip

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def write(self, layout: RunLayout) -> Path:
        """Write `summary.json` into the run directory; returns its path."""
        layout.summary.write_text(json.dumps(self.to_dict(), indent=2, default=str))
        return layout.summary

    @classmethod
    def read(cls, layout: RunLayout) -> RunSummary:
        """The run's `summary.json`.

        Raises:
            PipelineError: it is missing or not a run summary.
        """
        try:
            data = json.loads(layout.summary.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise PipelineError(f"{layout.summary}: not a readable run summary ({exc})") from None
