"""Validation results in one shape, whether a rule was broken while reading or by a GX expectation.

`ValidationReport` renders a human summary (what the CLI prints and alerts carry), a JSON file
and an HTML index that links the Great Expectations pages.
"""

from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One rule applied to one table (or file).

    Attributes:
        table: "interactions", "items", "users" or "partitions".
        file: the file the failure is in ("<n files>" when rows come from many files).
        column: the column the rule is about, or None for table/file-level rules.
        rule: the rule in words, thresholds included.
        check: the GX expectation type, or "read" for problems found while parsing.
        success: whether the rule held.
        failed: rows (or lines, partitions) breaking it.
        total: rows the rule was evaluated on (0 when unknown).
        samples: a few offending rows with their location.
    """

    table: str
    file: str
    column: str | None
    rule: str
    check: str
    success: bool
    failed: int = 0
    total: int = 0
    samples: tuple[str, ...] = ()

    @property
    def failed_share(self) -> float:
        return self.failed / self.total if self.total else 0.0


@dataclasses.dataclass
class ValidationReport:
    """Everything one validation run found.

    Attributes:
        source: the validated directory; format: its format.
        interval: the data interval checked, as ISO strings, or None.
        now: the moment "not in the future" was judged against (ISO).
        results: every check, passed or failed.
        report_dir: where the JSON/HTML reports were written, or None.
    """

    source: str
    format: str
    interval: tuple[str, str] | None
    now: str
    rows: int
    results: list[CheckResult]
    report_dir: str | None = None
    title: str = "Raw data validation"
    row_noun: str = "interactions"

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.success]

    @property
    def html_path(self) -> str | None:
        return str(Path(self.report_dir) / "index.html") if self.report_dir else None

    def summary(self) -> str:
        """A human summary: verdict, then each failed rule with file, column, counts and samples."""
        verdict = "PASSED" if self.success else "FAILED"
        head = (
            f"{self.title} {verdict}: {self.source} (format {self.format}, "
            f"{self.rows:,} {self.row_noun}, {len(self.results)} checks, "
            f"{len(self.failures)} failed)"
        )
        lines = [head]
        if self.interval:
            lines.append(f"  data interval: [{self.interval[0]}, {self.interval[1]})")
        for r in self.failures:
            where = f"{r.file}" + (f", column '{r.column}'" if r.column else "")
            share = f" ({_percent(r.failed_share)} of {r.total:,})" if r.total else ""
            lines.append(f"  ✗ [{r.table}] {where}: {r.rule} — {r.failed:,} failing{share}")
            lines.extend(f"      {s}" for s in r.samples)
        if self.report_dir:
            lines.append(f"  report: {self.html_path}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "format": self.format,
            "interval": self.interval,
            "now": self.now,
            "rows": self.rows,
            "success": self.success,
            "results": [dataclasses.asdict(r) for r in self.results],
        }

    def write(self, report_dir: str | Path, gx_pages: dict[str, str]) -> None:
        """Write `validation.json`, `summary.txt`, the GX pages and an `index.html` linking them.

        Args:
            report_dir: directory to write into (created).
            gx_pages: table name -> full HTML page rendered by Great Expectations.
        """
        out = Path(report_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.report_dir = str(out)
        for table, page in gx_pages.items():
            (out / f"gx_{table}.html").write_text(page, encoding="utf-8")
        (out / "validation.json").write_text(
            json.dumps(self.to_dict(), indent=2, default=str) + "\n"
        )
        (out / "summary.txt").write_text(self.summary() + "\n", encoding="utf-8")
        (out / "index.html").write_text(self._index_html(gx_pages), encoding="utf-8")

    def _index_html(self, gx_pages: dict[str, str]) -> str:
        rows = []
        for r in sorted(self.results, key=lambda r: (r.success, r.table)):
            status = "pass" if r.success else "FAIL"
            samples = "<br>".join(html.escape(s) for s in r.samples)
            rows.append(
                f"<tr class='{status.lower()}'><td>{status}</td><td>{html.escape(r.table)}</td>"
                f"<td>{html.escape(r.file)}</td><td>{html.escape(r.column or '')}</td>"
                f"<td>{html.escape(r.rule)}</td><td>{r.failed:,}</td><td>{r.total:,}</td>"
                f"<td><small>{samples}</small></td></tr>"
            )
        links = " · ".join(f"<a href='gx_{t}.html'>{html.escape(t)}</a>" for t in gx_pages)
        verdict = "PASSED" if self.success else "FAILED"
        return f"""<!doctype html><html><head><meta charset="utf-8">
<title>{html.escape(self.title)} {verdict}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}
table{{border-collapse:collapse}}tr.fail{{background:#fdd}}tr.pass{{background:#efe}}</style></head>
<body><h1>{html.escape(self.title)}: {verdict}</h1>
<p>Source <code>{html.escape(self.source)}</code> (format {html.escape(self.format)}),
{self.rows:,} {html.escape(self.row_noun)}, judged at {html.escape(self.now)}.</p>
<p>Great Expectations pages: {links or "none"}</p>
<table><tr><th>status</th><th>table</th><th>file</th><th>column</th><th>rule</th>
<th>failing</th><th>evaluated</th><th>samples</th></tr>
{"".join(rows)}</table></body></html>
"""


def _percent(share: float) -> str:
    return "<0.01%" if 0 < share < 0.0001 else f"{share:.2%}"
