"""The OS sandbox for the bash tool's commands (bubblewrap), and broad-root refusal.

Path checks in Python confine the file tools; a shell command can open anything its user
can, so commands are confined by the kernel instead, the way Claude Code does it on Linux:
each command runs under `bwrap` in new user, pid, ipc, uts (and, with the network off, net)
namespaces, with every capability dropped, no further user namespaces, and a mount view:

- the whole file system read-only (`--ro-bind / /`), a fresh /dev, /proc, /tmp, /var/tmp;
- the session directory writable (mode "workspace-write"; not in "read-only"), plus
  `sandbox.writable`;
- hidden (an empty tmpfs over a directory, /dev/null over a file): /run (runtime sockets),
  the daemon's data directory (token, database), its config file (provider keys), its
  socket, credentials in the home directory (~/.ssh, ~/.aws...), and `sandbox.hide`.

The pid namespace also gives the process-tree guarantee: when the command's init dies, the
kernel kills every process in the namespace, `setsid` or not. Whether bwrap works here is
probed once at start (`probe`), logged, and shown in GET /health; when it does not,
`sandbox.fallback` says whether commands run unconfined or are refused.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from opencoded import paths as daemon_paths
from opencoded.tools.base import ToolError

if TYPE_CHECKING:
    from opencoded.config import Config

log = logging.getLogger(__name__)

# Namespaces and privileges, the same for every command (and for the probe).
BWRAP_BASE = [
    "--unshare-user", "--disable-userns", "--cap-drop", "ALL",
    "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
    "--die-with-parent", "--new-session",
    "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
    "--tmpfs", "/tmp", "--tmpfs", "/var/tmp",
    # Runtime sockets trust whoever can connect, whatever the network namespace: the D-Bus
    # buses and systemd's private socket (start a unit: out of the sandbox), docker and
    # containerd (root), the user's runtime dir (ssh/gpg agents). /var/run links here.
    "--tmpfs", "/run",
]  # fmt: skip
# With the network on, DNS may need the resolver's files under /run (systemd-resolved).
NETWORK_RUN = ["--ro-bind-try", "/run/systemd/resolve", "/run/systemd/resolve"]
# Credentials in the home directory, hidden unless sandbox.hideCredentials is false: a
# command's output goes to the model's provider, so "read the system" must not mean these.
CREDENTIALS = (
    ".ssh", ".gnupg", ".aws", ".azure", ".config/gcloud", ".kube", ".docker", ".netrc",
    ".git-credentials", ".password-store", ".pypirc", ".npmrc", ".config/gh",
)  # fmt: skip


@attrs.frozen
class SandboxStatus:
    available: bool
    backend: str | None = None
    reason: str | None = None


@functools.cache
def probe() -> SandboxStatus:
    """Can this machine run a command under bwrap with our options? Asked once."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return SandboxStatus(False, reason="bubblewrap (bwrap) is not installed")
    cmd = [bwrap, *BWRAP_BASE, "--unshare-net", "--", "true"]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=15, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return SandboxStatus(False, reason=f"bwrap could not run: {exc}")
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()
        why = err[-1] if err else f"exit code {done.returncode}"
        return SandboxStatus(False, reason=f"bwrap cannot create a sandbox here: {why}")
    return SandboxStatus(True, backend="bubblewrap")


