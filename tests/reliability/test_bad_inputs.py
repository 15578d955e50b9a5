"""The bad-input matrix: corruption kinds x source formats, each run through `two-tower validate`.

Every case must be refused with exit code 1, no traceback, a message naming the file (and the
line/row, column and rule where they apply), and the input left byte-identical. Each case is
recorded in the reliability tally; good sources of every format are positive controls.
"""

from __future__ import annotations

import dataclasses
import os
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ContractSource, tree_digest

from pipelines.cli import main

NOW = "2026-06-01"
RATINGS = [  # user, movie, rating, epoch seconds (2000-2001)
    (1, 1, 5, 964982703),
    (1, 2, 3, 964982224),
    (2, 3, 4, 978300760),
    (2, 1, 2, 978300800),
    (3, 4, 1, 978301000),
    (3, 2, 4, 978302000),
    (4, 5, 3, 978303000),
    (4, 3, 5, 978304000),
]
MOVIES = [(1, "Toy Story (1995)"), (2, "Heat (1995)"), (3, "Casino (1995)")]
MOVIES += [(4, "Sabrina (1995)"), (5, "Balto (1995)")]
USERS_100K = [(1, 24, "M", "technician", "85711"), (2, 53, "F", "other", "94043")]
USERS_100K += [(3, 23, "M", "writer", "32067"), (4, 24, "M", "technician", "43537")]
GENRES = ["unknown", "Action", "Comedy", "Drama"]


def _write_lines(path: Path, lines: list[str], encoding: str = "utf-8") -> None:
    path.write_bytes("".join(f"{line}\n" for line in lines).encode(encoding))


def build_ml100k(root: Path) -> None:
    _write_lines(root / "u.data", ["\t".join(map(str, r)) for r in RATINGS])
    flags = lambda m: "|".join("1" if k == m % len(GENRES) else "0" for k in range(len(GENRES)))  # noqa: E731
    _write_lines(
        root / "u.item",
        [f"{m}|{t}|01-Jan-1995||http://imdb/{m}|{flags(m)}" for m, t in MOVIES],
        encoding="latin-1",
    )
    _write_lines(root / "u.user", ["|".join(map(str, u)) for u in USERS_100K])
    _write_lines(root / "u.genre", [f"{g}|{k}" for k, g in enumerate(GENRES)] + [""])


def build_ml1m(root: Path) -> None:
    _write_lines(root / "ratings.dat", ["::".join(map(str, r)) for r in RATINGS])
    _write_lines(root / "movies.dat", [f"{m}::{t}::Drama" for m, t in MOVIES], "latin-1")
    _write_lines(root / "users.dat", [f"{u}::M::25::4::0211{u}" for u in range(1, 5)])


def build_ml_latest(root: Path) -> None:
    _write_lines(
        root / "ratings.csv",
        ["userId,movieId,rating,timestamp"] + [f"{u},{m},{r:.1f},{t}" for u, m, r, t in RATINGS],
    )
    _write_lines(
        root / "movies.csv",
        ["movieId,title,genres"] + [f'{m},"{t}",Drama|Comedy' for m, t in MOVIES],
    )


def build_contract(fmt: str) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        ContractSource(root, days=4, rows_per_day=12, fmt=fmt).write()

    return build


LAST_DAY = "interactions/dt=2026-03-04/part-0"


@dataclasses.dataclass(frozen=True)
class Target:
    """One file of one format that a corruption is applied to."""

    name: str
    build: Callable[[Path], None]
    file: str
    table: str  # interactions | items | users | genre
    sep: str = ","
    header: bool = True
    quoted: bool = True
    encoding: str = "utf-8"
    fields: tuple[str, ...] = ()  # column of each field, in order

    def line(self, row: int) -> int:
        """1-based line of 0-based data row `row`."""
        return row + (2 if self.header else 1)


