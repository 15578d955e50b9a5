"""Reading delimited text files defensively: bad bytes and malformed lines become `ReadIssue`s.

Every parsed row keeps its 1-based line number so later checks can say "ratings.csv line 812".
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.contract import ReadIssue

_SKIPPED_LINE = re.compile(r"Skipping line (\d+): (.*)")
_UNIT_SEPARATOR = "\x1f"


@dataclasses.dataclass
class TextTable:
    """Rows of one delimited file, all values as strings (missing values are NaN).

    Attributes:
        frame: one column per field.
        lines: int64 array `[len(frame)]`, the 1-based line number of each row (-1 if unknown).
        issues: malformed lines and undecodable bytes found in the file.
    """

    frame: pd.DataFrame
    lines: np.ndarray
    issues: list[ReadIssue]


def read_delimited(
    path: Path,
    *,
    table: str,
    sep: str,
    names: list[str] | None = None,
    encoding: str = "utf-8",
    quoted: bool = True,
    sample_rows: int = 5,
) -> TextTable:
    """Read a delimited file into string columns, reporting instead of crashing on bad input.

    Args:
        path: the file.
        table: contract table the file feeds ("interactions", "items", "users"), for messages.
        sep: field separator; multi-character separators (MovieLens "::") are supported.
        names: column names for headerless files; None means the first line is the header.
        encoding: "utf-8" is checked strictly (bad bytes are reported, then replaced);
            other encodings (MovieLens' latin-1) decode every byte.
        quoted: whether fields may be quoted (CSV); unquoted formats are split literally.
        sample_rows: how many offending lines to quote per issue.

    Returns:
        A `TextTable`. Lines with too many fields are left out and reported; in unquoted
        formats so are lines with too few. In quoted CSV a short line cannot be told from
        empty trailing fields, so it is kept with missing values, which the null checks report.
    """
    issues: list[ReadIssue] = []
    raw = path.read_bytes()
    text = _decode(raw, path, table, encoding, issues, sample_rows)
    if text.startswith("\ufeff"):
        text = text[1:]
    all_lines = text.split("\n")  # as written, for messages
    if all_lines and all_lines[-1] == "":
        all_lines.pop()
    written_sep = sep
    if len(sep) > 1:  # the C parser takes one-character separators only
        text = text.replace(sep, _UNIT_SEPARATOR)
        sep = _UNIT_SEPARATOR
    first_data_line = 1 if names is not None else 2
    expected = len(names) if names is not None else _header_width(all_lines, written_sep, quoted)

    bad: dict[int, str] = {}
    if not quoted:
        # Field counting is exact for unquoted formats, so catch too-few fields as well.
        counts = (
            pd.Series(all_lines[first_data_line - 1 :], dtype=object).str.count(
                re.escape(written_sep)
            )
            + 1
        )
        for offset in np.flatnonzero(counts.to_numpy() != expected):
            line_no = first_data_line + int(offset)
            bad[line_no] = f"expected {expected} fields, saw {int(counts.iloc[offset])}"
        if bad:
            keep = [line for no, line in enumerate(all_lines, start=1) if no not in bad]
            text = "\n".join(keep).replace(written_sep, sep) + "\n"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            header=None if names is not None else 0,
            names=names,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            on_bad_lines="warn",
            skip_blank_lines=False,
            quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
            engine="c",
        )
    for warning in caught:
        for match in _SKIPPED_LINE.finditer(str(warning.message)):
            bad[int(match.group(1))] = match.group(2).strip()

    lines = np.array(
        [no for no in range(first_data_line, len(all_lines) + 1) if no not in bad], dtype=np.int64
    )
    if len(lines) != len(frame):  # multi-line quoted fields: physical lines no longer map to rows
        lines = np.full(len(frame), -1, dtype=np.int64)
    if bad:
        ordered = sorted(bad)
        issues.append(
            ReadIssue(
                table=table,
                file=str(path),
                column=None,
                rule=f"every line must have {expected} '{_printable(written_sep)}'-separated fields",
                count=len(bad),
                samples=tuple(
                    f"line {no}: {bad[no]}: {_clip(all_lines[no - 1])!r}"
                    for no in ordered[:sample_rows]
                ),
            )
        )
    return TextTable(frame=frame, lines=lines, issues=issues)


def _decode(
    raw: bytes, path: Path, table: str, encoding: str, issues: list, sample_rows: int
) -> str:
    if encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
        return raw.decode(encoding)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    samples, count = [], 0
    for line_no, line in enumerate(raw.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            count += 1
            if len(samples) < sample_rows:
                samples.append(
                    f"line {line_no}: byte 0x{line[exc.start]:02x} at column {exc.start + 1}"
                )
    issues.append(
        ReadIssue(
            table=table,
            file=str(path),
            column=None,
            rule="text must be UTF-8 (bad bytes were replaced with U+FFFD)",
            count=count,
            samples=tuple(samples),
        )
    )
    return raw.decode("utf-8", errors="replace")


def _header_width(lines: list[str], sep: str, quoted: bool) -> int:
    if not lines:
        return 0
    if quoted:
        return len(next(csv.reader([lines[0]], delimiter=sep)))
    return lines[0].count(sep) + 1


def _printable(sep: str) -> str:
    return {"\t": "\\t"}.get(sep, sep)


def _clip(line: str, width: int = 80) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"
