"""A web page on another localhost port attacks the daemon from real headless Chromium.

The page (served from its own port, so its own origin) tries three things a hostile site
can do without the user's help: `fetch` with the token, a `text/plain` form POST (no CORS
preflight) and a WebSocket. Without `--cors` all three are refused; with `--cors` the page
is a trusted web UI, and its fetch and WebSocket work. A form can never carry the token
nor the JSON Content-Type, so it never creates a session, trusted origin or not.

Chromium is driven over the DevTools protocol (the `websockets` test dependency). It is the
Debian package `chromium`, installed by .ci/run; runs as root need `--no-sandbox`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from .cli_support import short_tmp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PAGE = """<!doctype html><html><body><pre id="out">running</pre>
<iframe name="sink" style="display:none"></iframe>
<form id="form" method="POST" enctype="text/plain" target="sink" action="%(daemon)s/sessions">
<input name='{"title": "from a form", "model": "x' value='y"}'></form>
<script>
const daemon = %(daemon_json)s, token = %(token_json)s, sid = %(sid_json)s;
const auth = {"Authorization": "Bearer " + token};
async function attempt(fn) {
  try { return await fn(); } catch (e) { return "blocked: " + e.name; }
}
function ws() {
  return new Promise(resolve => {
    const url = daemon.replace("http", "ws") + "/sessions/" + sid + "/stream?token=" + token;
    const socket = new WebSocket(url);
    socket.onopen = () => { socket.close(); resolve("open"); };
    socket.onerror = () => resolve("blocked");
  });
}
window.results = (async () => {
  const out = {};
  out.fetch = await attempt(async () => {
    const r = await fetch(daemon + "/sessions", {headers: auth});
    return r.status + " " + (await r.text()).slice(0, 1);
  });
  out.post = await attempt(async () => {
    const r = await fetch(daemon + "/sessions", {method: "POST",
      body: JSON.stringify({directory: %(work_json)s}),
      headers: {...auth, "Content-Type": "application/json"}});
    return String(r.status);
  });
  out.websocket = await ws();
  await new Promise(resolve => {
    const frame = document.querySelector("iframe");
    frame.onload = () => resolve();
    document.getElementById("form").submit();
    setTimeout(resolve, 10000);  // a bound only: onload fires on any answer
  });
  out.form = "submitted";
  document.getElementById("out").textContent = JSON.stringify(out);
  return out;
})();
</script></body></html>
"""


def wait_for(path: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and (match := re.search(pattern, path.read_text(errors="replace"))):
            return match.group(1)
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited: {path.read_text(errors='replace')}")
        time.sleep(0.05)
    raise AssertionError(f"no {pattern!r} in {path}")


def unix_get(sock: Path, path: str, method: str = "GET", body: bytes | None = None) -> Any:
    import http.client
    import socket

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(str(sock))

    conn = Conn("localhost", timeout=10)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    data = json.loads(conn.getresponse().read())
    conn.close()
    return data


class Daemon:
    def __init__(self, tmp: Path, *flags: str) -> None:
        self.tmp = tmp
        self.sock = tmp / "d.sock"
        self.log = tmp / "daemon.log"
        env = {**os.environ, "OPENCODE_CONFIG": str(tmp / "none.json")}
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "opencoded", "--port", "0", "--socket", str(self.sock),
                 "--data-dir", str(tmp / "data"), *flags],
                stderr=err, env=env, cwd=tmp,
            )  # fmt: skip
        self.url = wait_for(self.log, r"opencoded ready: (http://\S+)", self.proc)
        self.token = (tmp / "data" / "token").read_text().strip()

    def sessions(self) -> list[dict[str, Any]]:
        return unix_get(self.sock, "/sessions")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Chromium:
    """Headless Chromium with the DevTools protocol on a port it picks itself."""

    def __init__(self, tmp: Path) -> None:
        assert CHROMIUM is not None
        profile = tmp / "profile"
        self.log = tmp / "chromium.log"
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                 "--no-first-run", "--disable-dev-shm-usage", "--remote-debugging-port=0",
                 f"--user-data-dir={profile}", "about:blank"],
                stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        active = profile / "DevToolsActivePort"
        port = wait_for(active, r"^(\d+)\n", self.proc)
        self.port = int(port)

    def page_socket(self) -> str:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list") as r:
                pages = [t for t in json.loads(r.read()) if t["type"] == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise AssertionError("Chromium opened no page")

    def run(self, url: str) -> dict[str, Any]:
        """Open url, then wait for its `window.results` promise and return its value."""
        with connect(self.page_socket(), max_size=None, open_timeout=20) as ws:
            ids = iter(range(1, 1000))

            def call(method: str, **params: Any) -> dict[str, Any]:
                msg_id = next(ids)
                ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
                while True:
                    reply = json.loads(ws.recv(timeout=40))
                    if reply.get("id") == msg_id:
                        assert "error" not in reply, reply
                        return reply["result"]

            call("Page.enable")
            call("Page.navigate", url=url)
            deadline = time.monotonic() + 30
            while True:
                ready = call("Runtime.evaluate", expression="!!window.results")
                if ready["result"].get("value") is True:
                    break
                assert time.monotonic() < deadline, "the page never started"
                time.sleep(0.1)
            result = call(
                "Runtime.evaluate",
                expression="window.results",
                awaitPromise=True,
                returnByValue=True,
            )
            return result["result"]["value"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def serve_page(html: str) -> tuple[ThreadingHTTPServer, str]:
    body = html.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/attack.html"


@pytest.fixture
def chromium() -> Iterator[Chromium]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run must install the Debian package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    tmp = short_tmp("ocb")
    browser = Chromium(tmp)
    yield browser
    browser.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("flags", [(), ("--cors",), ("--cors", "--no-auth")])
def test_cross_site_page_in_chromium(chromium: Chromium, flags: tuple[str, ...]) -> None:
    """The form's text/plain body is valid JSON (`{"title": ..., "model": "x=y"}`): with
    `--no-auth` only the Content-Type check stands between it and a new session."""
    cors = "--cors" in flags
    tmp = short_tmp("ocx")
    daemon = Daemon(tmp, *flags)
    server = None
    try:
        work = tmp / "work"  # not the dir holding the data dir: too broad a root
        work.mkdir()
        body = json.dumps({"directory": str(work)}).encode()
        sid = unix_get(daemon.sock, "/sessions", "POST", body)["id"]
        html = PAGE % {
            "daemon": daemon.url,
            "daemon_json": json.dumps(daemon.url),
            "work_json": json.dumps(str(work)),
            "token_json": json.dumps(daemon.token),
            "sid_json": json.dumps(sid),
        }
        server, page = serve_page(html)
        results = chromium.run(page)
        titles = [s["title"] for s in daemon.sessions()]
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        daemon.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    assert results["form"] == "submitted"
    assert "from a form" not in " ".join(titles)  # the form never creates a session
    if cors:
        assert results["fetch"] == "200 [", results
        assert results["post"] == "201", results
        assert results["websocket"] == "open", results
        assert len(titles) == 2  # ours and the page's fetch POST
    else:
        assert results["fetch"].startswith("blocked"), results
        assert results["post"].startswith("blocked"), results
        assert results["websocket"] == "blocked", results
        assert len(titles) == 1
