"""Edge cases found in review: inputs that used to answer a 500 or hang."""

from __future__ import annotations

from pathlib import Path

from .conftest import RunningDaemon


async def test_directory_with_nul_byte_is_a_400(daemon: RunningDaemon) -> None:
    async with daemon.unix() as c:
        r = await c.post("/sessions", json={"directory": "/tmp/a\u0000b"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["details"]["field"] == "directory"
        r = await c.post("/projects", json={"name": "p", "path": "/tmp/a\u0000b"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["details"]["field"] == "path"


async def test_file_path_with_unknown_user_home_is_a_400(
    daemon: RunningDaemon, project_dir: Path
) -> None:
    async with daemon.unix() as c:
        pid = (await c.post("/projects", json={"name": "p", "path": str(project_dir)})).json()["id"]
        for route in ("files", "files/content"):
            r = await c.get(f"/projects/{pid}/{route}", params={"path": "~no_such_user_x/f"})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["details"]["field"] == "path"