INTERACTIONS = [
    Target(
        "contract-csv", build_contract("csv"), f"{LAST_DAY}.csv", "interactions",
        fields=("user_id", "item_id", "timestamp", "event", "weight"),
    ),
    Target(
        "ml-latest", build_ml_latest, "ratings.csv", "interactions",
        fields=("user_id", "item_id", "weight", "timestamp"),
    ),
    Target(
        "ml-100k", build_ml100k, "u.data", "interactions", sep="\t", header=False,
        quoted=False, encoding="latin-1", fields=("user_id", "item_id", "weight", "timestamp"),
    ),
    Target(
        "ml-1m", build_ml1m, "ratings.dat", "interactions", sep="::", header=False,
        quoted=False, encoding="latin-1", fields=("user_id", "item_id", "weight", "timestamp"),
    ),
]  # fmt: skip
CATALOGS = [
    Target("contract-csv", build_contract("csv"), "items.csv", "items",
           fields=("item_id", "title", "genres")),
    Target("ml-latest", build_ml_latest, "movies.csv", "items",
           fields=("item_id", "title", "genres")),
    Target("ml-100k", build_ml100k, "u.item", "items", sep="|", header=False, quoted=False,
           encoding="latin-1", fields=("item_id", "title", "release_date", "video", "url",
                                       *GENRES)),
    Target("ml-1m", build_ml1m, "movies.dat", "items", sep="::", header=False, quoted=False,
           encoding="latin-1", fields=("item_id", "title", "genres")),
    Target("contract-csv", build_contract("csv"), "users.csv", "users",
           fields=("user_id", "country")),
    Target("ml-100k", build_ml100k, "u.user", "users", sep="|", header=False, quoted=False,
           encoding="latin-1", fields=("user_id", "age", "gender", "occupation", "zip")),
]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Expect:
    """What the refusal must say: rule words, and the column / line (row) when they apply."""

    rule: str | tuple[str, ...]  # words of the rule (any of several when the parse may vary)
    column: str | None = None
    line: int | None = None
    names: str | None = None  # what must be named instead of the file's basename
    row_label: str = "line"


# -- text corruptions: (target, data lines as bytes, header line or None) -> (bytes, Expect) --

ROW = 2  # the data row most corruptions hit (0-based)


def _join(target: Target, header: bytes | None, rows: list[bytes], *, end: bytes = b"\n"):
    lines = ([header] if header is not None else []) + rows
    return end.join(lines) + end


def _set_field(target: Target, row: bytes, column: str, value: bytes) -> bytes:
    sep = target.sep.encode()
    fields = row.split(sep)
    fields[target.fields.index(column)] = value
    return sep.join(fields)


def _field_rule(target: Target) -> str:
    return f"every line must have {len(target.fields)}"


def k_empty_file(t, header, rows):
    return b"", Expect("must not be empty")


def k_cr_only(t, header, rows):
    return _join(t, header, rows, end=b"\r"), Expect("classic Mac line endings", line=1)


def k_nul_byte(t, header, rows):
    rows[ROW] = rows[ROW][:1] + b"\x00" + rows[ROW][1:]
    return _join(t, header, rows), Expect("NUL bytes", line=t.line(ROW))


def k_extra_field_first_row(t, header, rows):
    rows[0] += t.sep.encode() + b"7"
    return _join(t, header, rows), Expect(
        f"{_field_rule(t)}", line=t.line(0), names=f"saw {len(t.fields) + 1}"
    )


def k_extra_field(t, header, rows):
    rows[ROW] += t.sep.encode() + b"7"
    return _join(t, header, rows), Expect(_field_rule(t), line=t.line(ROW))


def k_missing_last_field(t, header, rows):
    rows[ROW] = rows[ROW].rsplit(t.sep.encode(), 1)[0]
    if not t.quoted:
        return _join(t, header, rows), Expect(_field_rule(t), line=t.line(ROW))
    last = t.fields[-1]
    if t.table != "interactions":
        return None
    rule = "weights must not be empty" if last == "weight" else f"{last} must not be null"
    return _join(t, header, rows), Expect(rule, column=last, line=t.line(ROW))


