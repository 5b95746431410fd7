"""The client program of test_multihost.py, run on the client machine of a netbed.

    python bedclient.py MASTER_HOST:PORT        (the key in XPARL_CLUSTER_KEY, as a user sets it)

It connects, then serves the test's requests: one JSON line each on stdin,
`{"id": N, "op": NAME, "args": [...]}`, each run in a thread of its own (so a call can be under
way while others are made), each answered with one JSON line on stdout, `{"id": N, "value": V}`
or `{"id": N, "error": TYPE, "message": TEXT, "at": MONOTONIC_TIME}`. It prints
`{"ready": CLIENT_ID}` once connected, and disconnects and exits when stdin closes. Anything
else written to stdout (by parl_rs or the actors) goes to stderr instead.

The actors' class is defined here, in `__main__`, so it travels by value, as a user's does; the
`*.py` next to this file (the test writes `bed_payload.py`) are shipped to the jobs.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import parl_rs as parl
from parl_rs.monitor import cluster_api

MASTER = sys.argv[1]
MASTER_HOST = MASTER.rpartition(":")[0]


def where(peer_host: str) -> str:
    """The address this process's machine uses to reach `peer_host`: which machine it is on."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((peer_host, 9))  # UDP: nothing is sent, the kernel only picks the route
        return probe.getsockname()[0]


@parl.remote_class
class Probe:
    def where(self, peer_host):
        return where(peer_host)

    def add(self, a, b):
        return a + b

    def echo(self, value):
        return value

    def say(self, text):
        print(text, flush=True)
        return text

    def sleep(self, seconds, marker):
        Path(marker).touch()
        time.sleep(seconds)
        return seconds

    def payload_token(self):
        import bed_payload  # shipped from the client's folder

        return bed_payload.TOKEN


@parl.remote_function
def square_where(x, peer_host):
    return x * x, where(peer_host)


# --- the requests --------------------------------------------------------------------------

actors: dict[str, Any] = {}
OPS: dict[str, Callable[..., Any]] = {}


def op(function: Callable[..., Any]) -> Callable[..., Any]:
    OPS[function.__name__] = function
    return function


def _describe(actor: Any) -> dict:
    handle = actor._xparl_handle
    return {
        "id": handle.actor_id,
        "job_address": handle.job_address,
        "log_address": handle.log_address,
        "worker_id": handle.worker_id,
        "where": actor.where(MASTER_HOST),
    }


@op
def create(count: int) -> list[dict]:
    """`count` new actors, made one after the other, described (where their jobs run)."""
    made = []
    for _ in range(count):
        actor = Probe()
        actors[actor._xparl_handle.actor_id] = actor
        made.append(_describe(actor))
    return made


@op
def call(actor_id: str, method: str, *args: Any) -> Any:
    return getattr(actors[actor_id], method)(*args)


@op
def release(actor_id: str) -> None:
    actors.pop(actor_id)  # the last reference: the actor is released


@op
def echo_arrays(actor_ids: list[str], mib: int) -> list[dict]:
    """A `mib` MiB numpy array through each actor and back: equal, and how long it took."""
    import numpy as np

    results = []
    for number, actor_id in enumerate(actor_ids):
        sent = np.random.default_rng(number).random(mib * 2**20 // 8)
        started = time.perf_counter()
        back = actors[actor_id].echo(sent)
        seconds = time.perf_counter() - started
        results.append({"id": actor_id, "equal": bool(np.array_equal(sent, back)), "s": seconds})
    return results


@op
def calls(actor_ids: list[str], count: int) -> dict:
    """`count` calls `add(i, 1)`, taking the actors in turn: each call's seconds, wrong results."""
    seconds, wrong = [], 0
    for i in range(count):
        actor = actors[actor_ids[i % len(actor_ids)]]
        started = time.perf_counter()
        result = actor.add(i, 1)
        seconds.append(time.perf_counter() - started)
        wrong += result != i + 1
    return {"seconds": seconds, "wrong": wrong}


@op
def tasks(count: int) -> list:
    """`square_where` of 0..count-1 as stateless tasks: (square, machine) of each."""
    futures = [square_where.submit(x, MASTER_HOST) for x in range(count)]
    return [list(future.result()) for future in futures]


@op
def files_shipped() -> int:
    return parl.get_global_client().files_shipped


@op
def api(path: str) -> Any:
    """GET `path` of the master's HTTP API (from this machine, with the key it was given)."""
    return cluster_api(MASTER, path)


@op
def get_log(actor_id: str) -> str:
    return parl.get_log(actors[actor_id])


# --- serving them --------------------------------------------------------------------------


def main() -> None:
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stdout is for the replies only
    lock = threading.Lock()

    def reply(message: dict) -> None:
        with lock:
            replies.write(json.dumps(message) + "\n")
            replies.flush()

    def serve(request: dict) -> None:
        try:
            value = OPS[request["op"]](*request["args"])
            answer = {"value": value}
        except BaseException as exc:  # noqa: BLE001 - the error is the answer
            answer = {"error": type(exc).__name__, "message": str(exc), "at": time.monotonic()}
        reply({"id": request["id"], **answer})

    parl.connect(MASTER, create_timeout=60)
    reply({"ready": parl.get_global_client().client_id})
    for line in sys.stdin:
        threading.Thread(target=serve, args=(json.loads(line),), daemon=True).start()
    actors.clear()
    parl.disconnect()


if __name__ == "__main__":
    main()
