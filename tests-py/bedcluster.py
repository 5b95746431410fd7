"""A parl_rs cluster on the machines of a netbed, run as users run it on separate machines.

`xparl start` on the master's machine, bound to its address; `xparl connect` on each worker's
machine with the master's address and the cluster key copied from the master's machine (the
way its README says: `--key_file` or `XPARL_CLUSTER_KEY`); the client program (`bedclient.py`)
in a folder of the client's machine, driven by the test through `ClientProgram`. Each machine
has its own state directory, so nothing is found by accident on a shared disk.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from conftest import describe
from netbed import Machine

PORT = 8010  # each machine has its own ports: PARL's default is free on every one
_CLIENT = Path(__file__).with_name("bedclient.py")
_programs = itertools.count()


@dataclass
class BedCluster:
    """A cluster whose master runs on `master`; `workers` maps machine names to worker pids,
    `published` to the host each worker publishes for its jobs and logs."""

    master: Machine
    key: str
    workers: dict[str, int] = field(default_factory=dict)
    published: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.master.address}:{PORT}"

    @classmethod
    def start(cls, master: Machine, *flags: str) -> BedCluster:
        """`xparl start` a master without a worker of its own (`--cpu_num 0`) on `master`."""
        started = master.xparl(
            "start", "--port", str(PORT), "--cpu_num", "0", "--host", master.address, *flags
        )
        assert started.returncode == 0, describe(started)
        # What the user copies to the other machines.
        key = (master.state_dir / "keys" / f"{PORT}.key").read_text().strip()
        return cls(master, key)

    def join(
        self,
        machine: Machine,
        cpus: int,
        host: str,
        advertise: Optional[str] = None,
        key_file: bool = False,
    ) -> int:
        """`xparl connect` `machine` with `cpus` CPUs, `--host` and `--advertise`; the key in a
        file copied there (`--key_file`) or in `XPARL_CLUSTER_KEY`. Returns the worker's pid."""
        args = ["connect", "--address", self.address, "--cpu_num", str(cpus), "--host", host]
        if advertise:
            args += ["--advertise", advertise]
        self.published[machine.name] = advertise or host
        env = {}
        if key_file:
            copy = machine.home / "cluster.key"
            copy.write_text(self.key + "\n")
            copy.chmod(0o600)
            args += ["--key_file", str(copy)]
        else:
            env["XPARL_CLUSTER_KEY"] = self.key
        joined = machine.xparl(*args, env=env)
        assert joined.returncode == 0, describe(joined)
        (record,) = [
            json.loads(path.read_text()) for path in (machine.state_dir / "workers").glob("*.json")
        ]
        assert record["pid"] in machine.netns.pids(), "the worker runs on its machine"
        self.workers[machine.name] = record["pid"]
        return record["pid"]

    def wait_ready(self, timeout: float = 60.0) -> dict:
        """Wait until the master has every worker that joined, each with all its jobs warm;
        return `/api/v1/cluster` then (asked on the master's machine)."""
        code = f"""
            import json, sys, time
            from parl_rs.monitor import cluster_api
            deadline = time.monotonic() + {timeout}
            while True:
                try:
                    cluster = cluster_api({self.address!r}, "/api/v1/cluster")
                    workers = cluster["workers"]
                    pids = sorted(w["pid"] for w in workers)
                    if pids == {sorted(self.workers.values())!r} and all(
                        w["jobs_ready"] == w["cpu_total"] for w in workers
                    ):
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    sys.exit("not ready: " + json.dumps(cluster))
                time.sleep(0.1)
            print(json.dumps(cluster))
        """
        ran = self.master.run(sys.executable, "-c", textwrap.dedent(code), timeout=timeout + 30)
        assert ran.returncode == 0, describe(ran)
        return json.loads(ran.stdout)

    def worker_id(self, cluster: dict, machine: str) -> str:
        """The id the master gave the worker of `machine` (found by its pid)."""
        pid = self.workers[machine]
        (worker,) = [w for w in cluster["workers"] if w["pid"] == pid]
        return worker["worker_id"]


class ProgramError(Exception):
    """An exception the client program's request raised: its type's name, message and time
    (`time.monotonic()`: one clock for every namespace of the machine)."""

    def __init__(self, kind: str, message: str, at: float) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.at = kind, message, at


class ClientProgram:
    """`bedclient.py` run in a folder of `machine` (with `files` next to it, shipped to the
    jobs), connected to `cluster` with its key; its requests are made with `call` (or `start`
    then `result`, to make others meanwhile). `close()` ends it (it disconnects)."""

    def __init__(self, machine: Machine, cluster: BedCluster, files: dict[str, str]) -> None:
        self.folder = machine.home / f"program-{next(_programs)}"
        self.folder.mkdir()
        shutil.copy(_CLIENT, self.folder / _CLIENT.name)
        for name, text in files.items():
            (self.folder / name).write_text(textwrap.dedent(text))
        self.log = self.folder / "stderr.log"
        with open(self.log, "w") as log:
            self.process = machine.popen(
                sys.executable, _CLIENT.name, cluster.address,
                env={"XPARL_CLUSTER_KEY": cluster.key},
                cwd=self.folder, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                text=True,
            )  # fmt: skip
        self._replies: dict[int, dict] = {}
        self._arrived = threading.Condition()
        self._ids = itertools.count()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.client_id = self.result(-1, 60)
        except BaseException:
            self.close(timeout=0)
            raise

    def _read(self) -> None:
        assert self.process.stdout
        for line in self.process.stdout:
            message = json.loads(line)
            if "ready" in message:
                message = {"id": -1, "value": message["ready"]}
            with self._arrived:
                self._replies[message["id"]] = message
                self._arrived.notify_all()
        with self._arrived:
            self._replies[-2] = {}  # the program's output ended
            self._arrived.notify_all()

    def start(self, op: str, *args: Any) -> int:
        """Send a request; its number, for `result`."""
        number = next(self._ids)
        assert self.process.stdin
        self.process.stdin.write(json.dumps({"id": number, "op": op, "args": args}) + "\n")
        self.process.stdin.flush()
        return number

    def result(self, number: int, timeout: float = 60.0) -> Any:
        """The value of request `number`; ProgramError if it raised."""
        with self._arrived:
            got = self._arrived.wait_for(
                lambda: number in self._replies or -2 in self._replies, timeout
            )
            reply = self._replies.pop(number, None)
        if reply is None:
            what = "ended" if got else f"gave no answer within {timeout} s"
            raise AssertionError(f"the client program {what}; its stderr:\n{self.stderr()}")
        if "error" in reply:
            raise ProgramError(reply["error"], reply["message"], reply["at"])
        return reply["value"]

    def call(self, op: str, *args: Any, timeout: float = 60.0) -> Any:
        return self.result(self.start(op, *args), timeout)

    def stderr(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def close(self, timeout: float = 30.0) -> Optional[int]:
        """Close its stdin (it disconnects and exits); killed if it does not. Its exit status."""
        try:
            if self.process.stdin:
                self.process.stdin.close()
            return self.process.wait(timeout)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            self.process.kill()
            self.process.wait(10)
            return None
