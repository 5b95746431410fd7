"""What `xparl` accepts from its user, checked before anything starts: master addresses and GPU
ids (against the GPUs the machine has, where that can be known), and how they are printed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence


class CliError(Exception):
    """A failure to report to the user as one clear message (exit status 1)."""


def warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr)


def check_address(address: str, flag: str = "--address") -> str:
    """`address` if it is "host:port" (the master's), else a CliError saying what is expected."""
    host, sep, port = address.strip().removeprefix("tcp://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(
            f"{flag} takes the master's host:port (e.g. 192.168.0.2:8010, or localhost:8010 on "
            f"its machine), got {address!r}"
        )
    return address.strip()


def resolved_address(address: str) -> str:
    """ "ip:port" for "host:port", so that one cluster reached by two names is one cluster."""
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    try:
        info = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
        return f"{info[0][4][0]}:{port}"
    except (OSError, ValueError, IndexError):
        return address


def parse_gpus(spec: str) -> list[str]:
    """`--gpu 0,1` as ids; "" is none. Each id becomes part of a job's CUDA_VISIBLE_DEVICES."""
    if not spec.strip():
        return []
    gpus = [gpu.strip() for gpu in spec.split(",")]
    if not all(gpus) or len(set(gpus)) != len(gpus):
        raise CliError(f"--gpu takes distinct GPU ids separated by commas (e.g. 0,1), got {spec!r}")
    return gpus


def describe_gpus(gpus: Sequence[str]) -> str:
    """`["0"]` -> "1 GPU (id 0)", `["0", "1"]` -> "2 GPUs (ids 0,1)"."""
    if len(gpus) == 1:
        return f"1 GPU (id {gpus[0]})"
    return f"{len(gpus)} GPUs (ids {','.join(gpus)})"


def machine_gpus() -> Optional[tuple[set[str], str]]:
    """The GPU ids this machine has and where that was learnt, or None if it cannot be known:
    `nvidia-smi -L` (indexes and UUIDs), else /proc/driver/nvidia/gpus (one entry per GPU),
    else CUDA_VISIBLE_DEVICES (what this environment may use)."""
    if shutil.which("nvidia-smi"):
        try:
            listed = subprocess.run(
                ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError):
            listed = None
        if listed is not None:
            return ids_from_nvidia_smi(listed), "nvidia-smi -L"
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return {str(i) for i in range(len(list(proc.iterdir())))}, str(proc)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return {gpu.strip() for gpu in visible.split(",") if gpu.strip()}, "CUDA_VISIBLE_DEVICES"
    return None


def ids_from_nvidia_smi(listing: str) -> set[str]:
    """Ids in `nvidia-smi -L` output: "GPU 0: Name (UUID: GPU-...)" gives "0" and the UUID
    (and MIG devices their MIG-... UUIDs), any of which CUDA_VISIBLE_DEVICES takes."""
    ids = set()
    for line in listing.splitlines():
        line = line.strip()
        if line.startswith("GPU ") and ":" in line:
            ids.add(line[4:].split(":", 1)[0].strip())
        if "(UUID: " in line:
            ids.add(line.split("(UUID: ", 1)[1].split(")", 1)[0].strip())
    return ids


def check_gpus(gpus: list[str], machine: Optional[tuple[set[str], str]]) -> None:
    """Refuse GPU ids the machine does not have; warn when that cannot be known."""
    if not gpus:
        return
    if machine is None:
        warn(
            f"could not check the GPU ids {','.join(gpus)}: this machine has no nvidia-smi, "
            "no /proc/driver/nvidia/gpus and no CUDA_VISIBLE_DEVICES. Actors will get the ids "
            "as given."
        )
        return
    known, source = machine
    unknown = [gpu for gpu in gpus if gpu not in known]
    if unknown:
        have = ",".join(sorted(known, key=lambda g: (not g.isdigit(), g.zfill(8)))) or "none"
        raise CliError(
            f"this machine has no GPU {','.join(unknown)} (GPU ids per {source}: {have}); "
            "pass ids it has to --gpu"
        )
