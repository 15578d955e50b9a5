"""Artifact roots as URLs, and the one write object stores make safe: a conditional write.

An artifact root is a local path, a `file://` URL (the local disk too), or an fsspec URL
(`s3://bucket/prefix`, `gs://bucket/prefix`, `memory://name`). `open_root` turns it into an
fsspec filesystem and the root's path on it; storage options come from the environment as the
drivers read it themselves (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...; `GOOGLE_APPLICATION_
CREDENTIALS`, ...), never from code here.

Object stores have no rename and no lock, so a file that several writers replace (a pointer) is
written with `write_if`: it only lands if the file is still the version `read_versioned`
returned (S3 `If-Match: <etag>` / `If-None-Match: *`, GCS `ifGenerationMatch`; on the local
disk and in memory a lock and a comparison). The loser gets `WriteConflict` and nothing changed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import re
import threading
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import fsspec
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from pipelines.errors import PipelineError
from pipelines.formats.files import fsync_local

LOCAL_SCHEMES = ("", "file", "local")
# The extra that ships each driver (`pip install two-tower-retrain[s3]`).
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
# `Path("gs://b/x")` is `gs:/b/x`: a URL that went through pathlib, not a local directory.
_MANGLED_URL = re.compile(r"^(s3|s3a|gs|gcs|memory|az|abfs|hdfs):/[^/]")
_MEMORY_LOCK = threading.Lock()


class WriteConflict(PipelineError):
    """`write_if` refused: someone else wrote (or created, or deleted) the file first.

    Attributes:
        path: the file, as the filesystem spells it.
    """

    def __init__(self, path: str, detail: str = ""):
        super().__init__(
            f"{path}: someone else wrote it first (it is no longer the version this process "
            f"read{'; ' + detail if detail else ''}); nothing was written. Read it again and "
            "retry."
        )
        self.path = path


def scheme_of(url_or_path: str | os.PathLike) -> str:
    """The URL scheme of an artifact root ("" for a plain path)."""
    text = os.fspath(url_or_path)
    return text.split("://", 1)[0].lower() if "://" in text else ""


def is_remote(url_or_path: str | os.PathLike) -> bool:
    """True unless `url_or_path` is on the local disk (a plain path or a `file://` URL).

    `memory://` counts as remote: like an object store it has no rename, lock or fsync.
    """
    return scheme_of(url_or_path) not in LOCAL_SCHEMES


def open_root(url_or_path: str | os.PathLike) -> tuple[AbstractFileSystem, str]:
    """The filesystem of an artifact root and the root's path on it.

    Args:
        url_or_path: a local path, `file:///abs/path`, `s3://bucket/prefix`,
            `gs://bucket/prefix` or `memory://name`.

    Returns:
        `(fs, root)`: `root` without a trailing "/", absolute on the local disk, without the
        scheme elsewhere (`bucket/prefix`), as fsspec methods take it.

    Raises:
        PipelineError: a URL mangled by pathlib (`gs:/bucket`), or a scheme whose driver is
            not installed (the message names the extra to install).
    """
    text = os.fspath(url_or_path)
    scheme = scheme_of(text)
    if scheme in LOCAL_SCHEMES:
        if _MANGLED_URL.match(text):
            raise PipelineError(
                f"artifact root {text!r} looks like a URL that lost a '/' (a pathlib.Path made "
                f"from {text.replace(':/', '://', 1)!r}); pass the URL as a string, not a Path"
            )
        path = unquote(urlsplit(text).path) if scheme else text
        return LocalFileSystem(), os.path.abspath(os.path.expanduser(path)).rstrip("/") or "/"
    try:
        fs, root = fsspec.core.url_to_fs(text)
    except ImportError as exc:
        extra = EXTRAS.get(scheme)
        hint = f" (`pip install 'two-tower-retrain[{extra}]'`)" if extra else ""
        raise PipelineError(
            f"artifact root {text}: no driver for {scheme}:// is installed{hint}: {exc}"
        ) from None
    except ValueError as exc:
        raise PipelineError(f"artifact root {text}: {exc}") from None
    return fs, root.rstrip("/") or root


def read_versioned(fs: AbstractFileSystem, path: str) -> tuple[bytes | None, object]:
    """A file's bytes and a token naming that exact version, for `write_if`.

    Returns:
        `(data, token)`; `(None, None)` if the file does not exist. The token is the S3 ETag,
        the GCS generation, or a SHA-256 of the bytes (local disk, memory).
    """
    kind = _kind(fs)
    if kind == "s3":
        return _s3_read(fs, path)
    if kind == "gcs":
        return _gcs_read(fs, path)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return None, None
    return data, _digest(data)


def write_if(
    fs: AbstractFileSystem, path: str, data: bytes, token: object, *, temporary: str | None = None
) -> None:
    """Write `path` only if it is still the version `token` names (None: it must not exist).

    Args:
        fs: the filesystem (`open_root`'s).
        path: the file.
        data: its new bytes, written as one object (a temporary file, fsync and rename on the
            local disk: readers see the old bytes or the new, never a mix).
        token: what `read_versioned` returned for the version this write replaces.
        temporary: local disk only: the temporary file's name (default `.<name>.tmp-<uuid>`
            beside `path`), so that callers can recognise their own debris.

    Raises:
        WriteConflict: the file changed, appeared or vanished since that read; nothing written.
    """
    kind = _kind(fs)
    if kind == "s3":
        _s3_write(fs, path, data, token)
    elif kind == "gcs":
        _gcs_write(fs, path, data, token)
    elif kind == "local":
        _local_write(path, data, token, temporary)
    else:
        with _MEMORY_LOCK:  # one process's memory: a lock makes compare-and-write atomic
            _check(path, token, read_versioned(fs, path)[1])
            fs.pipe_file(path, data)


def _kind(fs: AbstractFileSystem) -> str:
    if isinstance(fs, LocalFileSystem):
        return "local"
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if {"s3", "s3a"} & set(protocols):
        return "s3"
    if {"gs", "gcs"} & set(protocols):
        return "gcs"
    return "other"


# Where fsspec drivers put a file's modification time in `info`/`ls(detail=True)` entries:
# local `mtime`, s3fs `LastModified`, gcsfs `updated` (a string), memory `created`.
MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "created")


def modified_time(info: dict) -> float | None:
    """Epoch seconds of an fsspec listing entry's modification time; None if it has none."""
    for key in MTIME_KEYS:
        value = info.get(key)
        if isinstance(value, dt.datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check(path: str, token: object, current: object) -> None:
    if current != token:
        state = "it does not exist" if current is None else "it exists" if token is None else ""
        raise WriteConflict(path, state)


# -- local disk --------------------------------------------------------------------------------


def _local_write(path: str, data: bytes, token: object, temporary: str | None) -> None:
    directory, name = os.path.split(path)
    temporary = temporary or os.path.join(directory, f".{name}.tmp-{uuid.uuid4().hex}")
    # flock on the directory itself: no lock file beside the caller's files, released by the
    # kernel if this process dies.
    fd = os.open(directory or ".", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        current = _digest(Path(path).read_bytes()) if os.path.exists(path) else None
        _check(path, token, current)
        try:
            out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(out, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        fsync_local(directory or ".")
    finally:
        os.close(fd)  # releases the flock


# -- S3 (s3fs) ---------------------------------------------------------------------------------


def _s3_read(fs, path: str) -> tuple[bytes | None, str | None]:
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(path)

    async def get():
        try:
            response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None, None
        async with response["Body"] as body:  # bytes and ETag of one and the same version
            return await body.read(), response["ETag"]

    return sync(fs.loop, get)


def _s3_write(fs, path: str, data: bytes, token: object) -> None:
    bucket, key, _ = fs.split_path(path)
    condition = {"IfNoneMatch": "*"} if token is None else {"IfMatch": token}
    try:
        fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
    except (OSError, FileExistsError) as exc:
        code = _s3_error_code(exc)
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404"):
            # 409 ConditionalRequestConflict: a concurrent conditional write is in flight on
            # AWS; NoSuchKey: If-Match on an object someone deleted.
            raise WriteConflict(path, f"S3 answered {code}") from None
        raise
    finally:
        fs.invalidate_cache(path)


def _s3_error_code(exc: BaseException) -> str | None:
    cause = exc.__cause__
    response = getattr(cause, "response", None) or {}
    error = response.get("Error", {})
    if error.get("Code"):
        return str(error["Code"])
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(status) if status else None


# -- GCS (gcsfs) -------------------------------------------------------------------------------


def _gcs_read(fs, path: str) -> tuple[bytes | None, str | None]:
    bucket, key, _ = fs.split_path(path)
    try:
        headers, data = fs.call("GET", "b/{}/o/{}", bucket, key, alt="media")
    except FileNotFoundError:
        return None, None
    generation = headers.get("x-goog-generation")  # the generation these bytes belong to
    if generation:
        return data, generation
    # No header (an emulator): the metadata's generation, then that generation's bytes.
    try:
        meta = fs.call("GET", "b/{}/o/{}", bucket, key, json_out=True)
        _, data = fs.call(
            "GET", "b/{}/o/{}", bucket, key, alt="media", generation=meta["generation"]
        )
    except FileNotFoundError:  # replaced or deleted in between: read again
        return _gcs_read(fs, path)
    return data, meta["generation"]


def _gcs_write(fs, path: str, data: bytes, token: object) -> None:
    bucket, key, _ = fs.split_path(path)
    try:
        fs.call(
            "POST",
            f"{fs._location}/upload/storage/v1/b/{{}}/o",
            bucket,
            uploadType="media",
            name=key,
            ifGenerationMatch="0" if token is None else str(token),
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )  # fmt: skip
    except FileExistsError:  # gcsfs's spelling of 412 Precondition Failed
        raise WriteConflict(path, "GCS answered 412 Precondition Failed") from None
    finally:
        fs.invalidate_cache(path)
