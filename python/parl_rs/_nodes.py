"""The node processes the `xparl` commands start: spawning one and waiting until it is ready,
stopping one by pid, the records of what was started, and the hosts and ports they use.
Shared by `parl_rs.cli` and `parl_rs.slurm`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

from parl_rs import keys
from parl_rs._cli_input import CliError
from parl_rs.client import _python_command

_READY_DEADLINE_S = 20.0
_STOP_GRACE_S = 5.0
_POLL_S = 0.05


def write_record(path: Path, record: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)  # atomic: a concurrent `xparl status` never reads half a record


def read_records(directory: Path) -> list[tuple[Path, dict]]:
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            records.append((path, json.loads(path.read_text())))
        except (OSError, ValueError):
            continue  # a damaged record must not break status or stop
    return records


def is_alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie (our detached nodes may be reaped late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


def is_our_node(pid: int) -> bool:
    """Guard against pid reuse: only a live `parl_rs._node` process may be signalled."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"parl_rs._node" in cmdline and is_alive(pid)


def spawn_node(
    node_args: list[str], log_path: Path, key: Optional[str], debug: bool = False
) -> subprocess.Popen:
    """Start a node detached from this terminal, its output going to `log_path`. The key goes
    through a pipe only the node inherits, never its environment (`/proc/<pid>/environ`, which
    its jobs could read) nor its command line (which `ps` shows everyone)."""
    env = dict(os.environ, XPARL="True")
    env.pop(keys.KEY_ENV, None)
    key_fd = None
    if key is None:
        node_args = [*node_args, "--insecure"]
    else:
        key_fd = keys.key_pipe(key)
        env[keys.KEY_FD_ENV] = str(key_fd)
    if debug:
        env.setdefault("PARL_RS_LOG", "debug")  # the native layer's log filter
    try:
        with open(log_path, "wb") as log:
            return subprocess.Popen(
                [*_python_command(), "-m", "parl_rs._node", *node_args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                pass_fds=() if key_fd is None else (key_fd,),
            )
    finally:
        if key_fd is not None:
            os.close(key_fd)  # the node has its own copy


def wait_ready(proc: subprocess.Popen, ready_file: Path, log_path: Path, what: str) -> dict:
    """Wait for the node's ready file; on early exit or timeout report the end of its log."""
    deadline = time.monotonic() + _READY_DEADLINE_S
    while time.monotonic() < deadline:
        if ready_file.exists():
            try:
                return json.loads(ready_file.read_text())
            except ValueError:
                pass  # still being written
        if proc.poll() is not None:
            raise CliError(
                f"the {what} exited with status {proc.returncode} while starting. "
                f"End of {log_path}:\n{tail(log_path)}"
            )
        time.sleep(_POLL_S)
    raise CliError(
        f"the {what} was not ready after {_READY_DEADLINE_S:.0f} s. End of {log_path}:\n"
        f"{tail(log_path)}"
    )


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_pid(pid: int) -> bool:
    """SIGTERM a recorded node, SIGKILL it after a grace period; False if it was not running."""
    if not is_our_node(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    deadline = time.monotonic() + _STOP_GRACE_S
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return True
        time.sleep(_POLL_S)
    if is_our_node(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return True


def ensure_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a just-stopped cluster's TIME_WAIT sockets are no reason to refuse.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise CliError(
                f"port {port} is already in use on {host} ({exc.strerror}). Choose another "
                f"--port, or stop what uses it (a cluster of yours: xparl stop --port {port})."
            ) from exc


def is_wildcard(host: Optional[str]) -> bool:
    return not host or host in ("0.0.0.0", "::")


def local_host(host: Optional[str]) -> str:
    """The host this machine's own processes use to reach a master bound to `host`."""
    return "127.0.0.1" if is_wildcard(host) else str(host)


def default_route_address() -> Optional[str]:
    """This machine's address on its default route (as PARL's xparl publishes), or None
    without one. Connecting a UDP socket only looks the route up: nothing is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("8.8.8.8", 53))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def public_host(host: Optional[str]) -> str:
    """A host other machines can probably use, for the printed hints."""
    if not is_wildcard(host):
        return str(host)
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        return "<this machine's IP>"
    return "<this machine's IP>" if address.startswith("127.") else address


def http_port(host: str, port: int, wanted: Optional[str]) -> int:
    """The master's HTTP port: the one asked for (it must be free), else the master's port + 100
    like PARL's monitor, else any free port (0)."""
    if wanted is not None:
        ensure_port_free(host, int(wanted))
        return int(wanted)
    try:
        ensure_port_free(host, port + 100)
    except CliError:
        return 0
    return port + 100


def launch(
    role: str, node_args: list[str], node_dir: Path, key: Optional[str], debug: bool
) -> dict:
    """Start a node with `<role>.log` and `<role>.ready` in `node_dir`; return what its ready
    file says (its pid, addresses)."""
    ready, log = node_dir / f"{role}.ready", node_dir / f"{role}.log"
    ready.unlink(missing_ok=True)
    proc = spawn_node([*node_args, "--ready-file", str(ready)], log, key, debug)
    try:
        info = wait_ready(proc, ready, log, role)
    except BaseException:  # also Ctrl-C: never leave a half-started node behind
        stop_pid(proc.pid)
        raise
    return {**info, "pid": proc.pid}
