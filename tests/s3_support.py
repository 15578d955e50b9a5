"""A real S3 API on loopback for tests: moto's standalone server in a subprocess.

    import s3_support

    s3_server, s3_bucket = s3_support.s3_server, s3_support.s3_bucket  # the fixtures

    def test_x(s3_bucket):            # "s3://<fresh bucket>/tt", env set for s3fs/boto
        Registry(s3_bucket) ...

`s3_server` (session) starts the server on a free 127.0.0.1 port and stops it at the end;
`s3_bucket` (function) sets the environment every S3 client reads (endpoint, fake credentials,
region; subprocesses inherit it) and creates a fresh bucket. The server runs single-threaded:
each request is handled whole before the next, as S3 evaluates a conditional PUT atomically.
(moto's threaded mode checks `If-Match` and stores the object in two steps without a lock; it
did not let two racing PUTs through in 30 tries here, but the race tests should not depend on
thread timing.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from ports import free_port

# moto's own server (`python -m moto.server`) with threading off; argv: host port.
_SERVER = """
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app,
)
run_simple(sys.argv[1], int(sys.argv[2]), DomainDispatcherApplication(create_backend_app),
           threaded=False, request_handler=MotoRequestHandler)
"""


class S3Server:
    """A running moto server.

    Attributes:
        endpoint: its URL, `http://127.0.0.1:<port>`.
        env: the variables s3fs, boto3 and the AWS CLI read to use it.
    """

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def make_bucket(self) -> str:
        """A fresh, empty bucket's name."""
        import boto3

        name = f"tt-{uuid.uuid4().hex[:12]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server on a free loopback port for the whole session (killed at the end)."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, "127.0.0.1", str(port)],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path_factory.getbasetemp(),
        )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto server did not start: {Path(log).read_text()[-2000:]}"
                    ) from None
                time.sleep(0.1)
        yield S3Server(endpoint)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """`s3://<fresh bucket>/tt`, with the environment pointing every S3 client at moto."""
    from s3fs import S3FileSystem

    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    S3FileSystem.clear_instance_cache()  # s3fs caches clients built from old env
    bucket = s3_server.make_bucket()
    yield f"s3://{bucket}/tt"
    S3FileSystem.clear_instance_cache()
