"""Replay a multi-day retraining loop through the real Airflow DAG.

The synthetic world is generated once; the landing directory starts with all but the last
`days` daily partitions, then for each simulated day the next partition lands and
`airflow dags test two_tower_retrain` runs on it (training warm-starts from the champion the
previous day promoted). A table and a PNG plot show metrics, gate decisions and durations.

    python -m pipelines.simulate --days 3        (make simulate DAYS=3 sets up Airflow first)

Needs the Airflow environment of `make run` (AIRFLOW_HOME, TTR_DATA_ROOT, artifact root).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pipelines.config import DeploymentSettings
from pipelines.errors import PipelineError
from pipelines.layout import RunLayout, RunSummary, runs_dir


def simulate(days: int, epochs: int, preset: str = "small", seed: int = 7) -> list[dict]:
    from pipelines.synthetic import generate

    settings = DeploymentSettings.from_env()
    root = settings.data_root / "simulation"
    full, landing = root / "full", root / "landing"
    if not (full / "items.parquet").exists():
        generate(full, preset=preset, seed=seed)
    partitions = sorted((full / "interactions").iterdir())
    if not 1 <= days < len(partitions) - 3:
        raise SystemExit(f"--days must be between 1 and {len(partitions) - 4} for preset {preset}")
    if landing.exists():
        shutil.rmtree(landing)
    (landing / "interactions").mkdir(parents=True)
    for name in ("items.parquet", "users.parquet"):
        shutil.copy2(full / name, landing / name)
    shutil.copytree(full / "_truth", landing / "_truth")
    first = len(partitions) - days
    for part in partitions[:first]:
        shutil.copytree(part, landing / "interactions" / part.name)
    runs = runs_dir(settings.load_config().data.artifact_root)
    rows = []
    for part in partitions[first:]:
        shutil.copytree(part, landing / "interactions" / part.name)
        day = part.name.removeprefix("dt=")
        logical = f"{day}T23:00:00+00:00"
        conf = {"source": "simulation/landing", "epochs": epochs}
        runs.mkdir(parents=True, exist_ok=True)
        before = set(runs.iterdir())
        started = time.perf_counter()
        result = subprocess.run(
            ["airflow", "dags", "test", "two_tower_retrain", logical, "--conf", json.dumps(conf)],
            capture_output=True, text=True,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        log_path = root / f"dags-test-{day}.log"
        log_path.write_text(result.stdout + result.stderr)
        new = sorted(set(runs.iterdir()) - before)  # this day's run directory
        run_dir = new[-1] if new else runs / "missing"
        rows.append(_row(day, run_dir, seconds, result.returncode, log_path))
        print(_format_row(rows[-1]), flush=True)
    _write(rows, root)
    return rows


def _row(day: str, run_dir: Path, seconds: float, returncode: int, log_path: Path) -> dict:
    row = {"day": day, "run_dir": str(run_dir), "seconds": round(seconds, 1), "log": str(log_path)}
    layout = RunLayout(run_dir)
    try:
        summary = RunSummary.read(layout) if returncode == 0 else None
    except PipelineError:  # no summary.json: the DAG run did not finish
        summary = None
    if summary is None:
        return {**row, "decision": f"DAG run failed (exit {returncode})"}
    metrics = json.loads(layout.metrics.read_text())
    primary = metrics["eval"]["primary_metric"]
    for name in ("challenger", "champion", "popularity", "oracle"):
        row[name] = metrics[name][primary] if name in metrics else None
    row.update(primary=primary, decision=summary.decision, bundle=summary.production_bundle)
    return row


def _format_row(r: dict) -> str:
    def f(v):
        return "-" if v is None else f"{v:.4f}"

    return (
        f"| {r['day']} | {f(r.get('challenger'))} | {f(r.get('champion'))} | "
        f"{f(r.get('popularity'))} | {f(r.get('oracle'))} | {r['decision']} | "
        f"{r.get('bundle') or '-'} | {r['seconds']:.0f} |"
    )


HEADER = (
    "| day | challenger | champion | popularity | oracle | decision | production bundle | s |\n"
    "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |"
)


def _write(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = "\n".join([HEADER, *(_format_row(r) for r in rows)])
    (out / "simulation.md").write_text(table + "\n")
    (out / "simulation.json").write_text(json.dumps(rows, indent=2))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    days = [r["day"][5:] for r in rows]
    for name in ("challenger", "champion", "popularity", "oracle"):
        values = [r.get(name) for r in rows]
        if any(v is not None for v in values):
            ax.plot(
                days, [float("nan") if v is None else v for v in values], marker="o", label=name
            )
    for i, r in enumerate(rows):
        ax.annotate(r["decision"].split(" ")[0], (i, r.get("challenger") or 0), fontsize=7,
                    textcoords="offset points", xytext=(0, 6), ha="center")  # fmt: skip
    ax.set_title(f"{rows[0].get('primary', 'recall@100')} per day")
    ax.set_xlabel("day")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    bx.bar(days, [r["seconds"] for r in rows])
    bx.set_title("DAG run duration (s)")
    bx.set_xlabel("day")
    fig.tight_layout()
    fig.savefig(out / "simulation.png")
    plt.close(fig)
    print(f"\n{table}\n\ntable: {out / 'simulation.md'}; plot: {out / 'simulation.png'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--preset", default="small", choices=["small", "medium"])
    args = parser.parse_args(argv)
    print(HEADER, flush=True)
    rows = simulate(args.days, args.epochs, args.preset)
    return 0 if all("failed" not in r["decision"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