def k_unbalanced_quote(t, header, rows):
    column = t.fields[0]
    rows[ROW] = _set_field(t, rows[ROW], column, b'"' + rows[ROW].split(t.sep.encode())[0])
    if t.quoted and b'"' in rows[ROW][1:]:  # the parser may pair it with a later quote
        either = ("quoted fields must be closed", "ids must match")
        return _join(t, header, rows), Expect(either, line=t.line(ROW))
    if t.quoted:
        return _join(t, header, rows), Expect("quoted fields must be closed", line=t.line(ROW))
    # Unquoted formats, or a line whose quotes pair up again: the id keeps the quote.
    return _join(t, header, rows), Expect("ids must match", column=column, line=t.line(ROW))


def k_bad_byte(t, header, rows):
    column = t.fields[0]
    rows[ROW] = _set_field(t, rows[ROW], column, b"\xff" + rows[ROW].split(t.sep.encode())[0])
    if t.encoding == "utf-8":
        return _join(t, header, rows), Expect("UTF-8", line=t.line(ROW))
    if t.table not in ("interactions", "items"):
        return None
    return _join(t, header, rows), Expect("ids must match", column=column, line=t.line(ROW))


def k_blank_line(t, header, rows):
    rows.insert(ROW, b"")
    if not t.quoted:
        return _join(t, header, rows), Expect(_field_rule(t), line=t.line(ROW))
    return _join(t, header, rows), Expect("lines must not be blank", line=t.line(ROW))


def k_truncated_last_line(t, header, rows):
    rows[-1] = rows[-1][: len(rows[-1].split(t.sep.encode())[0]) + len(t.sep) + 1]
    data = _join(t, header, rows)[:-1]  # no final newline either
    if not t.quoted:
        return data, Expect(_field_rule(t), line=t.line(len(rows) - 1))
    if t.table != "interactions":
        return None
    return data, Expect("must not be", line=t.line(len(rows) - 1))


def k_id_empty(t, header, rows):
    column = t.fields[0]
    rows[ROW] = _set_field(t, rows[ROW], column, b"")
    rule = f"{column} must not be null"
    return _join(t, header, rows), Expect(rule, column=column, line=t.line(ROW))


def k_id_with_space(t, header, rows):
    column = t.fields[0]
    rows[ROW] = _set_field(t, rows[ROW], column, b"u 1")
    return _join(t, header, rows), Expect("ids must match", column=column, line=t.line(ROW))


def k_id_trailing_newline(t, header, rows):
    if not t.quoted:
        return None  # an unquoted format cannot hold a newline inside a field
    column = t.fields[0]
    value = rows[ROW].split(t.sep.encode())[0]
    rows[ROW] = _set_field(t, rows[ROW], column, b'"' + value + b'\n"')
    return _join(t, header, rows), Expect("ids must match", column=column, line=t.line(ROW))


def k_duplicate_id(t, header, rows):
    if t.table == "interactions":
        rows = rows + rows  # every event twice
        return _join(t, header, rows), Expect("duplicate events")
    rows.append(rows[0])
    column = t.fields[0]
    return _join(t, header, rows), Expect("must be unique", column=column)


def k_unknown_item(t, header, rows):
    if t.table != "interactions":
        return None
    rows[ROW] = _set_field(t, rows[ROW], "item_id", b"999999")
    return _join(t, header, rows), Expect("must exist in the items", column="item_id",
                                          line=t.line(ROW))  # fmt: skip


def _timestamp(epoch: int | None, iso: str | bytes, rule: str):
    """A kind that writes one timestamp: `epoch` for MovieLens, `iso` for contract files."""

    def kind(t, header, rows):
        if t.table != "interactions":
            return None
        value = iso if t.name.startswith("contract") or epoch is None else str(epoch)
        value = value.encode() if isinstance(value, str) else value
        rows[ROW] = _set_field(t, rows[ROW], "timestamp", value)
        return _join(t, header, rows), Expect(rule, column="timestamp", line=t.line(ROW))

    return kind


