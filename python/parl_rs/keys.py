"""The cluster key: where `xparl start` keeps it, and how everyone else finds it.

Every port of a cluster refuses peers that do not hold its key (the native layer runs an
HMAC handshake on each connection, and HTTP ports want a token derived from the key).
`xparl start` takes `--key` or `XPARL_CLUSTER_KEY`, reuses the key it stored for the port
before (so a restarted master gets its workers and clients back), or makes a new random one,
and stores it in `<state dir>/keys/<port>.key`, readable only by its user.

Whoever connects finds the key in this order: an explicit key (`key=`, `--key`), then
`XPARL_CLUSTER_KEY`, then the key file of the master's port on this machine, but only when
the master's host is this machine: a key file is never offered to another host that happens
to use the same port. Without any, it connects keyless, which only a cluster started with
`--insecure` accepts.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import Optional

KEY_ENV = "XPARL_CLUSTER_KEY"
# Names the inherited pipe a parent passes the key through (see `key_pipe`).
KEY_FD_ENV = "XPARL_KEY_FD"


def state_root() -> Path:
    """The per-user state directory (`$XPARL_STATE_DIR`, default `~/.parl_rs`), not created."""
    return Path(os.environ.get("XPARL_STATE_DIR") or Path.home() / ".parl_rs")


def state_dir() -> Path:
    """The per-user state directory, created private (0700) if missing."""
    path = state_root()
    if not path.exists():
        path.mkdir(mode=0o700, parents=True)
    return path


def key_file(port: int) -> Path:
    """Where `xparl start` keeps the key of the cluster on `port`."""
    return state_root() / "keys" / f"{port}.key"


def new_key() -> str:
    """A random key: 32 bytes from the OS's CSPRNG, as hex."""
    return secrets.token_hex(32)


def find_key(address: Optional[str], explicit: Optional[str] = None) -> Optional[str]:
    """The key to use for the master at "host:port" (None: connect keyless)."""
    for candidate in (explicit, os.environ.get(KEY_ENV)):
        if candidate and candidate.strip():
            return candidate.strip()
    port = port_of(address or "")
    if port is None or not is_this_machine(host_of(address or "")):
        return None
    return read_key(port)


def host_of(address: str) -> str:
    """The host of "host:port" (or "tcp://host:port"), without IPv6 brackets."""
    return address.removeprefix("tcp://").rpartition(":")[0].strip("[]")


def is_this_machine(host: str) -> bool:
    """True if every address `host` resolves to belongs to this machine (a key file here is
    the key of a master here). Binding a socket to an address succeeds only for local ones."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return False
    if not infos:
        return False
    for family, _type, _proto, _name, sockaddr in infos:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind((sockaddr[0], 0))
        except OSError:
            return False
    return True


def read_key(port: int) -> Optional[str]:
    """The stored key of the cluster on `port`, if this machine has one."""
    try:
        return key_file(port).read_text().strip() or None
    except OSError:
        return None


def store_key(port: int, key: str) -> Path:
    """Write the key of the cluster on `port`, readable only by this user (0600)."""
    path = key_file(port)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    # Created 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        os.chmod(tmp, 0o600)  # in case the file existed with wider permissions
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. a full disk: no half-written key left behind
        raise
    return path


def key_pipe(key: str) -> int:
    """The reading end of a new pipe holding `key` (its writing end closed), for one child
    process to inherit (`subprocess.Popen(pass_fds=...)`, its number in `XPARL_KEY_FD`): how
    `xparl` hands the key to the nodes it starts. The child reads it with
    `_core.key_from_parent()`, as jobs read the key their worker passes the same way."""
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "w") as pipe:
        pipe.write(key)  # far below a pipe's buffer: no reader needed yet
    return read_fd


def forget_key(port: int) -> None:
    """Remove the stored key of `port` (a cluster started there with `--insecure` has none)."""
    key_file(port).unlink(missing_ok=True)


def port_of(address: str) -> Optional[int]:
    """The port of "host:port" (or "tcp://host:port"), or None."""
    try:
        return int(address.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None
