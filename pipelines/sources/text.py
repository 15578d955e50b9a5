"""Reading delimited text files defensively and in bounded memory.

A file is read in blocks of whole lines (`BLOCK_BYTES`). Each block is checked (UTF-8, NUL
bytes, carriage returns, field counts), parsed by pandas' C parser into string columns and
handed to the caller, who types it and keeps only the typed columns: a file is never held
whole, as bytes or as text. Problems become `ReadIssue`s, never exceptions, and every parsed
row keeps its 1-based line number so later checks can say "ratings.csv line 812".
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.contract import ReadIssue, merge_issues
from pipelines.sources.normalize import canonical_names

BLOCK_BYTES = 4 * 1024 * 1024
# A quote left open may hold a block back this many blocks; then the block is cut anyway.
_MAX_CARRY_BLOCKS = 4
_HEADER_BYTES = 64 * 1024
_SKIPPED_LINE = re.compile(r"Skipping line (\d+): expected \d+ fields, saw (\d+)")
_OPEN_QUOTE = re.compile(r"EOF inside string")
_UNIT_SEPARATOR = b"\x1f"
_BOM = b"\xef\xbb\xbf"
_NEWLINE, _QUOTE, _NUL, _CR = 10, 34, 0, 13


@dataclasses.dataclass
class TextChunk:
    """Consecutive rows of one delimited file, all values as strings (missing values are NaN).

    Attributes:
        frame: one column per field.
        lines: int64 array `[len(frame)]`, the 1-based line number of each row (-1 if unknown).
    """

    frame: pd.DataFrame
    lines: np.ndarray


@dataclasses.dataclass
class TextTable:
    """All rows of one (small) delimited file; see `TextChunk`.

    Attributes:
        frame: one column per field, or None when the file could not be read at all.
        lines: int64 array `[len(frame)]` of 1-based line numbers.
        issues: malformed lines, undecodable bytes and file-level problems.
    """

    frame: pd.DataFrame | None
    lines: np.ndarray
    issues: list[ReadIssue]


class DelimitedFile:
    """A delimited text file read block by block; problems collect in `issues`.

    Args:
        path: the file.
        table: contract table the file feeds ("interactions", "items", "users"), for messages.
        sep: field separator; multi-character separators (MovieLens "::") are supported.
        names: column names for headerless files; None means the first line is the header.
        aliases: header name -> contract name, matched ignoring case and surrounding spaces.
        encoding: "utf-8" is checked strictly (bad bytes are reported, then replaced);
            other encodings (MovieLens' latin-1) decode every byte.
        quoted: whether fields may be quoted (CSV); unquoted formats are split literally.
        sample_rows: how many offending lines to quote per issue.
        block_bytes: bytes read per block (memory is a small multiple of this).

    Lines with too many fields are left out and reported; in unquoted formats so are lines with
    too few. In quoted CSV a short line cannot be told from empty trailing fields, so it is
    kept with missing values, which the null checks report.
    """

    def __init__(
        self,
        path: Path,
        *,
        table: str,
        sep: str,
        names: list[str] | None = None,
        aliases: dict[str, str] | None = None,
        encoding: str = "utf-8",
        quoted: bool = True,
        sample_rows: int = 5,
        block_bytes: int = BLOCK_BYTES,
    ):
        self.path, self.table, self.sep = Path(path), table, sep
        self.columns: list[str] | None = list(names) if names is not None else None
        self.aliases = aliases or {}
        self.encoding, self.quoted = encoding, quoted
        self.sample_rows, self.block_bytes = sample_rows, block_bytes
        self.utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8")
        self.issues: list[ReadIssue] = []
        self._usable = False  # a header (or given names) was read, so rows can follow
        self._written_sep = sep.encode(encoding)
        self._sep = self._written_sep if len(self._written_sep) == 1 else _UNIT_SEPARATOR

    @property
    def field_rule(self) -> str:
        shown = {"\t": "\\t"}.get(self.sep, self.sep)
        return f"every line must have {len(self.columns or [])} '{shown}'-separated fields"

    def chunks(self) -> Iterator[TextChunk]:
        """Yield the file's rows block by block (at least one, possibly empty, chunk when the
        file has a usable header); `issues` is complete once the iterator is exhausted."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 (closed below; a generator holds it)
        except OSError as exc:
            self._file_issue(f"the file must be readable ({exc.strerror or exc})")
            return
        yielded = False
        try:
            with handle:
                for chunk in self._chunks(handle):
                    yielded = True
                    yield chunk
        except OSError as exc:
            self._file_issue(f"the file must be readable to the end ({exc.strerror or exc})")
        if not yielded and self.columns is not None and self._usable:
            yield TextChunk(
                pd.DataFrame({c: pd.Series([], dtype=str) for c in self.columns}),
                np.zeros(0, dtype=np.int64),
            )
        self.issues = merge_issues(self.issues, self.sample_rows)

    def read(self) -> TextTable:
        """All rows at once (for small tables: catalogs, user lists)."""
        chunks = list(self.chunks())
        if not chunks:
            return TextTable(None, np.zeros(0, dtype=np.int64), self.issues)
        frame = pd.concat([c.frame for c in chunks], ignore_index=True)
        lines = np.concatenate([c.lines for c in chunks])
        return TextTable(frame, lines, self.issues)

    # -- reading ---------------------------------------------------------------------------

    def _chunks(self, handle) -> Iterator[TextChunk]:
        prefix = handle.read(_HEADER_BYTES)
        if not prefix:
            self._file_issue("the file must not be empty (it has 0 bytes)")
            return
        if self.utf8 and prefix.startswith(_BOM):
            prefix = prefix[len(_BOM) :]
        end = prefix.find(b"\n")
        first = prefix if end < 0 else prefix[:end]
        if b"\r" in first.rstrip(b"\r"):
            shown = first.split(b"\r")[0].decode(self.encoding, errors="replace")
            self._file_issue(
                "lines must end with \\n or \\r\\n, not \\r alone (classic Mac line endings); "
                "convert the file, e.g. with tr '\\r' '\\n'",
                samples=(f"line 1: {_clip(shown)!r}",),
            )
            return
        first_line = 1
        if self.columns is None:
            if end < 0 and len(prefix) == _HEADER_BYTES:
                self._file_issue(f"the header line must be shorter than {_HEADER_BYTES} bytes")
                return
            if not self._parse_header(first.rstrip(b"\r")):
                return
            prefix, first_line = prefix[end + 1 :] if end >= 0 else b"", 2
        self._usable = True
        for block, line in self._blocks(handle, prefix, first_line):
            chunk = self._parse_block(block, line)
            if chunk is not None and len(chunk.frame):
                yield chunk

    def _parse_header(self, raw: bytes) -> bool:
        if b"\x00" in raw:
            self._file_issue(
                "text must not contain NUL bytes (\\x00)", samples=("line 1 (header)",)
            )
            return False
        text = self._decode_header(raw)
        if not text.strip():
            self._file_issue("the first line must be the header (column names); it is empty")
            return False
        if self.quoted:
            fields = next(csv.reader([text], delimiter=self.sep))
        else:
            fields = text.split(self.sep)
        names, clashes = canonical_names(fields, self.aliases)
        if clashes:
            self._file_issue(
                "column names must be unique ignoring case and surrounding spaces "
                f"({'; '.join(clashes)})",
                samples=(f"line 1: {_clip(text)!r}",),
            )
            return False
        self.columns = names
        return True

    def _decode_header(self, raw: bytes) -> str:
        try:
            return raw.decode(self.encoding)
        except UnicodeDecodeError as exc:
            self._issue(
                None,
                "text must be UTF-8 (bad bytes were replaced with U+FFFD)",
                1,
                (f"line 1: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}",),
            )
            return raw.decode(self.encoding, errors="replace")

    def _blocks(self, handle, carry: bytes, line: int) -> Iterator[tuple[bytes, int]]:
        """Blocks of whole lines (each ends with "\\n") and the number of their first line."""
        while True:
            data = handle.read(self.block_bytes)
            buffer = carry + data if carry else data
            if not data:
                if buffer:
                    yield (buffer if buffer.endswith(b"\n") else buffer + b"\n"), line
                return
            cut = self._cut(buffer)
            if cut <= 0:
                carry = buffer
                continue
            block, carry = buffer[:cut], buffer[cut:]
            del buffer
            yield block, line
            line += block.count(b"\n")

    def _cut(self, buffer: bytes) -> int:
        """Where to end a block: after the last newline outside a quoted field (0: none yet)."""
        last = buffer.rfind(b"\n")
        if last < 0 or not self.quoted or b'"' not in buffer:
            return last + 1
        if len(buffer) > _MAX_CARRY_BLOCKS * self.block_bytes:
            return last + 1  # an unclosed quote; the parser reports it
        arr = np.frombuffer(buffer, dtype=np.uint8)
        ends = np.flatnonzero(arr == _NEWLINE)
        quotes_before = np.searchsorted(np.flatnonzero(arr == _QUOTE), ends)
        outside = np.flatnonzero(quotes_before % 2 == 0)
        return int(ends[outside[-1]]) + 1 if len(outside) else 0

    def _parse_block(self, block: bytes, first_line: int) -> TextChunk | None:
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
        block = self._check_utf8(block, first_line)
        if self._sep != self._written_sep:  # the C parser takes one-byte separators only
            block = block.replace(self._written_sep, self._sep)
        arr = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(arr == _NEWLINE)
        starts = np.concatenate([[0], ends[:-1] + 1])
        numbers = first_line + np.arange(len(ends), dtype=np.int64)
        bad = np.zeros(len(ends), dtype=bool)
        if b"\x00" in block:
            hit = np.unique(np.searchsorted(ends, np.flatnonzero(arr == _NUL)))
            bad[hit] = True
            self._line_issue(
                None, "text must not contain NUL bytes (\\x00)", block, starts, ends, numbers, hit
            )
        if not self.quoted:
            self._check_unquoted(arr, block, starts, ends, numbers, bad)
        del arr
        if bad.any():
            keep_bytes = np.repeat(~bad, ends - starts + 1)
            block = np.frombuffer(block, dtype=np.uint8)[keep_bytes].tobytes()
            starts, ends, numbers = _kept(starts, ends, numbers, bad)
        if not block:
            return None
        return self._to_frame(block, starts, ends, numbers)

    def _check_unquoted(self, arr, block, starts, ends, numbers, bad) -> None:
        expected = len(self.columns)
        seps = np.searchsorted(ends, np.flatnonzero(arr == self._sep[0]))
        fields = np.bincount(seps, minlength=len(ends))[: len(ends)] + 1
        wrong = np.flatnonzero((fields != expected) & ~bad)
        bad[wrong] = True
        if len(wrong):
            details = [
                f"expected {expected} fields, saw {fields[i]}" for i in wrong[: self.sample_rows]
            ]
            self._line_issue(None, self.field_rule, block, starts, ends, numbers, wrong, details)
        if b"\r" in block:
            hit = np.unique(np.searchsorted(ends, np.flatnonzero(arr == _CR)))
            hit = hit[~bad[hit]]
            bad[hit] = True
            self._line_issue(
                None,
                "lines must end with \\n or \\r\\n (a carriage return \\r inside a line)",
                block, starts, ends, numbers, hit,
            )  # fmt: skip

    def _check_utf8(self, block: bytes, first_line: int) -> bytes:
        if not self.utf8:
            return block
        try:
            block.decode("utf-8")
            return block
        except UnicodeDecodeError:
            pass
        samples, count = [], 0
        for offset, line in enumerate(block.split(b"\n")):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                count += 1
                if len(samples) < self.sample_rows:
                    samples.append(
                        f"line {first_line + offset}: byte 0x{line[exc.start]:02x} "
                        f"at column {exc.start + 1}"
                    )
        self._issue(
            None, "text must be UTF-8 (bad bytes were replaced with U+FFFD)", count, tuple(samples)
        )
        return block.decode("utf-8", errors="replace").encode("utf-8")

    def _to_frame(self, block: bytes, starts, ends, numbers) -> TextChunk | None:
        """Parse a block of kept lines; too-long lines and an unclosed quote are reported."""
        if self.quoted:  # the parser sizes rows by the first one: it must not be too long
            while len(starts):
                width, spans = self._first_record_width(block)
                if width <= len(self.columns):
                    break
                hit = np.arange(min(spans, len(starts)))
                detail = [f"expected {len(self.columns)} fields, saw {width}"]
                self._line_issue(
                    None, self.field_rule, block, starts, ends, numbers, hit[:1], detail
                )
                cut = int(ends[hit[-1]]) + 1
                block = block[cut:]
                starts, ends, numbers = (
                    starts[len(hit) :] - cut,
                    ends[len(hit) :] - cut,
                    numbers[len(hit) :],
                )
            if not len(starts):
                return None
        try:
            frame, skipped = self._read_csv(block)
        except pd.errors.ParserError as exc:
            if not (self.quoted and _OPEN_QUOTE.search(str(exc))):
                self._issue(None, f"lines must be parseable ({exc})", len(starts))
                return None
            keep = self._report_open_quote(block, starts, ends, numbers)
            if keep == 0:
                return None
            cut = int(ends[keep - 1]) + 1
            return self._to_frame(block[:cut], starts[:keep], ends[:keep], numbers[:keep])
        lines = self._row_lines(frame, skipped, block, starts, ends, numbers)
        if self.quoted:  # unquoted formats caught blank lines as one-field lines already
            blank = frame.isna().to_numpy().all(axis=1)
            if blank.any():
                where = np.flatnonzero(blank)
                self._issue(
                    None,
                    "lines must not be blank (or hold only separators)",
                    len(where),
                    tuple(f"line {lines[i]}" for i in where[: self.sample_rows]),
                )
                frame, lines = frame.loc[~blank].reset_index(drop=True), lines[~blank]
        return TextChunk(frame, lines)

    def _read_csv(self, block: bytes) -> tuple[pd.DataFrame, dict[int, int]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = pd.read_csv(
                io.BytesIO(block),
                sep=self._sep.decode("latin-1"),
                header=None,
                names=self.columns,
                index_col=False,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                on_bad_lines="warn",
                skip_blank_lines=False,
                quoting=csv.QUOTE_MINIMAL if self.quoted else csv.QUOTE_NONE,
                lineterminator="\n",
                encoding=self.encoding,
                engine="c",
            )
        skipped = {}  # 1-based record in the block -> fields seen
        for warning in caught:
            for match in _SKIPPED_LINE.finditer(str(warning.message)):
                skipped[int(match.group(1))] = int(match.group(2))
        return frame, skipped

    def _first_record_width(self, block: bytes) -> tuple[int, int]:
        """(fields, physical lines) of the block's first record, as the csv module reads it."""
        head = block[: min(len(block), _HEADER_BYTES)].decode(self.encoding, errors="replace")
        reader = csv.reader(io.StringIO(head, newline=""), delimiter=self.sep)
        try:
            return len(next(reader, [])), max(reader.line_num, 1)
        except csv.Error:
            return 0, 1

    def _report_open_quote(self, block: bytes, starts, ends, numbers) -> int:
        """Report the line whose quote never closes and everything after it; return lines kept."""
        arr = np.frombuffer(block, dtype=np.uint8)
        quotes_before_end = np.searchsorted(np.flatnonzero(arr == _QUOTE), ends, side="right")
        even_at_end = quotes_before_end % 2 == 0
        open_from = 0  # first line after the last point where all quotes were closed
        closed = np.flatnonzero(even_at_end)
        if len(closed):
            open_from = int(closed[-1]) + 1
        if open_from >= len(ends):
            open_from = len(ends) - 1
        lost = len(ends) - open_from
        self._issue(
            None,
            'quoted fields must be closed: a field opened with " never ends, so the lines from '
            "there to the end of the file cannot be read",
            lost,
            (
                f"line {numbers[open_from]}: {_clip(self._line_text(block, starts, ends, open_from))!r}"
                f" (and {lost - 1} lines after it)",
            ),
        )
        return open_from

    def _row_lines(self, frame, skipped, block, starts, ends, numbers) -> np.ndarray:
        """Line number of each parsed row; reports the records the parser skipped."""
        records = len(frame) + len(skipped)
        is_row = np.ones(records, dtype=bool)
        is_row[[r - 1 for r in skipped if r <= records]] = False
        if records == len(ends):  # one record per line: the common case
            record_line = np.arange(records)
        else:  # quoted fields spanning lines
            spans = np.ones(records, dtype=np.int64)
            extra = np.zeros(len(frame), dtype=np.int64)
            for column in frame.columns:
                extra += frame[column].str.count("\n").fillna(0).to_numpy(dtype=np.int64)
            spans[is_row] += extra
            record_line = np.concatenate([[0], np.cumsum(spans)[:-1]])
            if record_line[-1] + spans[-1] != len(ends):
                record_line = None
        if skipped:
            where = [r - 1 for r in sorted(skipped)]
            if record_line is not None:
                hit = record_line[where]
                details = [
                    f"expected {len(self.columns)} fields, saw {skipped[r]}"
                    for r in sorted(skipped)[: self.sample_rows]
                ]
                self._line_issue(None, self.field_rule, block, starts, ends, numbers, hit, details)
            else:
                self._issue(None, self.field_rule, len(skipped), ())
        if record_line is None:
            return np.full(len(frame), -1, dtype=np.int64)
        return numbers[record_line[is_row]].astype(np.int64)

    # -- issues ----------------------------------------------------------------------------

    def _line_text(self, block: bytes, starts, ends, i: int) -> str:
        raw = block[int(starts[i]) : int(ends[i])]
        if self._sep != self._written_sep:
            raw = raw.replace(self._sep, self._written_sep)
        return raw.decode(self.encoding, errors="replace")

    def _line_issue(self, column, rule, block, starts, ends, numbers, hit, details=None) -> None:
        if not len(hit):
            return
        samples = []
        for k, i in enumerate(hit[: self.sample_rows]):
            detail = f"{details[k]}: " if details else ""
            samples.append(
                f"line {numbers[i]}: {detail}{_clip(self._line_text(block, starts, ends, i))!r}"
            )
        self._issue(column, rule, len(hit), tuple(samples))

    def _issue(self, column, rule: str, count: int, samples: tuple[str, ...] = ()) -> None:
        self.issues.append(
            ReadIssue(
                table=self.table,
                file=str(self.path),
                column=column,
                rule=rule,
                count=int(count),
                samples=samples,
            )
        )

    def _file_issue(self, rule: str, samples: tuple[str, ...] = ()) -> None:
        self._issue(None, rule, 1, samples)


def read_delimited(path: Path, *, table: str, sep: str, **kwargs) -> TextTable:
    """Read a whole delimited file into string columns (see `DelimitedFile` for the arguments)."""
    return DelimitedFile(path, table=table, sep=sep, **kwargs).read()


def _kept(starts, ends, numbers, bad):
    """Line offsets after the bad lines were cut out of the block."""
    keep = ~bad
    lengths = ends[keep] - starts[keep] + 1
    new_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return new_starts, new_starts + lengths - 1, numbers[keep]


def _clip(line: str, width: int = 80) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"