k_timestamp_text = _timestamp(None, b"yesterday", "timestamps must be datetimes")
k_timestamp_1900 = _timestamp(-2208988800, "1900-01-01T00:00:00+00:00", "implausibly old")
k_timestamp_future = _timestamp(4102444800, "2100-01-01T00:00:00+00:00", "in the future")
k_timestamp_empty = _timestamp(None, b"", "timestamp must not be null")


def _weight(value: bytes, rule: str):
    def kind(t, header, rows):
        if t.table != "interactions":
            return None
        rows[ROW] = _set_field(t, rows[ROW], "weight", value)
        return _join(t, header, rows), Expect(rule, column="weight", line=t.line(ROW))

    return kind


k_weight_empty = _weight(b"", "weights must not be empty")
k_weight_text = _weight(b"five", "weights must be numbers")
k_weight_nan = _weight(b"nan", "weights must")
k_weight_inf = _weight(b"inf", "infinite")
k_weight_above = _weight(b"1e9", "must be within")
k_weight_negative = _weight(b"-1", "must be within")


def k_event_empty(t, header, rows):
    if "event" not in t.fields:
        return None
    rows[ROW] = _set_field(t, rows[ROW], "event", b"")
    return _join(t, header, rows), Expect("event must not be empty", column="event",
                                          line=t.line(ROW))  # fmt: skip


def k_header_missing_column(t, header, rows):
    if header is None:
        return None
    names = header.split(b",")
    required = {"interactions": 2 if t.name == "contract-csv" else 3, "items": 2, "users": 0}
    index = required[t.table]
    missing = t.fields[index]
    names[index] = b"something_else"
    return _join(t, b",".join(names), rows), Expect(
        f"required column '{missing}' is missing", column=missing
    )


def k_header_clash(t, header, rows):
    if header is None:
        return None
    names = header.split(b",")
    names[-1] = b" " + names[0].upper() + b" "
    return _join(t, b",".join(names), rows), Expect("column names must be unique", line=1)


def k_header_blank(t, header, rows):
    if header is None:
        return None
    return _join(t, b"", rows), Expect("first line must be the header", line=None)


def k_header_only(t, header, rows):
    if header is None or t.table == "users":
        return None
    if t.name.startswith("contract") and t.table == "interactions":
        return _join(t, header, []), Expect("at least one row", names="dt=2026-03-04")
    if t.table == "interactions":
        return _join(t, header, []), Expect("must not be empty")
    return _join(t, header, []), Expect("the items table must not be empty")


def k_binary_garbage(t, header, rows):
    rng = np.random.default_rng(len(t.file))
    return rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(), Expect("")


TEXT_KINDS = {
    name.removeprefix("k_"): fn for name, fn in list(globals().items()) if name.startswith("k_")
}


def _applies(target: Target, kind: str) -> bool:
    """Whether `kind` means anything for `target` (tried on placeholder lines)."""
    sep = target.sep.encode()
    header = b",".join(n.encode() for n in target.fields) if target.header else None
    rows = [sep.join(b"1" for _ in target.fields) for _ in range(6)]
    return TEXT_KINDS[kind](target, header, rows) is not None


# Files that share a reader code path with one already covered by every kind get the core
# kinds only, to keep the matrix fast (well under two minutes).
CORE_KINDS = {
    "empty_file", "cr_only", "nul_byte", "extra_field_first_row", "missing_last_field",
    "bad_byte", "id_empty", "id_trailing_newline", "duplicate_id", "header_clash",
    "weight_empty", "timestamp_1900",
}  # fmt: skip
CORE_ONLY = {("ml-1m", "ratings.dat"), ("ml-1m", "movies.dat"), ("ml-100k", "u.user")}


