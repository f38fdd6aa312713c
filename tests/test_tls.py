"""`--certfile/--keyfile`: HTTPS on TCP (as the spec advises), plain HTTP on the Unix socket."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
import trio

from .conftest import start_daemon

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_on_tcp_plain_on_the_socket(nursery: trio.Nursery, tmpdir_short: Path) -> None:
    cert, key = self_signed(tmpdir_short)
    running = await start_daemon(
        nursery, tmpdir_short, server={"certfile": str(cert), "keyfile": str(key)}
    )
    assert running.tcp_url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(cert))
    async with running.tcp(verify=context) as c:
        assert (await c.get("/sessions")).status_code == 200
    plain = running.tcp_url.replace("https://", "http://")
    async with httpx.AsyncClient(trust_env=False) as c:
        with pytest.raises(httpx.HTTPError):
            await c.get(f"{plain}/health")
    async with running.unix() as c:
        assert (await c.get("/health")).status_code == 200
    await running.shutdown()
