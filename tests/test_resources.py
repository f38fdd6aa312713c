"""Sessions, projects, files, providers and models: success and failure paths over HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from .conftest import RunningDaemon, start_daemon


def one_session(r: httpx.Response) -> dict:
    """GET /sessions/:id: the session as created and listed, plus its live state (issue 13)."""
    body = r.json()
    assert body.pop("tokens")["turns"] == 0 and body.pop("queue") == []
    return body


async def test_session_create_get_list_delete(daemon: RunningDaemon, project_dir: Path) -> None:
    async with daemon.unix() as c:
        r = await c.post(
            "/sessions",
            json={
                "provider": "anthropic",
                "model": "claude-3-5-sonnet",
                "directory": str(project_dir),
            },
        )
        assert r.status_code == 201, r.text
        s = r.json()
        assert s["id"].startswith("session_")
        assert isinstance(s["created"], int)
        assert (s["provider"], s["model"]) == ("anthropic", "claude-3-5-sonnet")
        assert s["directory"] == str(project_dir.resolve())
        assert s["status"] == "idle"
        assert s["project"].startswith("proj_")
        assert one_session(await c.get(f"/sessions/{s['id']}")) == s
        assert [x["id"] for x in (await c.get("/sessions")).json()] == [s["id"]]
        r = await c.delete(f"/sessions/{s['id']}")
        assert r.json() == {"id": s["id"], "deleted": True}
        r = await c.get(f"/sessions/{s['id']}")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "SESSION_NOT_FOUND"
        assert r.json()["error"]["details"] == {"sessionId": s["id"]}
        assert (await c.delete(f"/sessions/{s['id']}")).status_code == 404


async def test_session_model_shorthand_and_defaults(daemon: RunningDaemon) -> None:
    async with daemon.unix() as c:
        r = await c.post("/sessions", json={"model": "openai/gpt-4o"})
        assert (r.json()["provider"], r.json()["model"]) == ("openai", "gpt-4o")
        r = await c.post("/sessions")  # empty body: everything defaults
        assert r.status_code == 201
        assert r.json()["directory"] == str(Path.cwd().resolve())


async def test_session_paging_newest_first(daemon: RunningDaemon) -> None:
    async with daemon.unix() as c:
        ids = [(await c.post("/sessions", json={"title": f"s{i}"})).json()["id"] for i in range(7)]
        page1 = (await c.get("/sessions", params={"limit": 3})).json()
        assert [s["id"] for s in page1] == ids[::-1][:3]
        page2 = (await c.get("/sessions", params={"limit": 3, "before": page1[-1]["id"]})).json()
        assert [s["id"] for s in page2] == ids[::-1][3:6]
        page3 = (await c.get("/sessions", params={"limit": 3, "before": page2[-1]["id"]})).json()
        assert [s["id"] for s in page3] == [ids[0]]


async def test_session_list_by_project(daemon: RunningDaemon, project_dir: Path) -> None:
    async with daemon.unix() as c:
        mine = (await c.post("/sessions", json={"directory": str(project_dir)})).json()
        other = project_dir.parent / "other"  # not "/": refused as a broad root
        other.mkdir()
        r = await c.post("/sessions", json={"directory": str(other)})
        assert r.status_code == 201, r.text
        listed = (await c.get("/sessions", params={"project": mine["project"]})).json()
        assert [s["id"] for s in listed] == [mine["id"]]
        by_project = await c.post("/sessions", json={"project": mine["project"]})
        assert by_project.json()["directory"] == mine["directory"]


async def test_session_validation_names_the_field(daemon: RunningDaemon) -> None:
    cases = [
        ({"model": 5}, "model"),
        ({"provider": "nope"}, "provider"),
        ({"directory": "relative/path"}, "directory"),
        ({"directory": "/does/not/exist"}, "directory"),
        ({"permission": {"bash": "sometimes"}}, "permission"),
        ({"bogus": 1}, "bogus"),
        ([1, 2], "(body)"),
    ]
    async with daemon.unix() as c:
        for body, field in cases:
            r = await c.post("/sessions", json=body)
            assert r.status_code == 400, (body, r.text)
            error = r.json()["error"]
            assert error["code"] == "INVALID_REQUEST"
            assert error["details"]["field"].startswith(field), (body, error)
        r = await c.post(
            "/sessions", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400
        assert "JSON" in r.json()["error"]["message"]
        r = await c.post("/sessions", json={"project": "proj_missing"})
        assert r.status_code == 404
        for params, field in [
            ({"limit": "x"}, "limit"),
            ({"limit": 0}, "limit"),
            ({"limit": 501}, "limit"),
            ({"before": "session_nope"}, "before"),
            ({"colour": "red"}, "colour"),
        ]:
            r = await c.get("/sessions", params=params)
            assert r.status_code == 400, params
            assert r.json()["error"]["details"]["field"] == field


async def test_unknown_route_and_wrong_method(daemon: RunningDaemon) -> None:
    async with daemon.unix() as c:
        r = await c.get("/nothing/here")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "NOT_FOUND"
        r = await c.put("/sessions")
        assert r.status_code == 405
        assert r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_body_size_limit(daemon: RunningDaemon) -> None:
    async with daemon.unix() as c:
        big = b'{"title": "' + b"x" * (10 * 1024 * 1024 + 10) + b'"}'
        r = await c.post("/sessions", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_projects_crud(daemon: RunningDaemon, project_dir: Path) -> None:
    async with daemon.unix() as c:
        r = await c.post("/projects", json={"name": "my-app", "path": str(project_dir)})
        assert r.status_code == 201
        p = r.json()
        assert p["name"] == "my-app" and p["path"] == str(project_dir.resolve())
        again = await c.post("/projects", json={"name": "my-app", "path": str(project_dir)})
        assert again.status_code == 200 and again.json()["id"] == p["id"]
        assert (await c.get("/projects")).json() == [p]
        assert (await c.get(f"/projects/{p['id']}")).json() == p
        assert (await c.delete(f"/projects/{p['id']}")).json()["deleted"] is True
        r = await c.get(f"/projects/{p['id']}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
        assert (await c.delete(f"/projects/{p['id']}")).status_code == 404
        assert project_dir.exists()  # files untouched
        for body, field in [
            ({"name": "x"}, "path"),
            ({"name": "x", "path": "rel"}, "path"),
            ({"name": "", "path": str(project_dir)}, "name"),
            ({"name": "x", "path": str(project_dir / "README.md")}, "path"),
        ]:
            r = await c.post("/projects", json=body)
            assert r.status_code == 400 and r.json()["error"]["details"]["field"] == field


async def test_files_listing_and_content(daemon: RunningDaemon, project_dir: Path) -> None:
    (project_dir / "link").symlink_to(project_dir / "README.md")
    async with daemon.unix() as c:
        pid = (await c.post("/projects", json={"name": "p", "path": str(project_dir)})).json()["id"]
        root = (await c.get(f"/projects/{pid}/files")).json()
        assert root == [
            {"name": "README.md", "path": "README.md", "type": "file", "size": 7},
            {"name": "link", "path": "link", "type": "symlink", "size": root[1]["size"]},
            {"name": "src", "path": "src", "type": "directory", "size": root[2]["size"]},
        ]
        src = (await c.get(f"/projects/{pid}/files", params={"path": "src"})).json()
        assert [e["path"] for e in src] == ["src/main.py"]
        r = await c.get(f"/projects/{pid}/files/content", params={"path": "src/main.py"})
        assert r.status_code == 200 and r.text == "print('hello')\n"
        assert r.headers["content-type"].startswith("text/plain")
        r = await c.get(f"/projects/{pid}/files/content", params={"path": "nope.txt"})
        assert r.status_code == 404
        r = await c.get(f"/projects/{pid}/files/content", params={"path": "src"})
        assert r.status_code == 400
        r = await c.get(f"/projects/{pid}/files/content")
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "path"
        r = await c.get("/projects/proj_nope/files")
        assert r.status_code == 404


async def test_files_confinement(
    daemon: RunningDaemon, project_dir: Path, tmpdir_short: Path
) -> None:
    secret = tmpdir_short / "secret.txt"
    secret.write_text("top secret")
    (project_dir / "escape").symlink_to(secret)
    (project_dir / "escape_dir").symlink_to(tmpdir_short)
    async with daemon.unix() as c:
        pid = (await c.post("/projects", json={"name": "p", "path": str(project_dir)})).json()["id"]
        for path in ["../secret.txt", str(secret), "escape", "src/../../secret.txt"]:
            r = await c.get(f"/projects/{pid}/files/content", params={"path": path})
            assert r.status_code == 400, path
            assert "top secret" not in r.text
        for path in ["..", "/", "escape_dir"]:
            r = await c.get(f"/projects/{pid}/files", params={"path": path})
            assert r.status_code == 400, path


async def test_providers_and_models(nursery: trio.Nursery, tmpdir_short: Path) -> None:
    config = {
        "provider": {
            "ollama": {
                "type": "openai-compatible",
                "options": {"baseURL": "http://127.0.0.1:9/v1"},
                "models": {"qwen2.5-coder:7b": {}},
            }
        }
    }
    running = await start_daemon(nursery, tmpdir_short, config)
    async with running.unix() as c:
        providers = (await c.get("/providers")).json()
        by_id = {p["id"]: p for p in providers}
        assert {"anthropic", "openai", "ollama"} <= set(by_id)
        for p in providers:
            assert isinstance(p["name"], str) and isinstance(p["models"], list)
        assert "qwen2.5-coder:7b" in by_id["ollama"]["models"]
        assert any(m.startswith("claude-") for m in by_id["anthropic"]["models"])
        models = (await c.get("/models")).json()
        sonnet = next(m for m in models if m["id"] == "claude-sonnet-4-5")
        assert sonnet["provider"] == "anthropic" and sonnet["context"] >= 200_000
        assert sonnet["price"]["input"] > 0 and sonnet["price"]["output"] > 0
        assert any(m["provider"] == "openai" and m["id"] == "gpt-4o" for m in models)
        qwen = next(m for m in models if m["id"] == "qwen2.5-coder:7b")
        assert qwen["provider"] == "ollama" and qwen["price"] is None
    await running.shutdown()


async def test_sessions_and_projects_survive_restart(
    nursery: trio.Nursery, tmpdir_short: Path, project_dir: Path
) -> None:
    first = await start_daemon(nursery, tmpdir_short)
    async with first.unix() as c:
        s = (await c.post("/sessions", json={"directory": str(project_dir)})).json()
        p = (await c.get(f"/projects/{s['project']}")).json()
    await first.shutdown()
    assert not first.socket.exists()
    second = await start_daemon(nursery, tmpdir_short)
    async with second.unix() as c:
        assert one_session(await c.get(f"/sessions/{s['id']}")) == s
        assert (await c.get(f"/projects/{p['id']}")).json() == p
    assert second.token == first.token
    await second.shutdown()


async def test_models_of_an_openai_compatible_server_are_discovered(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    from .fakes.llm import open_fake_llm

    async with open_fake_llm(models=["llama3.3:70b"]) as fake:
        config = {
            "provider": {
                "ollama": {"type": "openai-compatible", "options": {"baseURL": fake.openai_url}}
            }
        }
        running = await start_daemon(nursery, tmpdir_short, config)
        async with running.unix() as c:
            with trio.fail_after(10):
                while True:  # discovery runs in the background after start-up
                    providers = {p["id"]: p for p in (await c.get("/providers")).json()}
                    if "llama3.3:70b" in providers["ollama"]["models"]:
                        break
                    await trio.sleep(0.02)  # polling a deadline-bound background task
            models = (await c.get("/models")).json()
            assert any(m["id"] == "llama3.3:70b" and m["provider"] == "ollama" for m in models)
        await running.shutdown()