@attrs.frozen
class Jail:
    """The sandbox settings of one daemon, turned into a command line per command."""

    mode: str = "workspace-write"
    network: bool = False
    fallback: str = "refuse"
    writable: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()

    @property
    def status(self) -> SandboxStatus:
        return probe() if self.mode != "off" else SandboxStatus(False, reason="sandbox.mode is off")

    def wrap(self, root: Path, argv: list[str]) -> tuple[list[str], bool]:
        """(argv to run, confined?) for a command in `root`; ToolError when refused."""
        if self.mode == "off":
            return argv, False
        status = probe()
        if not status.available:
            if self.fallback == "unconfined":
                return argv, False
            raise ToolError(
                f"commands are refused: no sandbox is available ({status.reason}); the "
                "daemon's config can set sandbox.fallback to 'unconfined'"
            )
        return [shutil.which("bwrap") or "bwrap", *self._mounts(root), "--", *argv], True

    def _mounts(self, root: Path) -> list[str]:
        args = list(BWRAP_BASE)
        if self.mode == "workspace-write":
            args += ["--bind", str(root), str(root)]
            for path in self.writable:
                args += ["--bind-try", path, path]
        else:  # bound again all the same: it may be under /tmp, which is a fresh tmpfs here
            args += ["--ro-bind", str(root), str(root)]
        for path in self.hidden:  # after the binds, so a hidden path inside them stays hidden
            args += _hide(path)
        if self.network:
            args += NETWORK_RUN
        else:
            args.append("--unshare-net")
        return [*args, "--chdir", str(root), "--setenv", "TMPDIR", "/tmp"]

    def health(self) -> dict[str, Any]:
        status = self.status
        body: dict[str, Any] = {"mode": self.mode, "network": self.network}
        body["available"] = status.available
        if status.available:
            body["backend"] = status.backend
        else:
            body["reason"] = status.reason
            body["commands"] = "unconfined" if self.runs_unconfined else "refused"
        return body

    @property
    def runs_unconfined(self) -> bool:
        return self.mode == "off" or self.fallback == "unconfined"


def _hide(path: str) -> list[str]:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return []  # nothing there to read
    if stat.S_ISDIR(mode):
        return ["--tmpfs", path]
    return ["--ro-bind", "/dev/null", path]


def jail_for(config: Config, socket: str | None = None) -> Jail:
    """The jail for `config`; `socket` is the Unix socket actually served (a socket passed
    by systemd may not be the configured one): hidden too, since it trusts its callers."""
    sandbox = config.sandbox
    hidden = [
        config.data_path,
        daemon_paths.config_file(),
        config.socket_path,
        *([Path(socket)] if socket else []),
        *map(Path, sandbox.hide),
        *([Path.home() / name for name in CREDENTIALS] if sandbox.hide_credentials else []),
    ]
    return Jail(
        mode=sandbox.mode,
        network=sandbox.network,
        fallback=sandbox.fallback,
        writable=tuple(str(Path(p).expanduser().absolute()) for p in sandbox.writable),
        hidden=tuple(dict.fromkeys(os.path.realpath(p.expanduser()) for p in hidden)),
    )


def announce(jail: Jail) -> None:
    """Say once, at start, how commands will run."""
    status = jail.status
    if status.available:
        net = "on" if jail.network else "off"
        log.info("sandbox: commands run under %s (%s, network %s)", status.backend, jail.mode, net)
    elif jail.mode == "off":
        log.warning("sandbox: off by config; commands run unconfined")
    elif jail.fallback == "unconfined":
        log.warning("sandbox unavailable (%s); commands run unconfined", status.reason)
    else:
        log.warning("sandbox unavailable (%s); commands are refused", status.reason)


BROAD_ROOTS = (
    "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/opt",
    "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/tmp",
    "/media", "/mnt",
)  # fmt: skip


def broad_root_reason(directory: Path, config: Config) -> str | None:
    """Why `directory` (resolved) may not be a session/project directory, or None.

    Refused: `/`, the top-level system directories themselves, the home directory or one of
    its ancestors, and the daemon's data directory, its ancestors and anything inside it
    (the tools could then read the token and the database).
    """
    if config.sandbox.allow_broad_roots:
        return None
    home = Path.home().resolve()
    data = config.data_path.expanduser().resolve()
    if directory == Path("/") or str(directory) in BROAD_ROOTS:
        return "a system root"
    if directory == home or home.is_relative_to(directory):
        return "the home directory or one of its parents"
    if data.is_relative_to(directory) or directory.is_relative_to(data):
        return "the daemon's data directory, inside it, or a parent of it"
    return None
