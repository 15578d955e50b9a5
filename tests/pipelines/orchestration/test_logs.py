"""Library output at its true level: a real process whose fd 2 is routed, written to from C level
(`os.write(2, ...)`), from Python and from a child process, then exiting without a flush."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipelines.orchestration.logs import line_level

REPO = Path(__file__).parents[3]

# What the task process of a green run writes to fd 2 (taken from a real Airflow task log).
TF_INFO = (
    "2026-11-25 23:53:48.314752: I tensorflow/core/platform/cpu_feature_guard.cc:210] This "
    "TensorFlow binary is optimized to use available CPU instructions in performance-critical "
    "operations.\nTo enable the following instructions: AVX2 AVX512F FMA, in other operations, "
    "rebuild TensorFlow with the appropriate compiler flags.\n"
)
TF_CUINIT = (
    "2026-11-25 23:53:50.179079: E external/local_xla/xla/stream_executor/cuda/cuda_platform.cc:51]"
    " failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
)
TF_WARNING = "2026-11-25 23:53:50.1: W tensorflow/core/framework/op_kernel.cc:1840] slow op\n"
TF_ERROR = "2026-11-25 23:53:51.000001: E tensorflow/core/kernels/x.cc:7] real error\n"
ABSL_INFO = "I0000 00:00:1764114828.270107   12345 cuda_executor.cc:1015] probing devices\n"
ABSL_WARNING = "W1125 23:53:48.270107 140234 saver.py:12] checkpoint is old\n"
ABSL_FATAL = "F1125 23:53:48.270107 140234 check.cc:99] Check failed: x == y\n"
BEAM_INFO = "INFO:apache_beam.runners.worker.sdk_worker:Control channel established.\n"
BEAM_WARNING = "WARNING:root:apitools not found, and bigquery client libraries are not available\n"
PY_WARNING = "/x/features.py:12: DeprecationWarning: use y\n  old(y)\n"
PLAIN = "80/80 - 8s - loss: 5917.0664\n"


@pytest.mark.parametrize(
    ("line", "level"),
    [
        (TF_INFO, logging.INFO),
        (TF_WARNING, logging.WARNING),
        (TF_ERROR, logging.ERROR),
        (TF_CUINIT, logging.INFO),  # benign on a CPU-only host
        (ABSL_INFO, logging.INFO),
        (ABSL_WARNING, logging.WARNING),
        (ABSL_FATAL, logging.CRITICAL),
        (BEAM_INFO, logging.INFO),
        (BEAM_WARNING, logging.WARNING),
        ("ERROR:apache_beam.runners.worker.sdk_worker:Error processing instruction\n", 40),
        (PY_WARNING, logging.WARNING),
        ("Traceback (most recent call last):\n", logging.ERROR),
        (PLAIN, None),
        ("ERROR is a word here\n", None),
    ],
)
def test_line_level_is_the_level_the_line_states(line, level):
    assert line_level(line.splitlines()[0])[0] == level


def test_benign_lines_carry_the_reason_they_are_info():
    level, note = line_level(TF_CUINIT.strip())
    assert level == logging.INFO and "CPU-only host" in note
    dt_string = (
        "2026-11-25 23:53:52.992583: E tensorflow/core/util/util.cc:131] oneDNN supports "
        "DT_STRING only on platforms with AVX-512. Falling back to the default Eigen-based "
        "implementation if present."
    )
    assert line_level(dt_string)[0] == logging.INFO
    # int64 tensors too (the history's distinct-item lookup, tf.unique over int64 rows)
    assert line_level(dt_string.replace("DT_STRING", "DT_INT64"))[0] == logging.INFO
    assert line_level(dt_string.replace("oneDNN supports DT_STRING", "oneDNN fails"))[0] == (
        logging.ERROR
    )


# The task process: a root handler writing JSON lines (as Airflow's does, over its socket),
# then the routing, then output on fd 2 in every way a task makes it, then a plain exit.
SCRIPT = """
import json, logging, os, subprocess, sys, warnings

class Json(logging.Handler):
    def __init__(self, path):
        super().__init__()
        self.out = open(path, "a", buffering=1)
    def emit(self, record):
        if "handler-breaks" in record.getMessage():
            try:
                raise BrokenPipeError("the log socket is closed")
            except OSError:
                self.handleError(record)  # what logging's handlers do: report on stderr
            return
        self.out.write(json.dumps({"level": record.levelname.lower(), "logger": record.name,
                                   "event": record.getMessage()}) + "\\n")

logging.basicConfig(level=logging.INFO, handlers=[Json(sys.argv[1])])

from pipelines.orchestration.logs import drain, route_library_output
route_library_output()
route_library_output()  # idempotent: a second call changes nothing
for text in LINES:
    os.write(2, text.encode())  # C level, as TensorFlow's and absl's loggers write
print("WARNING:py:from python", file=sys.stderr)
warnings.warn("use the new api", UserWarning)  # Python's own format, on sys.stderr
sys.stderr.flush()
subprocess.run([sys.executable, "-c", "import sys; print(" + repr(BEAM_CHILD) + ", file=sys.stderr)"],
               check=True)  # a child (a Beam worker) inherits the routed fd 2
logging.getLogger("great_expectations._docs_decorators").info("Skipping registering function f")
logging.getLogger("great_expectations._docs_decorators").warning("a real GX warning")
logging.getLogger("great_expectations.expectations.registry").info(
    "Multiple declarations of metric table.column_types found.")