def _text_cases():
    for target in INTERACTIONS + CATALOGS:
        for kind in TEXT_KINDS:
            if (target.name, target.file) in CORE_ONLY and kind not in CORE_KINDS:
                continue
            if _applies(target, kind):
                case = f"{target.name}:{Path(target.file).name}:{kind}"
                yield pytest.param(target, kind, id=case)


# -- ML-100K u.genre, Parquet and JSONL partitions, layout problems -------------------------


def genre_case(kind: str):
    lines = {
        "bad_index": ["unknown|0", "Action|x", "Comedy|2", "Drama|3"],
        "gap": ["unknown|0", "Action|1", "Comedy|2", "Drama|5"],
        "duplicate_index": ["unknown|0", "Action|1", "Comedy|1", "Drama|3"],
        "no_separator": ["unknown|0", "Action 1", "Comedy|2", "Drama|3"],
        "empty_file": [],
        "nul_byte": ["unknown|0", "Act\x00ion|1", "Comedy|2", "Drama|3"],
    }[kind]
    line = {"bad_index": 2, "duplicate_index": 3, "no_separator": 2, "nul_byte": 2}.get(kind)
    rule = "u.genre indexes must run" if kind in ("gap", "empty_file") else "u.genre lines must"

    def corrupt(root: Path) -> Expect:
        (root / "u.genre").write_bytes("".join(f"{x}\n" for x in lines).encode("latin-1"))
        return Expect(rule, line=line)

    return build_ml100k, "u.genre", corrupt


def _parquet_frame(root: Path) -> tuple[Path, pd.DataFrame]:
    path = root / f"{LAST_DAY}.parquet"
    return path, pd.read_parquet(path)


