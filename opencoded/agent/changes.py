"""Recording what the agent's tools change in the session directory, and undoing it.

No git: it must work outside a repository and never touch the user's index, stash or
branches. Around every `write` and `edit` call the target file is read before and after;
around every `bash` call the whole session directory is snapshotted (every regular file's
stat signature and content hash, `.git` directories skipped) before and after. What
differs is the call's change list, `[{path, before, after}]` with content hashes (None:
the file did not exist), kept in the tool part of the assistant message (`changes`).

Contents live in a content-addressed store in the data dir (`changes/ab/abcdef…`), never
in the session directory. A directory's snapshot index (path -> signature, hash) stays in
memory (the TRACKERS_KEPT most recently used directories), so after the first `bash` there
only files whose stat changed are read again; that first run reads the whole directory
once (files over MAX_FILE_BYTES, or past MAX_READ_BYTES read in one snapshot, are tracked
by signature only and cannot be restored; past MAX_FILES the rest is untracked). The agent
takes that first snapshot in the background when a turn starts (agent.turn), while the
model answers, so a bash call usually finds the index warm.

Reverting writes the recorded `before` contents back (deleting files that did not exist)
after checking that every file still holds what the agent left (its `after`): a file the
user changed since is a conflict, and nothing is touched. All file access goes through
tools.paths (relative to the root's fd, no link followed).
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import hashlib
import os
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from ..tools.base import ToolError
from ..tools.files import _create_or_open, _read_all, _rewrite
from ..tools.paths import (
    NotFoundError,
    check_regular,
    make_parents,
    open_dir,
    open_regular,
    open_root,
    relative_parts,
    shown_path,
)

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_READ_BYTES = 256 * 1024 * 1024  # read per snapshot; past it, files are tracked like large ones
MAX_FILES = 20_000
SKIP_DIRS = frozenset({".git"})
LARGE = "large:"  # a pseudo hash: tracked by signature, content not kept
DIR = "dir"  # a directory (its path ends with "/"): only its existence is tracked
TRACKED_TOOLS = frozenset({"write", "edit", "bash"})
TRACKERS_KEPT = 16  # directories whose snapshot index stays in memory
RACY_NS = 2_000_000_000  # a file changed this recently is read again by the next snapshot

Signature = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode


def _signature(info: os.stat_result) -> Signature:
    return (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


class Blobs:
    """Content-addressed file contents under the data dir."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stored: set[str] = set()  # digests known to be on disk
        self._folders: set[str] = set()

    def _path(self, digest: str) -> str:
        return os.path.join(self.directory, digest[:2], digest)

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if digest in self._stored:
            return digest
        path = self._path(digest)
        if not os.path.exists(path):
            folder = os.path.dirname(path)
            if folder not in self._folders:
                os.makedirs(folder, mode=0o700, exist_ok=True)
                self._folders.add(folder)
            tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"  # two threads may race
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:  # copies of project files: the user's eyes only
                f.write(data)
            os.replace(tmp, path)
        self._stored.add(digest)
        return digest

    def get(self, digest: str) -> bytes:
        with open(self._path(digest), "rb") as f:
            return f.read()


