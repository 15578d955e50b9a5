"""Artifact roots as URLs and conditional writes, on the local disk, in memory and on a real
S3 API (moto's server on loopback: it honours If-None-Match and If-Match on PutObject)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import fsspec
import pytest
import s3_support
from fsspec.implementations.local import LocalFileSystem

from pipelines.errors import PipelineError
from pipelines.formats.store import WriteConflict, is_remote, open_root, read_versioned, write_if

s3_server, s3_bucket = s3_support.s3_server, s3_support.s3_bucket  # the fixtures


@pytest.fixture(params=["local", "memory", "s3"])
def root(request, tmp_path):
    """`(fs, root path)` of a fresh, empty artifact root on each backend."""
    if request.param == "local":
        yield open_root(tmp_path)
    elif request.param == "memory":
        url = f"memory://store-{uuid.uuid4().hex[:8]}"
        fs, top = open_root(url)
        fs.makedirs(top)
        yield fs, top
        fs.rm(top, recursive=True)
    else:
        yield open_root(request.getfixturevalue("s3_bucket"))


def test_write_if_creates_and_replaces_only_the_version_read(root):
    fs, top = root
    path = f"{top}/pointer.json"
    assert read_versioned(fs, path) == (None, None)
    write_if(fs, path, b"v1", None)  # must not exist: it did not
    with pytest.raises(WriteConflict, match="pointer.json: someone else wrote it first"):
        write_if(fs, path, b"other", None)  # must not exist: it does now
    data, v1 = read_versioned(fs, path)
    assert data == b"v1" and v1 is not None
    write_if(fs, path, b"v2", v1)
    with pytest.raises(WriteConflict):
        write_if(fs, path, b"stale", v1)  # replaces v1, but v2 is there
    data, v2 = read_versioned(fs, path)
    assert data == b"v2" and v2 != v1
    fs.rm_file(path)
    with pytest.raises(WriteConflict):
        write_if(fs, path, b"resurrected", v2)  # deleted meanwhile
    assert read_versioned(fs, path) == (None, None)
    if isinstance(fs, LocalFileSystem):  # no temporary or lock file left beside it
        assert [p.name for p in Path(top).iterdir()] == []


def test_of_concurrent_writers_of_one_version_exactly_one_wins(root):
    fs, top = root
    path = f"{top}/pointer.json"
    write_if(fs, path, b"v0", None)
    _, token = read_versioned(fs, path)
    barrier, outcomes = threading.Barrier(6), []

    def writer(n: int) -> None:
        barrier.wait()
        try:
            write_if(fs, path, f"writer {n}".encode(), token)
            outcomes.append(f"won {n}")
        except WriteConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and outcomes.count("conflict") == 5, outcomes
    assert read_versioned(fs, path)[0] == f"writer {winners[0].split()[1]}".encode()


def test_local_paths_and_file_urls_are_the_local_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for spelling in (tmp_path / "a b", str(tmp_path / "a b"), f"file://{tmp_path}/a%20b",
                     f"file://{tmp_path}/a b/", "a b"):  # fmt: skip
        fs, top = open_root(spelling)
        assert isinstance(fs, LocalFileSystem) and top == f"{tmp_path}/a b", spelling
        assert not is_remote(spelling)


def test_urls_are_never_local_directories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # No credentials lookup (gcsfs would probe the GCE metadata server): nothing is read here.
    monkeypatch.setitem(fsspec.config.conf, "gs", {"token": "anon"})
    fs, top = open_root("gs://bucket/tt")
    assert "gs" in fs.protocol and top == "bucket/tt" and is_remote("gs://bucket/tt")
    fs, top = open_root("s3://bucket/tt/")
    assert "s3" in fs.protocol and top == "bucket/tt" and is_remote("s3://bucket/tt")
    assert is_remote("memory://x")
    for mangled in (Path("gs://bucket/tt"), "s3:/bucket/tt"):
        with pytest.raises(PipelineError, match="lost a '/'.*pass the URL as a string"):
            open_root(mangled)
    assert list(tmp_path.iterdir()) == []
