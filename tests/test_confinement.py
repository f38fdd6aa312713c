"""Issue 10, path confinement and hangs: each attack tried for real against the tools and
the file routes (hard links, a symlink swap race, FIFOs, symlink loops, long paths, broad
roots)."""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from opencoded.tools import ToolContext, ToolOutput, paths, run_tool

from .conftest import RunningDaemon, start_daemon

SECRET = "top secret outside"


@pytest.fixture(autouse=True, params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: with openat2 (where the kernel has it) and with the O_NOFOLLOW
    component walk that older kernels use."""
    if request.param == "openat2":
        if not paths.HAVE_OPENAT2:
            pytest.skip("this kernel has no openat2; the walk run covers the rule")
    else:
        monkeypatch.setattr(paths, "HAVE_OPENAT2", False)
    return str(request.param)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = (tmp_path / "session").resolve()
    path.mkdir()
    (path / "inside.txt").write_text("inside text\n")
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = (tmp_path / "outside").resolve()
    path.mkdir()
    (path / "secret.txt").write_text(SECRET + "\n")
    return path


async def call(root: Path, name: str, **args: object) -> ToolOutput:
    with trio.fail_after(10):  # a FIFO once blocked here for 60 s
        return await run_tool(name, args, ToolContext(root=root))


async def project(c: httpx.AsyncClient, path: Path) -> str:
    r = await c.post("/projects", json={"name": "p", "path": str(path)})
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


async def content(c: httpx.AsyncClient, pid: str, path: str) -> httpx.Response:
    with trio.fail_after(10):
        return await c.get(f"/projects/{pid}/files/content", params={"path": path})


# ---- hard links ---------------------------------------------------------------------------


async def test_hard_link_to_outside_is_not_read_or_written_by_tools(
    root: Path, outside: Path
) -> None:
    os.link(outside / "secret.txt", root / "hard.txt")
    out = await call(root, "read", path="hard.txt")
    assert out.error and "hard link" in out.output and SECRET not in out.output
    out = await call(root, "grep", pattern="secret")
    assert SECRET not in out.output
    out = await call(root, "grep", pattern="secret", path="hard.txt")
    assert out.error and SECRET not in out.output
    out = await call(root, "edit", path="hard.txt", old_string="top", new_string="pwned")
    assert out.error and "hard link" in out.output
    out = await call(root, "write", path="hard.txt", content="pwned")
    assert out.error and "hard link" in out.output
    assert (outside / "secret.txt").read_text() == SECRET + "\n"
    assert (await call(root, "glob", pattern="*.txt")).output == "inside.txt"


async def test_hard_link_to_outside_is_not_served(
    daemon: RunningDaemon, project_dir: Path, tmpdir_short: Path
) -> None:
    (tmpdir_short / "secret.txt").write_text(SECRET)
    os.link(tmpdir_short / "secret.txt", project_dir / "hard.txt")
    async with daemon.unix() as c:
        pid = await project(c, project_dir)
        r = await content(c, pid, "hard.txt")
        assert r.status_code == 403, r.text
        assert SECRET not in r.text and r.json()["error"]["details"]["field"] == "path"


# ---- the symlink swap race ------------------------------------------------------------------

AT_FDCWD = -100
RENAME_EXCHANGE = 2
TRIES = 300


class Swapper:
    """A thread exchanging `a` (a real directory) and `b` (a symlink to outside) atomically,
    over and over, so that `a` is sometimes the directory and sometimes the link."""

    def __init__(self, a: Path, b: Path) -> None:
        self.a, self.b = bytes(a), bytes(b)
        self.stop = threading.Event()
        self.started = threading.Event()
        self.swaps = 0
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            if self.libc.renameat2(AT_FDCWD, self.a, AT_FDCWD, self.b, RENAME_EXCHANGE) != 0:
                raise OSError(ctypes.get_errno(), "renameat2")
            self.swaps += 1
            self.started.set()

    def __enter__(self) -> Swapper:
        self.thread.start()
        assert self.started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def racing(root: Path, outside: Path) -> Iterator[Path]:
    """root/d is a directory holding f.txt ("inside"), and (alternately) a symlink to
    `outside`, which holds f.txt (the secret) and only-outside.txt."""
    (root / "d").mkdir()
    (root / "d" / "f.txt").write_text("inside\n")
    (outside / "f.txt").write_text(SECRET + "\n")
    (outside / "only-outside.txt").write_text(SECRET + "\n")
    (root / "alt").symlink_to(outside)
    yield root


async def test_swap_race_never_reads_outside_through_tools(racing: Path, outside: Path) -> None:
    leaks = 0
    with Swapper(racing / "d", racing / "alt") as swapper:
        for n in range(TRIES):
            for out in (
                await call(racing, "read", path="d/f.txt"),
                await call(racing, "grep", pattern="secret", path="d"),
                await call(racing, "list", path="d"),
                await call(racing, "glob", pattern="*.txt", path="d"),
            ):
                leaks += SECRET in out.output or "only-outside" in out.output
            await call(racing, "write", path=f"d/new{n}.txt", content="x")
            await call(racing, "edit", path="d/f.txt", old_string="secret", new_string="PWNED")
    assert swapper.swaps > 0
    assert leaks == 0
    assert sorted(p.name for p in outside.iterdir()) == ["f.txt", "only-outside.txt", "secret.txt"]
    assert (outside / "f.txt").read_text() == SECRET + "\n"


async def test_swap_race_never_serves_outside_files(
    daemon: RunningDaemon, tmpdir_short: Path
) -> None:
    root = tmpdir_short / "proj"
    outside = tmpdir_short / "out"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    (root / "d" / "f.txt").write_text("inside\n")
    (outside / "f.txt").write_text(SECRET)
    (outside / "only-outside.txt").write_text(SECRET)
    (root / "alt").symlink_to(outside)
    leaks = 0
    async with daemon.unix() as c:
        pid = await project(c, root)
        with Swapper(root / "d", root / "alt") as swapper:
            for _ in range(TRIES):
                r = await content(c, pid, "d/f.txt")
                assert r.status_code < 500, r.text
                listing = await c.get(f"/projects/{pid}/files", params={"path": "d"})
                assert listing.status_code < 500, listing.text
                leaks += SECRET in r.text or "only-outside" in listing.text
    assert swapper.swaps > 0
    assert leaks == 0


async def test_write_never_creates_a_file_through_a_symlinked_parent(
    root: Path, outside: Path
) -> None:
    (root / "link").symlink_to(outside)
    out = await call(root, "write", path="link/created.txt", content="pwned")
    assert out.error and "symbolic link" in out.output
    out = await call(root, "write", path="link/deeper/created.txt", content="pwned")
    assert out.error and "symbolic link" in out.output
    assert not (outside / "created.txt").exists() and not (outside / "deeper").exists()


# ---- FIFOs and other special files ------------------------------------------------------------


async def test_fifo_does_not_hang_the_tools(root: Path) -> None:
    os.mkfifo(root / "pipe")
    out = await call(root, "read", path="pipe")
    assert out.error and "not a regular file" in out.output
    out = await call(root, "grep", pattern="text")
    assert out.output == "inside.txt:1: inside text"
    out = await call(root, "grep", pattern="text", path="pipe")
    assert out.error and "not a regular file" in out.output
    out = await call(root, "edit", path="pipe", old_string="a", new_string="b")
    assert out.error and "not a regular file" in out.output
    out = await call(root, "write", path="pipe", content="x")
    assert out.error and "not a regular file" in out.output
    assert (await call(root, "glob", pattern="*")).output == "inside.txt"


async def test_fifo_does_not_hang_the_file_routes(daemon: RunningDaemon, project_dir: Path) -> None:
    os.mkfifo(project_dir / "pipe")
    async with daemon.unix() as c:
        pid = await project(c, project_dir)
        for _ in range(50):  # 40 hung reads once exhausted the worker threads
            r = await content(c, pid, "pipe")
            assert r.status_code == 403 and "not a regular file" in r.json()["error"]["message"]
        listing = (await c.get(f"/projects/{pid}/files")).json()
        assert {"name": "pipe", "path": "pipe", "type": "other", "size": 0} in listing
        r = await content(c, pid, "README.md")
        assert r.status_code == 200 and r.text == "# demo\n"


# ---- symlink loops ------------------------------------------------------------------------------


async def test_symlink_loops_do_not_break_glob_or_grep(root: Path) -> None:
    (root / "self").symlink_to("self")
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("a")
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to("..")
    (root / "sub" / "deep.txt").write_text("deep text\n")
    out = await call(root, "glob", pattern="**/*.txt")
    assert sorted(out.output.splitlines()) == ["inside.txt", "sub/deep.txt"]
    out = await call(root, "grep", pattern="text")
    assert out.output.splitlines() == ["inside.txt:1: inside text", "sub/deep.txt:1: deep text"]
    out = await call(root, "read", path="self")
    assert out.error and "symbolic link" in out.output


# ---- long paths -----------------------------------------------------------------------------


# the last one: 350 components under a regular file (wording that error once took
# exponential time in the number of components)
@pytest.mark.parametrize(
    "path", ["a" * 256, "a/" * 3000 + "f", "d/" + "x" * 300, "README.md/" * 350 + "f"]
)
async def test_long_paths_are_4xx_on_the_file_routes(
    daemon: RunningDaemon, project_dir: Path, path: str
) -> None:
    async with daemon.unix() as c:
        pid = await project(c, project_dir)
        for route in ("files", "files/content"):
            r = await c.get(f"/projects/{pid}/{route}", params={"path": path})
            assert 400 <= r.status_code < 500, (route, r.status_code, r.text)
            assert r.json()["error"]["details"]["field"] == "path"


async def test_long_paths_are_tool_errors(root: Path) -> None:
    for name in ("read", "list", "grep", "glob"):
        args: dict[str, object] = {"path": "a" * 256}
        if name in ("grep", "glob"):
            args["pattern"] = "x"
        out = await call(root, name, **args)
        assert out.error and "failed" not in out.output, (name, out)
    out = await call(root, "write", path="a" * 256, content="x")
    assert out.error and "too long" in out.output
    deep = "inside.txt/" * 350 + "f"
    for name in ("read", "list", "write"):
        out = await call(root, name, path=deep, **({"content": "x"} if name == "write" else {}))
        assert out.error and "failed" not in out.output and len(out.output) < 5000, name


# ---- broad roots ---------------------------------------------------------------------------


async def test_broad_directories_are_refused(daemon: RunningDaemon) -> None:
    refused = ["/", str(Path.home()), "/etc", str(daemon.tmp), str(daemon.data_dir)]
    async with daemon.unix() as c:
        for directory in refused:
            r = await c.post("/sessions", json={"directory": directory})
            assert r.status_code == 400, (directory, r.text)
            assert r.json()["error"]["details"]["field"] == "directory"
            assert "allowBroadRoots" in r.json()["error"]["message"]
            r = await c.post("/projects", json={"name": "p", "path": directory})
            assert r.status_code == 400, (directory, r.text)
            assert r.json()["error"]["details"]["field"] == "path"
        assert (await c.get("/projects")).json() == []


async def test_broad_directories_allowed_by_config(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    running = await start_daemon(nursery, tmpdir_short, {"sandbox": {"allowBroadRoots": True}})
    async with running.unix() as c:
        r = await c.post("/sessions", json={"directory": "/"})
        assert r.status_code == 201, r.text
    await running.shutdown()