@attrs.define
class Tracker:
    """One session's snapshot index (in memory; see the module docstring)."""

    root: Path
    blobs: Blobs
    index: dict[str, tuple[Signature, str]] = attrs.Factory(dict)
    warming: bool = False  # a background first snapshot is running (agent.turn)
    budget: int = MAX_READ_BYTES  # bytes the current snapshot may still read

    def _content_hash(self, path: str, fd: int, info: os.stat_result) -> str:
        known = self.index.get(path)
        sig = _signature(info)
        if known is not None and known[0] == sig:
            return known[1]
        if info.st_size > MAX_FILE_BYTES or info.st_size > self.budget:
            digest = f"{LARGE}{info.st_size}:{info.st_mtime_ns}"
        else:
            self.budget -= info.st_size
            digest = self.blobs.put(_read_all(fd))
        # "Racily clean" (as git calls it): file times have a coarse clock, so a write
        # within the same tick can leave size and times unchanged. A file changed in the
        # last RACY_NS is not trusted by its signature: the next snapshot reads it again.
        recent = time.time_ns() - max(info.st_mtime_ns, info.st_ctime_ns) < RACY_NS
        self.index[path] = ((-1, -1, -1, -1) if recent else sig, digest)
        return digest

    def snapshot(self, only: Sequence[list[str]] | None = None) -> dict[str, str]:
        """path -> content hash of the regular files (of `only`, else of the tree)."""
        self.budget = MAX_READ_BYTES
        with open_root(self.root) as root_fd:
            if only is not None:
                return self._files(root_fd, only)
            return self._tree(root_fd)

    def _files(self, root_fd: int, targets: Sequence[list[str]]) -> dict[str, str]:
        out: dict[str, str] = {}
        for parts in targets:
            for depth in range(1, len(parts)):  # the parents a write may create
                try:
                    os.close(open_dir(root_fd, parts[:depth], shown_path(parts[:depth])))
                    out[shown_path(parts[:depth]) + "/"] = DIR
                except ToolError:
                    break
            path = shown_path(parts)
            try:
                fd = open_regular(root_fd, parts, path)
            except ToolError:
                continue  # absent, a directory, a link...: nothing to record
            try:
                out[path] = self._content_hash(path, fd, os.fstat(fd))
            finally:
                os.close(fd)
        return out

    def _tree(self, root_fd: int) -> dict[str, str]:
        out: dict[str, str] = {}
        self._walk(os.dup(root_fd), "", out)
        return out

    def _walk(self, dir_fd: int, prefix: str, out: dict[str, str]) -> None:
        """Snapshot one directory (closes `dir_fd`). An unchanged file costs one lstat
        (from scandir); only a changed one is opened (O_NOFOLLOW) and read."""
        subdirs = []
        try:
            with os.scandir(dir_fd) as entries:
                for entry in entries:
                    path = prefix + entry.name
                    if entry.is_dir(follow_symlinks=False):
                        if entry.name not in SKIP_DIRS:
                            out[path + "/"] = DIR
                            subdirs.append(entry.name)
                    elif entry.is_file(follow_symlinks=False):
                        if len(out) >= MAX_FILES:
                            return
                        self._file(dir_fd, entry, path, out)
            for name in subdirs:
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
                except OSError:
                    continue  # replaced by a link, vanished, no permission
                self._walk(fd, prefix + name + "/", out)
        finally:
            os.close(dir_fd)

    def _file(self, dir_fd: int, entry: os.DirEntry[str], path: str, out: dict[str, str]) -> None:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            return
        known = self.index.get(path)
        if known is not None and known[0] == _signature(info):
            out[path] = known[1]
            return
        try:
            fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError:
            return  # replaced by a link, vanished, no permission
        try:
            info = os.fstat(fd)  # what is hashed is this fd's file, whatever the lstat saw
            if stat.S_ISREG(info.st_mode):
                out[path] = self._content_hash(path, fd, info)
        finally:
            os.close(fd)


def targets(tool: str, args: dict[str, Any], root: Path) -> list[list[str]] | None:
    """What a call may change: the file of write/edit, the whole tree (None) for bash."""
    if tool == "bash":
        return None
    try:
        return [relative_parts(root, str(args.get("path", "")))]
    except ToolError:
        return []


def compare(before: dict[str, str], after: dict[str, str]) -> list[dict[str, Any]]:
    """The change list between two snapshots, by path."""
    changes = []
    for path in sorted(before.keys() | after.keys()):
        old, new = before.get(path), after.get(path)
        if old != new:
            changes.append({"path": path, "before": old, "after": new})
    return changes


# ---- combining recorded changes ----------------------------------------------------------


