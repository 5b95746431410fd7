"""Entry point of the long-running node processes that `xparl` starts in the background.

    python -m parl_rs._node master --host H --port P --ready-file F [--http-port HP] [--gpu-cluster]
        [--hwm N]
    python -m parl_rs._node worker --address A --cpu-num N --state-dir D --ready-file F [--gpu 0,1]
        [--hwm N]

Each runs the native master or worker in the foreground until SIGTERM/SIGINT. The cluster key
comes through the pipe named in `XPARL_KEY_FD` (see `keys.key_pipe`) or in
`XPARL_CLUSTER_KEY` (removed from this process's environment at once), or `--insecure` says
there is none.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from parl_rs import _core
from parl_rs.client import _python_command
from parl_rs.exceptions import ConnectError
from parl_rs.keys import KEY_ENV, KEY_FD_ENV


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m parl_rs._node")
    nodes = parser.add_subparsers(dest="node", required=True)

    master = nodes.add_parser("master", help="run a master")
    master.add_argument("--host", default="0.0.0.0")
    master.add_argument("--port", type=int, required=True)
    master.add_argument("--ready-file", "--ready_file", dest="ready_file")
    master.add_argument("--heartbeat-interval", "--heartbeat_interval", type=float, default=1.0)
    master.add_argument("--heartbeat-timeout", "--heartbeat_timeout", type=float, default=5.0)
    master.add_argument("--http-port", "--http_port", dest="http_port", type=int, default=None)
    master.add_argument("--http-host", "--http_host", dest="http_host", default=None)
    master.add_argument("--gpu-cluster", "--gpu_cluster", dest="gpu_cluster", action="store_true")
    master.add_argument("--encrypt", action="store_true", help="encrypt every session")
    master.add_argument("--scheme", default="leastload", help="where actors are placed")
    master.add_argument(
        "--hwm", type=int, default=0, help="default grants in flight per worker (0: unlimited)"
    )

    worker = nodes.add_parser("worker", help="run a worker")
    worker.add_argument("--address", required=True, help="the master's host:port")
    worker.add_argument("--cpu-num", "--cpu_num", dest="cpu_num", type=int, required=True)
    worker.add_argument("--state-dir", "--state_dir", dest="state_dir", required=True)
    worker.add_argument("--ready-file", "--ready_file", dest="ready_file")
    worker.add_argument("--host", default=None, help="interface jobs and the log server bind")
    worker.add_argument("--advertise", default=None, help="host published for jobs and logs")
    worker.add_argument("--gpu", default="", help="GPU ids offered, comma-separated")
    worker.add_argument(
        "--hwm", type=int, default=0, help="grants in flight on this worker (0: the master's)"
    )
    for node in (master, worker):
        node.add_argument("--insecure", action="store_true", help="no cluster key")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = _parser().parse_args(argv)
    # Like PARL's nodes: code imported here must never try to create remote actors itself.
    os.environ["XPARL"] = "True"
    key = None if args.insecure else _core.key_from_parent()
    for name in (KEY_ENV, KEY_FD_ENV):  # jobs and other children must not inherit them
        os.environ.pop(name, None)
    if key is None and not args.insecure:
        print(
            f"parl_rs {args.node}: no cluster key in {KEY_FD_ENV} or {KEY_ENV} (or --insecure)",
            file=sys.stderr,
        )
        sys.exit(1)
    try:
        _run(args, key)
    except (ConnectError, OSError) as exc:
        # Expected start-up failures (master unreachable, port in use): one line in the log,
        # which `xparl start/connect` shows, rather than a traceback.
        print(f"parl_rs {args.node}: {exc}", file=sys.stderr)
        sys.exit(1)


def _run(args: argparse.Namespace, key: Optional[str]) -> None:
    if args.node == "master":
        _core.run_master(
            args.host,
            args.port,
            ready_file=args.ready_file,
            heartbeat_interval=args.heartbeat_interval,
            heartbeat_timeout=args.heartbeat_timeout,
            http_port=args.http_port,
            gpu_cluster=args.gpu_cluster,
            key=key,
            encrypt=args.encrypt,
            scheme=args.scheme,
            hwm=args.hwm,
            http_host=args.http_host,
        )
    else:
        _core.run_worker(
            args.address,
            args.cpu_num,
            _python_command(),
            args.state_dir,
            ready_file=args.ready_file,
            host=args.host,
            advertise=args.advertise,
            gpus=[gpu for gpu in args.gpu.split(",") if gpu],
            key=key,
            hwm=args.hwm,
        )


if __name__ == "__main__":
    main()
