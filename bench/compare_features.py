"""Compare two feature directories record by record: the same features, bytes and manifest,
apart from features named with `--dropped` (present in the first, expected gone in the second).

    python bench/compare_features.py OLD/features NEW/features --dropped hour,day_of_week

Checks, exiting 1 on the first kind of difference (every difference is printed):
- every TFRecord file of every split holds the same number of records in the same order, and
  each new record's bytes equal the old record with the dropped features removed, serialized
  canonically (protobuf's deterministic order, the layout the feature job writes);
- `catalog.parquet`, `user_cuts.parquet` and `vocab/*.tsv` are byte-identical;
- `manifest.json` is equal once the directory prefix is ignored, except the TFRecord hashes
  (`sha256` of each shard file and `content_sha256` of each split), which change with the bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.formats.example_decoder import Example  # noqa: E402
from pipelines.formats.tfrecord import read_tfrecords  # noqa: E402

_RECORD_HASHES = {"sha256", "content_sha256"}


def compare_records(old: Path, new: Path, dropped: set[str]) -> tuple[int, list[str]]:
    """(records compared, differences) over every `*.tfrecord` below `old`."""
    problems, count = [], 0
    files = sorted(p.relative_to(old) for p in old.rglob("*.tfrecord"))
    if sorted(p.relative_to(new) for p in new.rglob("*.tfrecord")) != files:
        problems.append("the two directories hold different TFRecord files")
    for name in files:
        old_records = list(read_tfrecords(str(old / name)))
        new_records = list(read_tfrecords(str(new / name))) if (new / name).exists() else []
        if len(old_records) != len(new_records):
            problems.append(f"{name}: {len(old_records)} records before, {len(new_records)} now")
            continue
        for number, (a, b) in enumerate(zip(old_records, new_records, strict=True)):
            example = Example.FromString(a)
            if example.SerializeToString(deterministic=True) != a:
                problems.append(f"{name} record {number}: the old record is not canonical")
            features = example.features.feature
            missing = dropped - set(features)
            if missing:
                problems.append(f"{name} record {number}: old record lacks {sorted(missing)}")
            for key in dropped & set(features):
                del features[key]
            if example.SerializeToString(deterministic=True) != b:
                problems.append(f"{name} record {number}: differs beyond {sorted(dropped)}")
            count += 1
    return count, problems


def compare_files(old: Path, new: Path) -> list[str]:
    """Byte comparison of the catalog, the user cuts and the vocabularies."""
    names = ["catalog.parquet", "user_cuts.parquet", *sorted(
        str(p.relative_to(old)) for p in (old / "vocab").glob("*.tsv")
    )]  # fmt: skip
    return [f"{n}: bytes differ" for n in names if (old / n).read_bytes() != (new / n).read_bytes()]


def compare_manifests(old: Path, new: Path) -> list[str]:
    """Manifest differences other than the directory prefix and the TFRecord hashes."""

    def normalized(directory: Path):
        def walk(value, key=None):
            if isinstance(value, dict):
                return {k: walk(v, k) for k, v in value.items()}
            if isinstance(value, list):
                return [walk(v) for v in value]
            if isinstance(value, str):
                return value.replace(str(directory), "<features>")
            return value

        manifest = walk(json.loads((directory / "manifest.json").read_text()))
        for split in manifest["splits"].values():
            split.pop("content_sha256")
        for shard in manifest["shards"]:
            for entry in shard["files"].values():
                entry.pop("sha256")
        return manifest

    a, b = normalized(old), normalized(new)
    return [] if a == b else [_first_difference(a, b, "manifest.json")]


def _first_difference(a, b, where: str) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{where}.{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{where}[{i}]")
    return f"{where}: {a!r} before, {b!r} now"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="the reference features directory")
    parser.add_argument("new", type=Path, help="the features directory to check")
    parser.add_argument("--dropped", default="", help="comma-separated features removed since")
    args = parser.parse_args()
    dropped = {name for name in args.dropped.split(",") if name}
    records, problems = compare_records(args.old, args.new, dropped)
    problems += compare_files(args.old, args.new)
    problems += compare_manifests(args.old, args.new)
    for problem in problems:
        print(problem)
    print(f"{records:,} records compared; {len(problems)} differences")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
