"""Path confinement: the one place that opens files inside a session's (or project's) root.

Tools and the HTTP file routes never check a path and then open it by name: another process
could swap a directory for a symlink in between. Instead every access opens the root once,
then opens each component relative to the directory fd of the one before, refusing symbolic
links at every step. Where the kernel has `openat2` (Linux 5.6+) that is one syscall with
RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS; elsewhere the same rule is
walked by hand with `O_NOFOLLOW` relative to directory fds.

The policy (docs/security.md, "Path confinement"):
- `..` may not climb above the root; absolute paths must name the root or something in it.
- Symbolic links are never followed, even ones that point inside the root: following them
  safely needs the kernel's help and the answer must not depend on the kernel version.
- Only regular files are read or written (never a FIFO, device or socket: a FIFO would block
  the open), and a regular file with more than one hard link is refused, because the other
  link may be a file outside the root (hard links cannot be told apart).

The fd-returning functions do blocking I/O, so async callers run them in a worker thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import posixpath
import stat
from collections.abc import Iterator
from pathlib import Path

from opencoded.tools.base import ToolError


class PathEscapeError(ToolError):
    """The path points outside the root."""


class LinkRefused(ToolError):
    """The path goes through a symbolic link, which is never followed."""


class FileRefused(ToolError):
    """The file is not a regular file, or has other hard links; it is never read or written."""


class NotFoundError(ToolError):
    """The path does not exist (or a component of it is not a directory)."""


SYS_OPENAT2 = 437  # the same number on every architecture (new syscalls share one table)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_FLAGS = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _openat2(dir_fd: int, rel: str, flags: int, mode: int) -> int:
    how = _OpenHow(flags, mode if flags & os.O_CREAT else 0, RESOLVE_FLAGS)
    name = rel.encode("utf-8", "surrogateescape")
    for _ in range(8):
        fd = _syscall(SYS_OPENAT2, dir_fd, name, ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err not in (errno.EAGAIN, errno.EINTR):  # EAGAIN: a rename raced the lookup
            raise OSError(err, os.strerror(err), rel)
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), rel)


def _probe_openat2() -> bool:
    try:
        fd = _openat2(os.open("/", DIR_FLAGS), ".", DIR_FLAGS, 0)
    except OSError:  # ENOSYS on old kernels, EPERM under some seccomp filters
        return False
    os.close(fd)
    return True


HAVE_OPENAT2 = _probe_openat2()


def relative_parts(root: Path, path: str | os.PathLike[str]) -> list[str]:
    """The components of `path` below `root`, `..` folded, or PathEscapeError.

    `path` is relative to the root, or absolute (then it must be the root or under it).
    Folding `..` by text is exact here because no component may be a symlink.
    """
    text = os.fspath(path)
    if "\x00" in text:
        raise ToolError("path contains a NUL byte")
    if text.startswith("~"):
        try:
            text = os.path.expanduser(text)
        except (KeyError, RuntimeError) as exc:
            raise ToolError(f"cannot resolve path {text!r}: {exc}") from exc
        if text.startswith("~"):
            raise ToolError(f"cannot resolve path {text!r}: unknown user")
    if os.path.isabs(text):
        rel = posixpath.relpath(posixpath.normpath(text), os.fspath(root))
    else:
        rel = posixpath.normpath(text or ".")
    if rel == ".." or rel.startswith("../") or rel.startswith("/"):
        raise PathEscapeError(f"path is outside the session directory: {os.fspath(path)}")
    return [] if rel == "." else rel.split("/")


def _fallback_open(dir_fd: int, parts: list[str], flags: int, mode: int) -> int:
    """openat2's rule walked by hand: every component opened with O_NOFOLLOW."""
    current = os.open(".", DIR_FLAGS, dir_fd=dir_fd)
    try:
        for name in parts[:-1]:
            nxt = os.open(name, DIR_FLAGS, dir_fd=current)
            os.close(current)
            current = nxt
        return os.open(parts[-1] if parts else ".", flags, mode, dir_fd=current)
    finally:
        os.close(current)


def _open_parts(dir_fd: int, parts: list[str], flags: int, mode: int = 0o666) -> int:
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC
    if HAVE_OPENAT2:
        return _openat2(dir_fd, "/".join(parts) or ".", flags, mode)
    return _fallback_open(dir_fd, parts, flags, mode)