def parquet_case(kind: str):
    def corrupt(root: Path) -> Expect:
        path, frame = _parquet_frame(root)
        raw = path.read_bytes()
        row = Expect("", row_label="row")
        if kind == "truncated":
            path.write_bytes(raw[: len(raw) // 2])
            return Expect("readable Parquet")
        if kind == "garbage":
            path.write_bytes(b"PAR1" + bytes(range(256)) * 4)
            return Expect("readable Parquet")
        if kind == "zero_bytes":
            path.write_bytes(b"")
            return Expect("readable Parquet")
        if kind == "zero_rows":
            frame.iloc[:0].to_parquet(path, index=False)
            return Expect("at least one row", names="dt=2026-03-04")
        if kind == "missing_column":
            frame.drop(columns="timestamp").to_parquet(path, index=False)
            return Expect("required column 'timestamp' is missing", column="timestamp")
        if kind == "column_clash":
            frame.assign(**{" User_ID ": frame["user_id"]}).to_parquet(path, index=False)
            return Expect("column names must be unique")
        frame = frame.astype(object)
        column, value, rule = {
            "timestamp_text": ("timestamp", "yesterday", "timestamps must be datetimes"),
            "timestamp_1900": ("timestamp", pd.Timestamp("1900-01-01", tz="UTC"), "implausibly"),
            "timestamp_future": ("timestamp", pd.Timestamp("2100-01-01", tz="UTC"), "future"),
            "id_trailing_newline": ("user_id", "us1\n", "ids must match"),
            "id_null": ("user_id", None, "user_id must not be null"),
            "id_bool": ("item_id", True, "ids must be strings or integers"),
            "weight_nan": ("weight", float("nan"), "weights must not be empty"),
            "weight_inf": ("weight", float("inf"), "infinite"),
            "weight_text": ("weight", "abc", "weights must be numbers"),
            "event_null": ("event", None, "event must not be empty"),
        }[kind]
        frame.loc[ROW, column] = value
        if column == "timestamp" and isinstance(value, str):
            frame["timestamp"] = frame["timestamp"].astype(str)
        elif column == "timestamp":
            frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        elif column == "weight":
            frame["weight"] = frame["weight"].astype(str if isinstance(value, str) else float)
        elif column == "item_id":
            frame["item_id"] = frame["item_id"].map(lambda v: v if v is True else False)
            column, rule = "item_id", rule
        frame.to_parquet(path, index=False)
        return dataclasses.replace(row, rule=rule, column=column, line=ROW)

    return build_contract("parquet"), f"{LAST_DAY}.parquet", corrupt


PARQUET_KINDS = [
    "truncated", "garbage", "zero_bytes", "zero_rows", "missing_column", "column_clash",
    "timestamp_text", "timestamp_1900", "timestamp_future", "id_trailing_newline", "id_null",
    "id_bool", "weight_nan", "weight_inf", "weight_text", "event_null",
]  # fmt: skip


def layout_case(kind: str):
    """Whole-file and directory problems of the contract layout (CSV, Parquet and JSONL)."""
    fmt = "parquet" if "parquet" in kind else "csv"
    day_dir = Path(LAST_DAY).parent

    def corrupt(root: Path) -> Expect:
        part = root / f"{LAST_DAY}.{fmt}"
        if kind == "jsonl_partition":
            frame = pd.read_csv(part)
            part.unlink()
            frame.to_json(root / day_dir / "part-0.jsonl", orient="records", lines=True)
            return Expect("must be *.parquet or *.csv", names="part-0.jsonl")
        if kind == "jsonl_beside_csv":
            pd.read_csv(part).to_json(root / day_dir / "part-1.jsonl", orient="records", lines=True)
            return Expect("must be *.parquet or *.csv", names="part-1.jsonl")
        if kind == "jsonl_beside_parquet":
            frame = pd.read_parquet(part)
            frame.to_json(root / day_dir / "part-1.jsonl", orient="records", lines=True)
            return Expect("must be *.parquet or *.csv", names="part-1.jsonl")
        if kind in ("bad_partition_name_csv", "bad_partition_name_parquet"):
            (root / day_dir).rename(root / "interactions" / "dt=2026-13-45")
            return Expect("partition directories must be named", names="dt=2026-13-45")
        if kind in ("empty_partition_csv", "empty_partition_parquet"):
            part.unlink()
            return Expect("at least one row", names="dt=2026-03-04")
        if kind in ("items_missing_csv", "items_missing_parquet"):
            (root / f"items.{fmt}").unlink()
            return Expect("the items table is required", names="items.parquet")
        raise AssertionError(kind)

    target = f"{LAST_DAY}.{fmt}"
    return build_contract(fmt), target, corrupt


LAYOUT_KINDS = [
    "jsonl_partition", "jsonl_beside_csv", "jsonl_beside_parquet", "bad_partition_name_csv",
    "bad_partition_name_parquet", "empty_partition_csv", "empty_partition_parquet",
    "items_missing_csv", "items_missing_parquet",
]  # fmt: skip


def _other_cases():
    for kind in ("bad_index", "gap", "duplicate_index", "no_separator", "empty_file", "nul_byte"):
        yield pytest.param(genre_case, kind, id=f"ml-100k:u.genre:{kind}")
    for kind in PARQUET_KINDS:
        yield pytest.param(parquet_case, kind, id=f"contract-parquet:part-0.parquet:{kind}")
    for kind in LAYOUT_KINDS:
        yield pytest.param(layout_case, kind, id=f"contract:layout:{kind}")


# -- running a case --------------------------------------------------------------------------


def run_validate(root: Path, report_dir: Path, capsys) -> tuple[int | str, str]:
    """(exit code or "exception", everything printed)."""
    capsys.readouterr()
    try:
        rc = main(
            ["validate", "--source", str(root), "--now", NOW, "--report-dir", str(report_dir)]
        )
    except BaseException:  # noqa: BLE001 (a crash is an outcome to record, not to propagate)
        out = capsys.readouterr()
        return "exception", out.out + out.err + traceback.format_exc()
    out = capsys.readouterr()
    return rc, out.out + out.err


def judge(rc, text: str, changed: bool, basename: str, expect: Expect) -> tuple[str, str]:
    """The tally outcome of one case, and what was wrong when it is not a clear error."""
    if changed:
        return "data_lost", "the input tree changed"
    if rc == "exception" or "Traceback" in text:
        return "crash", text[-1500:]
    if rc == 0:
        return "silent_accept", text[-800:]
    if rc != 1:
        return "crash", f"exit code {rc}: {text[-800:]}"
    rules = (expect.rule,) if isinstance(expect.rule, str) else expect.rule
    wanted = [expect.names or basename]
    if not any(rule in text for rule in rules):
        wanted.append(" or ".join(rules))
    if expect.column:
        wanted.append(f"column '{expect.column}'")
    if expect.line is not None:
        wanted.append(f"{expect.row_label} {expect.line}")
    missing = [w for w in wanted if w not in text]
    if missing:
        return "crash", f"message lacks {missing}: {text[-1500:]}"
    return "clear_error", ""


def check_case(case_id: str, root: Path, expect: Expect, basename: str, tmp_path, capsys, tally):
    before = tree_digest(root)
    rc, text = run_validate(root, tmp_path / "report", capsys)
    outcome, detail = judge(rc, text, tree_digest(root) != before, basename, expect)
    tally.record("bad_inputs", case_id, outcome, detail)
    assert outcome == "clear_error", f"{case_id}: {outcome}\n{detail}"


@pytest.mark.parametrize("target, kind", list(_text_cases()))
def test_bad_text_input_is_refused_clearly(target, kind, tmp_path, capsys, tally):
    root = tmp_path / "source"
    root.mkdir()
    target.build(root)
    path = root / target.file
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    header = lines.pop(0) if target.header else None
    data, expect = TEXT_KINDS[kind](target, header, lines)
    path.write_bytes(data)
    case_id = f"{target.name}:{Path(target.file).name}:{kind}"
    check_case(case_id, root, expect, Path(target.file).name, tmp_path, capsys, tally)


@pytest.mark.parametrize("factory, kind", list(_other_cases()))
def test_bad_file_or_layout_is_refused_clearly(factory, kind, tmp_path, capsys, tally):
    build, file, corrupt = factory(kind)
    root = tmp_path / "source"
    root.mkdir()
    build(root)
    expect = corrupt(root)
    case_id = f"{factory.__name__}:{kind}"
    check_case(case_id, root, expect, Path(file).name, tmp_path, capsys, tally)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_partition_file_is_refused_clearly(tmp_path, capsys, tally):
    root = tmp_path / "source"
    build_contract("csv")(root)
    part = root / f"{LAST_DAY}.csv"
    part.chmod(0)
    try:
        expect = Expect("must be readable")
        check_case("contract:layout:unreadable_file", root, expect, part.name, tmp_path, capsys,
                   tally)  # fmt: skip
    finally:
        part.chmod(0o644)


@pytest.mark.parametrize(
    "build",
    [build_contract("csv"), build_contract("parquet"), build_ml100k, build_ml1m, build_ml_latest],
    ids=["contract-csv", "contract-parquet", "ml-100k", "ml-1m", "ml-latest"],
)
def test_good_sources_still_pass(build, tmp_path, capsys):
    """Positive controls (not counted in the tally): the untouched fixtures validate."""
    root = tmp_path / "source"
    root.mkdir(exist_ok=True)
    build(root)
    rc, text = run_validate(root, tmp_path / "report", capsys)
    assert rc == 0, text


def test_header_names_with_spaces_and_case_are_read_not_ignored(tmp_path, capsys):
    """Positive control: `rating `, `Weight`, `Created_At` are the columns they look like."""
    root = tmp_path / "source"
    root.mkdir()
    build_ml_latest(root)
    ratings = root / "ratings.csv"
    ratings.write_bytes(ratings.read_bytes().replace(b"rating,", b" Rating ,", 1))
    rc, text = run_validate(root, tmp_path / "report", capsys)
    assert rc == 0, text