logging.getLogger("great_expectations.expectations.registry").info("Registered expectation x")
if MODE == "broken-handler":
    os.write(2, b"E0000 00:00:1.0 1 x.cc:1] handler-breaks\\n")
if MODE == "fail":
    os.write(2, b"W0000 00:00:1.0 1 x.cc:1] just before the failure\\n")
    drain()  # then fail, as the DAG does: the task runner logs the reason
    logging.getLogger("task").error("data check failed: 3 rules")
for i in range(MANY):
    os.write(2, f"I0000 00:00:1.{i} 1 many.cc:1] line {i}\\n".encode())
os.write(2, b"W0000 00:00:2.0 1 last.cc:1] last words, no newline")  # the exit flush must still log it
"""


def run_task(tmp_path, mode="ok", many=2000) -> tuple[str, list[dict]]:
    """(what reached the old fd 2, the records logged) of one run of SCRIPT."""
    records = tmp_path / "records.jsonl"
    lines = [PLAIN, TF_INFO, TF_CUINIT, TF_WARNING, TF_ERROR, ABSL_INFO, ABSL_WARNING, BEAM_INFO,
             BEAM_WARNING, PY_WARNING]  # fmt: skip
    prelude = (
        f"LINES = {lines!r}\nBEAM_CHILD = {BEAM_WARNING.strip()!r}\n"
        f"MODE = {mode!r}\nMANY = {many}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(SCRIPT), str(records)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    if mode != "broken-handler":
        assert proc.stderr == ""  # everything went through logging, nothing to the old fd 2
    return proc.stderr, [json.loads(line) for line in records.read_text().splitlines()]


def test_every_line_on_fd2_is_logged_once_at_its_level_and_none_is_lost_at_exit(tmp_path):
    _, records = run_task(tmp_path)
    stderr = [r for r in records if r["logger"] == "stderr"]

    def of(text):  # the level of the record(s) of `text`
        (level,) = {r["level"] for r in stderr if r["event"].startswith(text.splitlines()[0])}
        return level

    assert of(TF_INFO) == "info"
    assert of(TF_CUINIT) == "info"
    assert of(TF_WARNING) == "warning"
    assert of(TF_ERROR) == "error"
    assert of(ABSL_INFO) == "info"
    assert of(ABSL_WARNING) == "warning"
    assert of(BEAM_INFO) == "info"
    assert of(BEAM_WARNING) == "warning"
    assert of(PY_WARNING) == "warning"
    assert of(PLAIN) == "info"
    assert of("WARNING:py:from python") == "warning"
    (warned,) = [r for r in stderr if "UserWarning: use the new api" in r["event"]]
    assert warned["level"] == "warning"
    # A multi-line message is one record, at the level of its first line.
    (cpu,) = [r for r in stderr if "cpu_feature_guard" in r["event"]]
    assert cpu["event"] == TF_INFO.strip()
    (cuinit,) = [r for r in stderr if "cuInit" in r["event"]]
    assert "[INFO: benign on a CPU-only host" in cuinit["event"]
    # The child's stderr came through the pipe too (twice the Beam warning: parent, child).
    assert [r["level"] for r in stderr if r["event"] == BEAM_WARNING.strip()] == ["warning"] * 2
    # Nothing lost: every one of the 2000 lines written just before exit, and the unterminated
    # last one, each exactly once.
    many = [r for r in stderr if "many.cc" in r["event"]]
    assert [r["event"].rsplit(" ", 1)[1] for r in many] == [str(i) for i in range(2000)]
    assert {r["level"] for r in many} == {"info"}
    assert stderr[-1]["event"] == "W0000 00:00:2.0 1 last.cc:1] last words, no newline"
    # Great Expectations: registration chatter gone, its warning and other info kept.
    gx = [r["event"] for r in records if r["logger"].startswith("great_expectations")]
    assert gx == ["a real GX warning", "Registered expectation x"]


def test_after_drain_the_library_output_written_before_it_is_logged(tmp_path):
    _, records = run_task(tmp_path, mode="fail", many=0)
    events = [r["event"] for r in records]
    before = events.index("W0000 00:00:1.0 1 x.cc:1] just before the failure")
    failure = events.index("data check failed: 3 rules")
    assert before < failure
    assert records[failure]["level"] == "error"
    # every line written before it is already logged when the reason is
    assert all("many.cc" not in e and "last words" not in e for e in events[:failure])
    assert len([e for e in events[:failure] if e.startswith(("2026-", "I0000", "W1125"))]) == 6


def test_when_logging_itself_fails_the_rest_goes_to_the_old_stderr_without_a_loop(tmp_path):
    stderr, records = run_task(tmp_path, mode="broken-handler", many=3)
    assert "--- Logging error ---" in stderr  # logging's own report, not fed back into logging
    assert stderr.count("--- Logging error ---") == 1
    assert "BrokenPipeError: the log socket is closed" in stderr
    # What follows the report reaches Airflow raw; nothing is lost or doubled on the way.
    logged = [r["event"] for r in records if "many.cc" in r["event"]]
    raw = [line for line in stderr.splitlines() if "many.cc" in line]
    assert sorted(logged + raw) == [f"I0000 00:00:1.{i} 1 many.cc:1] line {i}" for i in range(3)]
    # The last, unterminated line arrives once: raw when the reader saw logging's report
    # first, logged when the exit's fd swap sent that report straight to the old fd 2.
    last = [r for r in records if "last words" in r["event"]]
    assert len(last) + stderr.count("last words, no newline") == 1, (last, stderr[-500:])
