"""The supervisor of one bash command; run as a script, never imported by the daemon.

    python -I -S reaper.py DAEMON_PID REPORT_FD -- ARGV...

It exists so that a command's whole process tree dies with its turn and with the daemon,
including children that `setsid` or double-fork away from the command's process group:

- it is a child subreaper (PR_SET_CHILD_SUBREAPER), so every orphan below it is re-parented
  to it instead of to init: it can always find all of its descendants as its children;
- it has PR_SET_PDEATHSIG=SIGTERM, so it hears when the daemon dies, even by SIGKILL;
- when ARGV's process exits, or on SIGTERM/SIGHUP/SIGINT, it SIGKILLs its children, reaps
  them, and repeats until none is left (the orphans of each killed one come to it next);
- it then writes "STATUS KILLED" to REPORT_FD (STATUS: exit code, or -N for signal N, or
  "none" if ARGV's process had not ended; KILLED: how many live processes it killed) and exits.

The daemon spawns it with no preexec_fn (forking a multi-threaded Python and running Python
in the child is unsafe); everything here runs in the fresh single-threaded interpreter, so
its own fork is safe. It imports only the standard library (-I -S: no site, no user paths).
"""

import contextlib
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGINT}


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def children() -> list[int]:
    me = os.getpid()
    try:
        tasks = os.listdir(f"/proc/{me}/task")
        text = "".join(read(f"/proc/{me}/task/{tid}/children") for tid in tasks)
        return [int(p) for p in text.split()]
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: scan /proc
        pass
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = read(f"/proc/{name}/stat")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(name))
    return found


def is_zombie(pid: int) -> bool:
    try:
        return read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def kill_all(statuses: dict[int, int]) -> int:
    """SIGKILL every descendant until none is left; return how many were alive."""
    killed: set[int] = set()
    while True:
        for pid in children():
            if pid not in killed and not is_zombie(pid):
                killed.add(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return len(killed)
        statuses[pid] = status


def status_text(status: int | None) -> str:
    if status is None:
        return "none"
    if os.WIFSIGNALED(status):
        return str(-os.WTERMSIG(status))
    return str(os.waitstatus_to_exitcode(status))


def main() -> None:
    daemon_pid, report_fd, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[4:]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    statuses: dict[int, int] = {}
    command = None
    if os.getppid() == daemon_pid:  # else the daemon died before PDEATHSIG was set
        command = os.fork()
        if command == 0:
            try:
                os.close(report_fd)
                signal.pthread_sigmask(signal.SIG_SETMASK, set())
                os.execvp(argv[0], argv)
            finally:
                os._exit(127)
        while command not in statuses:
            info = signal.sigwaitinfo(SIGNALS)
            if info.si_signo != signal.SIGCHLD:
                break
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                statuses[pid] = status
    ended = statuses.get(command) if command else None
    killed = kill_all(statuses)
    os.write(report_fd, f"{status_text(ended)} {killed}\n".encode())
    os._exit(0)


if __name__ == "__main__":
    main()
