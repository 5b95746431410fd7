"""The floors parl_rs is compared with, measured in the same run: raw pyzmq between two Python
processes (REQ/REP on 127.0.0.1 TCP, the transport parl_rs uses), and a plain memcpy.

* "small": `send`/`recv` with copying (what pyzmq recommends for small messages), the request
  `pickle.dumps((method, args, kwargs))`, the reply `pickle.dumps(result)`.
* "zerocopy": `send_multipart(copy=False)`/`recv_multipart(copy=False)` with pickle protocol 5
  and out-of-band buffers, so an array travels as its own frame and is never copied by Python
  on either side (the received array is a view of the ZeroMQ frame).

Run as `python bench_floors.py serve MODE` it is the server process: it prints its port, then
answers until told to stop (or until its parent process is gone).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from typing import Any

import zmq

MODES = ("small", "zerocopy")


def _serve(mode: str) -> None:
    from bench_actors import Adder, Echo  # the same code the actors run

    methods = {"add": Adder().add, "echo": Echo().echo}
    parent = os.getppid()

    def watch_parent() -> None:  # never outlive the benchmark, even if it is killed
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.linger = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    print(port, flush=True)
    if mode == "small":
        while True:
            name, args, kwargs = pickle.loads(sock.recv())
            if name == "__stop__":
                sock.send(b"")
                break
            sock.send(pickle.dumps(methods[name](*args, **kwargs), protocol=5))
    else:
        while True:
            frames = sock.recv_multipart(copy=False)
            name, args, kwargs = pickle.loads(
                frames[0].buffer, buffers=[frame.buffer for frame in frames[1:]]
            )
            if name == "__stop__":
                sock.send(b"")
                break
            buffers: list[pickle.PickleBuffer] = []
            head = pickle.dumps(
                methods[name](*args, **kwargs), protocol=5, buffer_callback=buffers.append
            )
            sock.send_multipart([head, *(buffer.raw() for buffer in buffers)], copy=False)
            del frames, args, buffers
    sock.close()
    ctx.term()


class FloorServer:
    """A pyzmq server process of one mode, and this process's REQ socket to it."""

    def __init__(self, mode: str) -> None:
        assert mode in MODES
        self.mode = mode
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve", mode],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.strip().isdigit():
            self.close()
            raise RuntimeError(f"the pyzmq {mode} server did not start (said {line!r})")
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.linger = 0
        self.sock.connect(f"tcp://127.0.0.1:{int(line)}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, name: str, *args: Any) -> Any:
        """One request/reply, in this server's mode."""
        if self.mode == "small":
            self.sock.send(pickle.dumps((name, args, {}), protocol=5))
            return pickle.loads(self.sock.recv())
        buffers: list[pickle.PickleBuffer] = []
        head = pickle.dumps((name, args, {}), protocol=5, buffer_callback=buffers.append)
        self.sock.send_multipart([head, *(buffer.raw() for buffer in buffers)], copy=False)
        frames = self.sock.recv_multipart(copy=False)
        return pickle.loads(frames[0].buffer, buffers=[frame.buffer for frame in frames[1:]])

    def close(self) -> None:
        """Stop the server process (by its pid) and close the socket."""
        sock = getattr(self, "sock", None)
        if sock is not None and self.proc.poll() is None:
            try:
                sock.send(pickle.dumps(("__stop__", (), {})), flags=zmq.NOBLOCK)
                self.proc.wait(timeout=5)
            except (zmq.ZMQError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if sock is not None:
            sock.close()
            self.ctx.term()
            self.sock = None
        if self.proc.stdout:
            self.proc.stdout.close()


def memcpy(dst: Any) -> Any:
    """A callable copying its argument into `dst` (preallocated, pages already touched): the
    memcpy floor. Returns `dst`."""

    def copy(src: Any) -> Any:
        dst[...] = src
        return dst

    return copy


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve" and sys.argv[2] in MODES:
        _serve(sys.argv[2])
    else:
        sys.exit(f"usage: {sys.argv[0]} serve {{{','.join(MODES)}}}")
