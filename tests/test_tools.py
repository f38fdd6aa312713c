"""The agent's tools, against a real filesystem and real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from opencoded.tools import (
    MAX_CHARS,
    MAX_LINES,
    TOOLS,
    PathEscapeError,
    ToolContext,
    ToolOutput,
    relative_parts,
    run_tool,
    tool_specs,
)
from opencoded.tools.search import MAX_GLOB_RESULTS, MAX_GREP_MATCHES

# ---- helpers -------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = (tmp_path / "session").resolve()
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = (tmp_path / "outside").resolve()
    path.mkdir()
    (path / "secret.txt").write_text("top secret\n")
    return path


def ctx_for(root: Path, **kw: object) -> ToolContext:
    return ToolContext(root=root, **kw)  # type: ignore[arg-type]


async def call(root: Path, name: str, **args: object) -> ToolOutput:
    return await run_tool(name, args, ctx_for(root))


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie has already died)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll another process's state with a deadline."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


async def await_until(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    with trio.move_on_after(timeout):
        while not cond():
            await trio.sleep(0.01)
        return True
    return False


# ---- registry and argument checking -------------------------------------------------


def test_registry_has_the_built_in_tools_with_schemas() -> None:
    names = ["read", "write", "edit", "list", "glob", "grep", "bash"]
    names += ["webfetch", "todowrite", "todoread"]
    assert list(TOOLS) == names
    specs = tool_specs()
    assert [s[0] for s in specs] == names
    for name, description, schema in specs:
        assert description, name
        assert schema["type"] == "object"
        assert set(schema.get("required", [])) <= set(schema["properties"])
    assert set(TOOLS["edit"].input_schema["properties"]) == {
        "path",
        "old_string",
        "new_string",
        "replace_all",
    }
    assert set(TOOLS["bash"].input_schema["properties"]) == {"command", "timeout", "description"}


async def test_unknown_tool(root: Path) -> None:
    out = await call(root, "rm")
    assert out.error and "unknown tool 'rm'" in out.output


async def test_missing_required_argument_is_named(root: Path) -> None:
    out = await call(root, "edit", path="a")
    assert out.error
    assert "old_string" in out.output and "new_string" in out.output


async def test_wrong_type_is_named(root: Path) -> None:
    out = await call(root, "read", path="a.txt", offset="3")
    assert out.error and "'offset'" in out.output and "integer" in out.output
    out = await call(root, "edit", path="a", old_string="x", new_string="y", replace_all="yes")
    assert out.error and "'replace_all'" in out.output


async def test_unknown_argument_and_non_object(root: Path) -> None:
    out = await call(root, "read", path="a.txt", filePath="a.txt")
    assert out.error and "filePath" in out.output
    out = await run_tool("read", ["a.txt"], ctx_for(root))
    assert out.error and "JSON object" in out.output


async def test_minimum_and_integral_float(root: Path) -> None:
    (root / "a.txt").write_text("one\ntwo\nthree\n")
    out = await call(root, "read", path="a.txt", offset=0)
    assert out.error and "at least 1" in out.output
    out = await call(root, "read", path="a.txt", offset=2.0, limit=1)
    assert not out.error and out.output.startswith("     2\ttwo")


async def test_unexpected_exception_becomes_error_output(root: Path) -> None:
    # a lone surrogate cannot be encoded: a UnicodeEncodeError, not a ToolError
    out = await call(root, "write", path="child.txt", content="\ud800")
    assert out.error and "failed" in out.output and "UnicodeEncodeError" in out.output


async def test_write_under_a_file_is_refused(root: Path) -> None:
    (root / "file").write_text("x")
    out = await call(root, "write", path="file/child.txt", content="y")
    assert out.error and "not a directory" in out.output


# ---- read -----------------------------------------------------------------------------


async def test_read_numbers_lines_like_cat_n(root: Path) -> None:
    (root / "a.txt").write_text("alpha\nbeta\n")
    out = await call(root, "read", path="a.txt")
    assert out == ToolOutput("     1\talpha\n     2\tbeta")


async def test_read_offset_and_limit(root: Path) -> None:
    (root / "a.txt").write_text("".join(f"line {i}\n" for i in range(1, 11)))
    out = await call(root, "read", path="a.txt", offset=4, limit=2)
    assert not out.error
    lines = out.output.splitlines()
    assert lines[:2] == ["     4\tline 4", "     5\tline 5"]
    assert "showing lines 4-5 of 10; use offset=6" in out.output


async def test_read_default_limit_is_2000(root: Path) -> None:
    (root / "big.txt").write_text("".join(f"{i}\n" for i in range(1, 2501)))
    out = await call(root, "read", path="big.txt")
    assert "  2000\t2000" in out.output and "2001\t" not in out.output
    assert "use offset=2001" in out.output


async def test_read_failures(root: Path) -> None:
    (root / "dir").mkdir()
    (root / "bin").write_bytes(b"\x7fELF\x00\x01")
    (root / "short.txt").write_text("a\n")
    (root / "empty.txt").write_text("")
    cases = {
        "missing.txt": "not found",
        "dir": "is a directory",
        "bin": "binary",
    }
    for path, message in cases.items():
        out = await call(root, "read", path=path)
        assert out.error and message in out.output, path
    out = await call(root, "read", path="short.txt", offset=5)
    assert out.error and "past the end" in out.output
    assert await call(root, "read", path="empty.txt") == ToolOutput("(empty file)")


async def test_read_cuts_very_long_lines(root: Path) -> None:
    (root / "wide.txt").write_text("x" * 5000 + "\n")
    out = await call(root, "read", path="wide.txt")
    assert "[line cut]" in out.output and len(out.output) < 2100


# ---- write ----------------------------------------------------------------------------


async def test_write_creates_parents_and_overwrites(root: Path) -> None:
    out = await call(root, "write", path="deep/er/new.txt", content="héllo\n")
    assert not out.error and "Created deep/er/new.txt" in out.output
    assert (root / "deep/er/new.txt").read_text() == "héllo\n"
    out = await call(root, "write", path="deep/er/new.txt", content="bye")
    assert not out.error and "Overwrote" in out.output
    assert (root / "deep/er/new.txt").read_text() == "bye"


async def test_write_to_directory_is_an_error(root: Path) -> None:
    (root / "d").mkdir()
    out = await call(root, "write", path="d", content="x")
    assert out.error and "directory" in out.output


async def test_write_absolute_path_inside_root(root: Path) -> None:
    out = await call(root, "write", path=str(root / "abs.txt"), content="ok")
    assert not out.error
    assert (root / "abs.txt").read_text() == "ok"


# ---- edit -----------------------------------------------------------------------------


async def test_edit_replaces_unique_string(root: Path) -> None:
    (root / "m.py").write_text("def f():\n    return 1\r\n")
    out = await call(root, "edit", path="m.py", old_string="return 1", new_string="return 2")
    assert not out.error and "replaced 1 occurrence" in out.output
    assert (root / "m.py").read_bytes() == b"def f():\n    return 2\r\n"  # CRLF kept


async def test_edit_not_found_and_not_unique(root: Path) -> None:
    (root / "m.py").write_text("a = 1\na = 1\n")
    out = await call(root, "edit", path="m.py", old_string="b = 1", new_string="b = 2")
    assert out.error and "not found" in out.output
    out = await call(root, "edit", path="m.py", old_string="a = 1", new_string="a = 2")
    assert out.error and "2 times" in out.output and "replace_all" in out.output
    assert (root / "m.py").read_text() == "a = 1\na = 1\n"  # untouched on failure


async def test_edit_replace_all(root: Path) -> None:
    (root / "m.py").write_text("a = 1\na = 1\nb = 1\n")
    out = await call(
        root, "edit", path="m.py", old_string="a = 1", new_string="a = 2", replace_all=True
    )
    assert not out.error and "replaced 2 occurrences" in out.output
    assert (root / "m.py").read_text() == "a = 2\na = 2\nb = 1\n"


async def test_edit_identical_empty_and_missing(root: Path) -> None:
    (root / "m.py").write_text("x\n")
    out = await call(root, "edit", path="m.py", old_string="x", new_string="x")
    assert out.error and "identical" in out.output
    out = await call(root, "edit", path="m.py", old_string="", new_string="y")
    assert out.error and "empty" in out.output
    out = await call(root, "edit", path="nope.py", old_string="x", new_string="y")
    assert out.error and "not found" in out.output


# ---- list -----------------------------------------------------------------------------


async def test_list_sorted_dirs_marked_git_skipped(root: Path) -> None:
    for d in ("zdir", "adir", ".git"):
        (root / d).mkdir()
    for f in ("b.txt", "a.txt", ".env"):
        (root / f).write_text("")
    out = await call(root, "list")
    assert out.output.splitlines() == ["./", "  .env", "  a.txt", "  adir/", "  b.txt", "  zdir/"]
    (root / "adir" / "inner.txt").write_text("")
    out = await call(root, "list", path="adir")
    assert out.output.splitlines() == ["adir/", "  inner.txt"]


async def test_list_failures(root: Path) -> None:
    (root / "f.txt").write_text("")
    out = await call(root, "list", path="f.txt")
    assert out.error and "not a directory" in out.output
    out = await call(root, "list", path="nope")
    assert out.error and "not found" in out.output


# ---- glob -----------------------------------------------------------------------------


async def test_glob_newest_first_relative_to_root(root: Path) -> None:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / ".git").mkdir()
    files = {"old.py": 1_000, "src/mid.py": 2_000, "src/pkg/new.py": 3_000, "src/x.txt": 4_000}
    for rel, mtime in files.items():
        (root / rel).write_text("")
        os.utime(root / rel, (mtime, mtime))
    (root / ".git" / "hook.py").write_text("")
    out = await call(root, "glob", pattern="*.py")
    assert out.output.splitlines() == ["src/pkg/new.py", "src/mid.py", "old.py"]
    out = await call(root, "glob", pattern="**/*.py", path="src")
    assert out.output.splitlines() == ["src/pkg/new.py", "src/mid.py"]
    out = await call(root, "glob", pattern="pkg/*.py", path="src")
    assert out.output.splitlines() == ["src/pkg/new.py"]
    out = await call(root, "glob", pattern="*.{txt,py}", path="src")
    assert out.output.splitlines() == ["src/x.txt", "src/pkg/new.py", "src/mid.py"]


async def test_glob_no_match_and_bad_input(root: Path) -> None:
    assert (await call(root, "glob", pattern="*.rs")).output == "No files found."
    out = await call(root, "glob", pattern="/etc/*")
    assert out.error and "relative" in out.output
    out = await call(root, "glob", pattern="*", path="missing")
    assert out.error and "not found" in out.output


async def test_glob_caps_results(root: Path) -> None:
    for i in range(MAX_GLOB_RESULTS + 5):
        (root / f"f{i}.txt").write_text("")
    out = await call(root, "glob", pattern="*.txt")
    lines = out.output.splitlines()
    assert len(lines) == MAX_GLOB_RESULTS + 1
    assert "5 more files not shown" in lines[-1]


# ---- grep: both engines, same output ------------------------------------------------


@pytest.fixture
def engine() -> str:
    """grep has one engine now (ripgrep is not used: see opencoded/tools/search.py)."""
    return "python"


async def test_grep_format_and_include(root: Path, engine: str) -> None:
    (root / "src").mkdir()
    (root / "src" / "a.py").write_text("import os\nx = 1\ndef foo():\n")
    (root / "src" / "b.txt").write_text("def foo in text\n")
    (root / "c.py").write_text("def foo_bar(): pass\n")
    (root / "blob.bin").write_bytes(b"def foo\x00\x01")
    (root / ".git").mkdir()
    (root / ".git" / "x.py").write_text("def foo\n")
    out = await call(root, "grep", pattern=r"def \w+")
    assert out.output.splitlines() == [
        "c.py:1: def foo_bar(): pass",
        "src/a.py:3: def foo():",
        "src/b.txt:1: def foo in text",
    ]
    out = await call(root, "grep", pattern="foo", include="*.py")
    assert out.output.splitlines() == ["c.py:1: def foo_bar(): pass", "src/a.py:3: def foo():"]
    out = await call(root, "grep", pattern="x = ", path="src/a.py")
    assert out.output == "src/a.py:2: x = 1"
    assert (await call(root, "grep", pattern="zzz")).output == "No matches found."


async def test_grep_errors_and_cap(root: Path, engine: str) -> None:
    out = await call(root, "grep", pattern="(unclosed")
    assert out.error and "invalid regular expression '(unclosed'" in out.output
    out = await call(root, "grep", pattern="x", path="nope")
    assert out.error and "not found" in out.output
    (root / "many.txt").write_text("hit\n" * (MAX_GREP_MATCHES + 10))
    out = await call(root, "grep", pattern="hit")
    lines = out.output.splitlines()
    assert len(lines) == MAX_GREP_MATCHES + 1
    assert f"showing {MAX_GREP_MATCHES} of {MAX_GREP_MATCHES + 10} matches" in lines[-1]


# ---- path confinement ---------------------------------------------------------------


def test_relative_parts_direct(root: Path, outside: Path) -> None:
    assert relative_parts(root, "sub/../sub/x") == ["sub", "x"]
    assert relative_parts(root, ".") == []
    assert relative_parts(root, str(root / "a" / "b")) == ["a", "b"]
    with pytest.raises(PathEscapeError):
        relative_parts(root, "sub/../../outside/secret.txt")
    with pytest.raises(PathEscapeError):
        relative_parts(root, str(outside / "secret.txt"))
    # a sibling whose name merely starts with the root's name is still outside
    with pytest.raises(PathEscapeError):
        relative_parts(root, str(root.parent / (root.name + "2")))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "symlinked-dir"])
async def test_escapes_are_refused_for_every_tool(root: Path, outside: Path, how: str) -> None:
    (root / "link").symlink_to(outside / "secret.txt")
    (root / "dirlink").symlink_to(outside)
    path = {
        "dotdot": "../outside/secret.txt",
        "absolute": str(outside / "secret.txt"),
        "symlink": "link",
        "symlinked-dir": "dirlink/secret.txt",
    }[how]
    calls = {
        "read": {"path": path},
        "write": {"path": path, "content": "pwned"},
        "edit": {"path": path, "old_string": "top", "new_string": "pwned"},
        "list": {"path": path.rsplit("/", 1)[0] if "/" in path else path},
        "glob": {"pattern": "*", "path": path},
        "grep": {"pattern": "secret", "path": path},
    }
    refusal = "symbolic link" if "symlink" in how else "outside the session directory"
    for name, args in calls.items():
        out = await run_tool(name, args, ctx_for(root))
        assert out.error and refusal in out.output, (name, out)
        assert "top secret" not in out.output
    assert (outside / "secret.txt").read_text() == "top secret\n"


async def test_dangling_symlink_to_outside_is_not_written(root: Path, outside: Path) -> None:
    (root / "trap").symlink_to(outside / "created.txt")
    out = await call(root, "write", path="trap", content="pwned")
    assert out.error and "symbolic link" in out.output
    assert not (outside / "created.txt").exists()


async def test_search_does_not_follow_symlinks_out(root: Path, outside: Path, engine: str) -> None:
    (root / "dirlink").symlink_to(outside)
    (root / "filelink.txt").symlink_to(outside / "secret.txt")
    (root / "inside.txt").write_text("secret but fine\n")
    out = await call(root, "grep", pattern="secret")
    assert out.output == "inside.txt:1: secret but fine"
    out = await call(root, "glob", pattern="*.txt")
    assert out.output == "inside.txt"


async def test_symlink_inside_root_is_not_followed_either(root: Path) -> None:
    """Policy (docs/security.md): no symlink is followed, even one pointing inside."""
    (root / "real.txt").write_text("fine\n")
    (root / "alias.txt").symlink_to(root / "real.txt")
    out = await call(root, "read", path="alias.txt")
    assert out.error and "symbolic link" in out.output
    assert (await call(root, "read", path="real.txt")).output == "     1\tfine"


# ---- output capping -------------------------------------------------------------------


async def test_read_pages_wide_files_within_the_budget(root: Path) -> None:
    (root / "wide.txt").write_text(("y" * 1500 + "\n") * 100)  # 150 KB, under the line limit
    out = await call(root, "read", path="wide.txt")
    assert len(out.output) <= MAX_CHARS
    last = int(out.output.rsplit("use offset=", 1)[1].rstrip(")"))
    assert 20 < last < 40
    assert f"{last - 1:6}\t" in out.output and f"{last:6}\t" not in out.output


async def test_long_output_is_capped_and_says_so(root: Path, engine: str) -> None:
    (root / "wide.txt").write_text(("hit " + "y" * 400 + "\n") * 400)  # 160 KB of matches
    out = await call(root, "grep", pattern="hit")
    assert len(out.output) < MAX_CHARS + 300
    assert out.output.startswith("wide.txt:1: hit yyy")
    assert "[output truncated: showing the first" in out.output


async def test_bash_output_keeps_head_and_tail(root: Path) -> None:
    out = await call(root, "bash", command="seq 1 200000")
    assert not out.error
    lines = out.output.splitlines()
    assert len(lines) <= MAX_LINES + 5 and len(out.output) <= MAX_CHARS
    assert lines[0] == "1" and "200000" in lines
    assert "omitted" in out.output and out.output.endswith("exit code: 0")


# ---- bash -----------------------------------------------------------------------------


async def test_bash_success_cwd_stderr_and_stdin(root: Path) -> None:
    out = await call(root, "bash", command="pwd; echo err >&2; cat; echo done")
    assert out == ToolOutput(f"{root}\nerr\ndone\n\nexit code: 0")


async def test_bash_nonzero_exit_is_an_error(root: Path) -> None:
    out = await call(root, "bash", command="echo oops; exit 3", description="fail")
    assert out.error and out.output == "oops\n\nexit code: 3"
    out = await call(root, "bash", command="true")
    assert out == ToolOutput("(no output)\n\nexit code: 0")


async def test_bash_environment_hides_daemon_secrets(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCODE_TOKEN", "sk-opencode-secret")
    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setenv("NOTIFY_SOCKET", "@x")
    monkeypatch.setenv("KEEP_ME", "yes")
    out = await call(root, "bash", command="env")
    assert "KEEP_ME=yes" in out.output
    for hidden in ("OPENCODE_TOKEN", "LISTEN_FDS", "NOTIFY_SOCKET", "sk-opencode-secret"):
        assert hidden not in out.output


async def test_bash_background_children_do_not_outlive_the_command(root: Path) -> None:
    out = await call(root, "bash", command="sleep 600 & echo $! > bg.pid; echo started")
    assert not out.error and out.output.startswith("started")
    pid = int((root / "bg.pid").read_text())
    assert await await_until(lambda: not alive(pid), 2.0)


async def test_bash_timeout_kills_the_group(root: Path) -> None:
    spawned: list[int] = []
    ctx = ctx_for(root, on_spawn=spawned.append)
    with trio.fail_after(10):  # a hang bound: the 0.5 s timeout itself is what is tested
        out = await run_tool(
            "bash",
            {"command": "sleep 600 & echo $! > bg.pid; echo before; sleep 600", "timeout": 0.5},
            ctx,
        )
    assert out.error and "before" in out.output and "timed out after 0.5 s" in out.output
    pid = int((root / "bg.pid").read_text())
    assert await await_until(lambda: not alive(pid) and not alive(spawned[0]), 2.0)


async def test_bash_bad_timeout(root: Path) -> None:
    out = await call(root, "bash", command="true", timeout=0)
    assert out.error and "timeout" in out.output


async def test_bash_cancellation_kills_group_before_returning(root: Path) -> None:
    events: list[tuple[str, int]] = []
    ctx = ctx_for(
        root,
        on_spawn=lambda pg: events.append(("spawn", pg)),
        on_exit=lambda pg: events.append(("exit", pg)),
    )
    pidfile = root / "child.pid"
    command = "sleep 600 & echo $! > child.pid; sleep 600"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_tool, "bash", {"command": command}, ctx)
        assert await await_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
        pgid = events[0][1]
        child = int(pidfile.read_text())
        assert alive(pgid) and alive(child)
        assert os.getpgid(child) == pgid  # on_spawn reports the command's process group
        nursery.cancel_scope.cancel()
    # The cancelled call returned only after the group exited (the order says so).
    assert events == [("spawn", pgid), ("exit", pgid)]
    with pytest.raises(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)  # the leader was reaped, not left a zombie
    assert await await_until(lambda: not alive(child), 5.0)


CHILD_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import trio

    from opencoded.tools import ToolContext, run_tool


    def spawned(pgid):
        print(pgid, flush=True)


    async def main():
        ctx = ToolContext(root=Path(sys.argv[1]), on_spawn=spawned)
        await run_tool("bash", {"command": "sleep 600 & echo $! > sleep.pid; wait"}, ctx)


    trio.run(main)
    """
)


def test_command_dies_with_a_sigkilled_daemon(root: Path) -> None:
    script = root.parent / "daemon.py"
    script.write_text(CHILD_SCRIPT)
    daemon = subprocess.Popen(
        [sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert daemon.stdout is not None
        pgid = int(daemon.stdout.readline())
        pidfile = root / "sleep.pid"
        assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
        sleeper = int(pidfile.read_text())
        assert alive(sleeper) and alive(pgid)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(5)
        assert wait_until(lambda: not alive(sleeper) and not alive(pgid), 3.0)
    finally:
        daemon.kill()
        daemon.wait(5)
        daemon.stdout.close()  # type: ignore[union-attr]