def _is_link(dir_fd: int, parts: list[str]) -> bool:
    """After ELOOP/ENOTDIR/EXDEV: is a component a symlink? Only words the error, so one
    linear walk, giving up (False) at the first component that is not a plain directory."""
    current = os.open(".", DIR_FLAGS, dir_fd=dir_fd)
    try:
        for name in parts:
            info = os.stat(name, dir_fd=current, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                return True
            if not stat.S_ISDIR(info.st_mode):
                return False
            nxt = os.open(name, DIR_FLAGS, dir_fd=current)
            os.close(current)
            current = nxt
    except OSError:
        return False
    finally:
        os.close(current)
    return False


def _explain(exc: OSError, dir_fd: int, parts: list[str], shown: str) -> ToolError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV) and _is_link(dir_fd, parts):
        return LinkRefused(f"{shown} goes through a symbolic link, which is not followed")
    if exc.errno == errno.EXDEV:
        return PathEscapeError(f"path is outside the session directory: {shown}")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return NotFoundError(f"not found: {shown}")
    if exc.errno == errno.ENAMETOOLONG:
        return ToolError(f"path too long: {shown[:200]}")
    if exc.errno == errno.ENXIO:  # a FIFO without a reader, opened to write; a socket
        return FileRefused(f"{shown} is not a regular file (FIFO, socket or device); not opened")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return FileRefused(f"permission denied: {shown}")
    return ToolError(f"cannot open {shown}: {exc.strerror}")


@contextlib.contextmanager
def open_root(root: Path) -> Iterator[int]:
    """The root directory's fd (the one path opened by name: it is the trust anchor)."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ToolError(f"cannot open the session directory {root}: {exc.strerror}") from exc
    try:
        yield fd
    finally:
        os.close(fd)


def open_inside(root_fd: int, parts: list[str], flags: int, shown: str, mode: int = 0o666) -> int:
    """Open `parts` below `root_fd` without following any link; errors as ToolErrors."""
    try:
        return _open_parts(root_fd, parts, flags, mode)
    except OSError as exc:
        raise _explain(exc, root_fd, parts, shown) from exc


def open_dir(root_fd: int, parts: list[str], shown: str) -> int:
    """A readable directory fd (for scandir/fwalk), or a ToolError."""
    try:
        return _open_parts(root_fd, parts, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        if exc.errno == errno.ENOTDIR and not _is_link(root_fd, parts):
            raise NotADirectory(f"{shown} is not a directory") from exc
        raise _explain(exc, root_fd, parts, shown) from exc


class NotADirectory(ToolError):
    """A directory was expected."""


def check_regular(fd: int, shown: str) -> os.stat_result:
    """fstat the opened fd: refuse anything but a regular file with one link."""
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectory(f"{shown} is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise FileRefused(f"{shown} is not a regular file (FIFO, socket or device); not opened")
    if info.st_nlink > 1:
        raise FileRefused(
            f"{shown} has {info.st_nlink} hard links; refused, because another link may be "
            "a file outside the session directory"
        )
    return info


class IsADirectory(ToolError):
    """A file was expected."""


def open_regular(root_fd: int, parts: list[str], shown: str, flags: int = os.O_RDONLY) -> int:
    """Open a regular, singly linked file below the root (never blocking on a FIFO)."""
    fd = open_inside(root_fd, parts, flags | os.O_NONBLOCK, shown)
    try:
        check_regular(fd, shown)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_parents(root_fd: int, parts: list[str], shown: str) -> int:
    """mkdir -p for the parents of `parts`, one mkdirat at a time; the parent's fd."""
    current = os.open(".", DIR_FLAGS, dir_fd=root_fd)
    try:
        for name in parts[:-1]:
            try:
                nxt = os.open(name, DIR_FLAGS, dir_fd=current)
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=current)
                nxt = os.open(name, DIR_FLAGS, dir_fd=current)
            os.close(current)
            current = nxt
    except OSError as exc:
        os.close(current)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(root_fd, parts):
            raise LinkRefused(
                f"{shown} goes through a symbolic link, which is not followed"
            ) from exc
        if exc.errno == errno.ENOTDIR:
            raise ToolError(f"cannot create {shown}: a parent is not a directory") from exc
        raise _explain(exc, root_fd, parts, shown) from exc
    return current


def relative_to_root(root: Path, path: Path) -> str:
    """How a path under the root is shown to the model and clients: relative, '.' for it."""
    rel = Path(path).relative_to(root)
    return rel.as_posix() if rel.parts else "."


def shown_path(parts: list[str]) -> str:
    return "/".join(parts) or "."