def net_changes(change_lists: Iterable[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per path: the first `before` and the last `after` (files back where they were
    are left out)."""
    first: dict[str, str | None] = {}
    last: dict[str, str | None] = {}
    for changes in change_lists:
        for change in changes:
            path = change["path"]
            first.setdefault(path, change["before"])
            last[path] = change["after"]
    return [
        {"path": p, "before": first[p], "after": last[p]}
        for p in sorted(first)
        if first[p] != last[p]
    ]


def _text(blobs: Blobs, digest: str | None) -> list[str] | None:
    """The lines of a content, or None when it is binary or not kept."""
    if digest is None:
        return []
    if digest.startswith(LARGE):
        return None
    data = blobs.get(digest)
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def unified_diff(blobs: Blobs, changes: Sequence[dict[str, Any]]) -> str:
    out: list[str] = []
    for change in changes:
        path = change["path"]
        if path.endswith("/"):
            continue
        old_name = f"a/{path}" if change["before"] is not None else "/dev/null"
        new_name = f"b/{path}" if change["after"] is not None else "/dev/null"
        old, new = _text(blobs, change["before"]), _text(blobs, change["after"])
        if old is None or new is None:
            out.append(f"Binary files {old_name} and {new_name} differ\n")
            continue
        for line in difflib.unified_diff(old, new, old_name, new_name):
            out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


# ---- restoring ---------------------------------------------------------------------------


class Conflict(Exception):
    def __init__(self, files: list[str], why: str) -> None:
        super().__init__(why)
        self.files = files


def restore(root: Path, blobs: Blobs, changes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Put every file of `changes` from its `after` back to its `before`.

    Every file must hold its `after` now (else Conflict, naming them, and nothing is
    touched). Directories the change created are removed if empty, removed ones made
    again. Returns what was done, as a change list (for the record).
    """
    files = [c for c in changes if not c["path"].endswith("/")]
    dirs = [c for c in changes if c["path"].endswith("/")]
    tracker = Tracker(root, blobs)
    parts = {c["path"]: relative_parts(root, c["path"].rstrip("/")) for c in changes}
    current = tracker.snapshot([parts[c["path"]] for c in files])
    conflicts = [c["path"] for c in files if current.get(c["path"]) != c["after"]]
    if conflicts:
        raise Conflict(conflicts, "changed since the agent's change: " + ", ".join(conflicts))
    unkept = [c["path"] for c in files if (c["before"] or "").startswith(LARGE)]
    if unkept:
        raise Conflict(unkept, "too large to have been recorded: " + ", ".join(unkept))
    done = []
    with open_root(root) as root_fd:
        for change in sorted(dirs, key=lambda c: len(parts[c["path"]])):
            if change["before"] is not None:  # a directory the change removed
                os.close(make_parents(root_fd, [*parts[change["path"]], "-"], change["path"]))
        for change in files:
            path = change["path"]
            if change["before"] is None:
                _remove(root_fd, parts[path], path)
            else:
                _write(root_fd, parts[path], path, blobs.get(change["before"]))
        for change in sorted(dirs, key=lambda c: -len(parts[c["path"]])):
            if change["before"] is None:  # a directory the change created
                _rmdir(root_fd, parts[change["path"]])
        for change in changes:
            done.append(
                {"path": change["path"], "before": change["after"], "after": change["before"]}
            )
    return done


def _write(root_fd: int, parts: list[str], shown: str, data: bytes) -> None:
    parent = make_parents(root_fd, parts, shown)
    try:
        existed, fd = _create_or_open(parent, parts[-1], shown)
    finally:
        os.close(parent)
    try:
        if existed:
            check_regular(fd, shown)
        _rewrite(fd, data)
    finally:
        os.close(fd)


def _remove(root_fd: int, parts: list[str], shown: str) -> None:
    try:
        parent = open_dir(root_fd, parts[:-1], shown)
    except NotFoundError:
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(parts[-1], dir_fd=parent)
    finally:
        os.close(parent)


def _rmdir(root_fd: int, parts: list[str]) -> None:
    """Remove a directory if it is empty (one the user filled since is kept)."""
    try:
        parent = open_dir(root_fd, parts[:-1], shown_path(parts[:-1]))
    except ToolError:
        return
    try:
        os.rmdir(parts[-1], dir_fd=parent)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.ENOTDIR):
            raise
    finally:
        os.close(parent)
