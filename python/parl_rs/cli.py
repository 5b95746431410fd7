"""`xparl`: start, join, inspect and stop parl_rs clusters (PARL's `xparl` commands).

Every node process this command starts is recorded under the per-user state directory
(`$XPARL_STATE_DIR`, default `~/.parl_rs`), and `xparl stop` stops only recorded processes,
never "every xparl process on the machine" as PARL's `ps | grep | kill -9` did.

    <state>/clusters/<port>.json      a cluster started by `xparl start`
    <state>/clusters/<port>/          its logs and the local worker's state
    <state>/workers/<pid>.json        a worker started by `xparl connect`
    <state>/workers/<dir>/            its log and state
    <state>/keys/<port>.key           the key of the cluster on <port> (0600; see keys.py)

`xparl slurm` (in slurm.py) runs a cluster for the length of a Slurm job; both start, record and
stop their node processes with `parl_rs._nodes`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from parl_rs import _nodes as nodes
from parl_rs import keys
from parl_rs._cli_input import (
    CliError,
    check_address,
    check_gpus,
    describe_gpus,
    machine_gpus,
    parse_gpus,
    resolved_address,
    warn,
)
from parl_rs.keys import state_dir
from parl_rs.monitor import Endpoint, endpoint_of, format_cluster

# --- state directory and records -------------------------------------------------------------


# --- processes ---------------------------------------------------------------------------------


# --- hosts and ports ---------------------------------------------------------------------------


# --- commands ----------------------------------------------------------------------------------


def _note(message: str) -> None:
    print(f"Note: {message}", file=sys.stderr)


def cmd_start(args: argparse.Namespace) -> None:
    if args.cpu_num is not None and args.cpu_num < 0:
        raise CliError(
            f"--cpu_num must be 0 or more, got {args.cpu_num} (0: a master without a local "
            "worker; default: all CPUs)"
        )
    gpus = parse_gpus(args.gpu)
    if gpus and not args.gpu_cluster:
        _note("--gpu is ignored without --gpu_cluster (as in PARL): this starts a CPU cluster.")
        gpus = []
    check_gpus(gpus, machine_gpus())
    if args.gpu_cluster and args.cpu_num:
        _note("--cpu_num is ignored: a GPU cluster runs only GPU actors.")
    bind_host = args.host or "0.0.0.0"
    port = args.port
    nodes.ensure_port_free(bind_host, port)
    with _nothing_left_on_failure(port):
        _start_cluster(args, bind_host, port, gpus)


@contextlib.contextmanager
def _nothing_left_on_failure(port: int) -> Iterator[None]:
    """A start that fails to write its state (a full disk) removes the cluster folder and key
    file it created. (A node that does not come up leaves its log there, to be read.)"""
    cluster_dir = state_dir() / "clusters" / str(port)
    fresh_dir, fresh_key = not cluster_dir.exists(), keys.read_key(port) is None
    try:
        yield
    except BrokenPipeError:
        raise  # only the hints could not be printed: the cluster runs
    except OSError:
        if fresh_dir:
            shutil.rmtree(cluster_dir, ignore_errors=True)
            (cluster_dir.parent / f"{port}.json").unlink(missing_ok=True)
        if fresh_key:
            keys.forget_key(port)
        raise


def _start_cluster(args: argparse.Namespace, bind_host: str, port: int, gpus: list[str]) -> None:
    cluster_dir = state_dir() / "clusters" / str(port)
    cluster_dir.mkdir(parents=True, exist_ok=True)
    if args.gpu_cluster:
        cpu_num = 0
    else:
        cpu_num = (os.cpu_count() or 1) if args.cpu_num is None else args.cpu_num
    monitor_host = args.monitor_host or bind_host
    http_port = nodes.http_port(monitor_host, port, args.monitor_port)
    key = _key_for_start(args, port)
    started: list[int] = []
    try:
        master = _start_master(cluster_dir, (bind_host, port, http_port), args, key)
        started.append(master["pid"])
        if cpu_num > 0 or gpus:
            address = f"{nodes.local_host(bind_host)}:{port}"
            where = (bind_host, args.advertise)
            if nodes.is_wildcard(bind_host) and not args.advertise:
                # The master listens everywhere, but its own worker reaches it over loopback:
                # left alone, its jobs would publish 127.0.0.1, out of reach of clients on other
                # machines. As PARL does, they use the address of the default route.
                where = (nodes.default_route_address() or bind_host, None)
            started.append(
                _start_worker(cluster_dir, address, cpu_num, gpus, where, key, args.debug)
            )
    except BaseException:
        for pid in reversed(started):
            nodes.stop_pid(pid)
        raise
    connect_address = f"{nodes.local_host(bind_host)}:{port}"
    http_address = master.get("http_address") or ""
    record = {
        "address": connect_address,
        "http_address": http_address,
        "port": port,
        "host": bind_host,
        "cpu_num": cpu_num,
        "gpu_cluster": args.gpu_cluster,
        "gpus": gpus,
        "pids": {"master": started[0], "worker": started[1] if len(started) > 1 else None},
    }
    nodes.write_record(state_dir() / "clusters" / f"{port}.json", record)
    _print_start_hints(connect_address, nodes.public_host(args.host), port, record, cluster_dir)
    if key is not None:
        print(f"# Its key is in {keys.key_file(port)} (readable only by you). Other machines")
        print(f"# need it: xparl connect ... --key KEY, or {keys.KEY_ENV}=KEY in the environment.")
    if http_address:
        used = int(http_address.rsplit(":", 1)[1])
        if http_port == 0:
            warn(
                f"port {port + 100} (the master's port + 100, PARL's monitor port) is in use: "
                f"the HTTP endpoint uses port {used} instead (choose one with --monitor_port)."
            )
        print("# The web monitor (the link logs a browser in once: keep it private;")
        print("# `xparl monitor` prints it again, `xparl status --url` the JSON status):")
        print(f"    {_monitor_link(nodes.local_host(monitor_host), used, key)}")


def _status_url(host: str, http_port: int, key: Optional[str]) -> str:
    """The link to the master's /status, with the token its HTTP port wants (see keys.py)."""
    from parl_rs import _core

    token = _core.http_token(key) if key else None
    query = f"?token={token}" if token else ""
    return f"http://{host}:{http_port}/status{query}"


def _monitor_link(host: str, http_port: int, key: Optional[str]) -> str:
    """The link that logs a browser in to the master's web monitor (see monitor.py)."""
    from parl_rs import _core

    token = _core.http_token(key) if key else None
    return Endpoint(f"http://{host}:{http_port}", token).login_link()


def _given_key(args: argparse.Namespace) -> Optional[str]:
    """The key given with `--key_file FILE` or `--key KEY` (which `ps` shows: warned), if any."""
    if args.key_file:
        if args.key:
            raise CliError("--key and --key_file give the key twice: choose one.")
        try:
            key = Path(args.key_file).read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read --key_file {args.key_file}: {exc.strerror}") from exc
        if not key:
            raise CliError(f"--key_file {args.key_file} is empty.")
        return key
    if args.key:
        warn(
            "--key puts the key on the command line, where `ps` shows it to every user of this "
            f"machine; prefer --key_file FILE or {keys.KEY_ENV}=KEY in the environment."
        )
    return args.key


def _key_for_start(args: argparse.Namespace, port: int) -> Optional[str]:
    """The new cluster's key (stored for local clients), or None with `--insecure`."""
    if args.insecure:
        if args.key or args.key_file:
            raise CliError("--key and --insecure contradict each other: choose one.")
        if args.encrypt:
            raise CliError(
                "--encrypt needs the cluster key, which --insecure turns off: choose one."
            )
        print(
            "WARNING: --insecure: every port of this cluster accepts anyone who can reach it, "
            "and runs the code they send. Use it only on a network you fully trust.",
            file=sys.stderr,
        )
        keys.forget_key(port)
        return None
    # A restarted master keeps its key, so its workers and clients rejoin by themselves.
    key = keys.find_key(None, _given_key(args)) or keys.read_key(port) or keys.new_key()
    keys.store_key(port, key)
    return key


def _start_master(
    cluster_dir: Path, ports: tuple[str, int, int], args: argparse.Namespace, key: Optional[str]
) -> dict:
    """Start the master of `xparl start`; `ports` is (host, port, HTTP port)."""
    host, port, http_port = ports
    node_args = ["master", "--host", host, "--port", str(port), "--http-port", str(http_port)]
    node_args += [
        "--heartbeat-interval",
        str(args.heartbeat_interval),
        "--heartbeat-timeout",
        str(args.heartbeat_timeout),
    ]
    if args.gpu_cluster:
        node_args.append("--gpu-cluster")
    if args.encrypt:
        node_args.append("--encrypt")
    node_args += ["--scheme", args.scheme]
    if args.hwm:
        node_args += ["--hwm", str(args.hwm)]
    if args.monitor_host:
        node_args += ["--http-host", args.monitor_host]
    return nodes.launch("master", node_args, cluster_dir, key, args.debug)


def _start_worker(
    node_dir: Path,
    address: str,
    cpu_num: int,
    gpus: list[str],
    where: tuple[Optional[str], Optional[str]],
    key: Optional[str],
    debug: bool,
    hwm: int = 0,
) -> int:
    """Start a worker; `where` is (--host, --advertise); `hwm` its own high-water mark of
    grants in flight (0: the master's)."""
    host, advertise = where
    node_args = ["worker", "--address", address, "--cpu-num", str(cpu_num)]
    node_args += ["--state-dir", str(node_dir / "worker")]
    if gpus:
        node_args += ["--gpu", ",".join(gpus)]
    # With --advertise, the published address may be another interface of this machine (or a
    # NAT in front of it): a wildcard host is kept, so jobs listen wherever it leads. Without,
    # jobs bind the interface that routes to the master, the one they publish.
    if host and (advertise or not nodes.is_wildcard(host)):
        node_args += ["--host", str(host)]
    if advertise:
        node_args += ["--advertise", advertise]
    if hwm:
        node_args += ["--hwm", str(hwm)]
    return nodes.launch("worker", node_args, node_dir, key, debug)["pid"]


def _print_start_hints(
    address: str, public_host: str, port: int, record: dict, cluster_dir: Path
) -> None:
    if record["gpu_cluster"]:
        gpus = record["gpus"]
        offered = f"a GPU cluster with {describe_gpus(gpus) if gpus else 'no GPU yet'}"
        more, join_flag = "GPUs", "--gpu 0,1"
    else:
        cpus = record["cpu_num"]
        offered = f"{cpus} CPU{'s' if cpus != 1 else ''}"
        more, join_flag = "CPUs", "[--cpu_num N]"
    print(f"parl_rs cluster started on port {port} with {offered} (logs in {cluster_dir}).")
    print("# Connect to it from Python:")
    print(f'    parl_rs.connect("{address}")')
    print(f"# Add the {more} of another machine to it (run there):")
    print(f"    xparl connect --address {public_host}:{port} {join_flag}")
    print("# Check its status / stop it (and the workers that joined it from other machines):")
    print(f"    xparl status    xparl stop --port {port}")


def cmd_connect(args: argparse.Namespace) -> None:
    address = check_address(args.address)
    gpus = parse_gpus(args.gpu)
    check_gpus(gpus, machine_gpus())
    if gpus:
        # PARL: a GPU worker offers only its GPUs.
        if args.cpu_num:
            _note("--cpu_num is ignored: a GPU worker offers only its GPUs.")
        cpu_num = 0
    else:
        cpu_num = (os.cpu_count() or 1) if args.cpu_num is None else args.cpu_num
        if cpu_num <= 0:
            raise CliError("--cpu_num must be a positive number of CPUs.")
    given_key = _given_key(args)
    workers_dir = state_dir() / "workers"
    workers_dir.mkdir(parents=True, exist_ok=True)
    # The pid is known only once started, so the directory gets a unique name of its own.
    node_dir = Path(tempfile.mkdtemp(prefix="worker-", dir=workers_dir))
    try:
        where = (args.host, args.advertise)
        key = keys.find_key(address, given_key)
        pid = _start_worker(node_dir, address, cpu_num, gpus, where, key, False, args.hwm)
    except BaseException as exc:
        # Nothing runs from that folder: leave no trace of the failed attempt.
        shutil.rmtree(node_dir, ignore_errors=True)
        if isinstance(exc, CliError):
            raise CliError(f"cannot add a worker to the cluster at {address}: {exc}") from exc
        raise
    record = {
        "address": address,
        "pid": pid,
        "dir": str(node_dir),
        "cpu_num": cpu_num,
        "gpus": gpus,
    }
    nodes.write_record(workers_dir / f"{pid}.json", record)
    offered = describe_gpus(gpus) if gpus else f"{cpu_num} CPU{'s' if cpu_num != 1 else ''}"
    print(f"Worker (pid {pid}, {offered}) joined the cluster at {address}.")
    print(
        f"Its log is {node_dir / 'worker.log'}; stop it with `xparl stop` (it also exits when "
        "the cluster is stopped with `xparl stop` on the master's machine)."
    )


def cmd_status(args: argparse.Namespace) -> None:
    from parl_rs import _core
    from parl_rs.exceptions import AuthenticationError

    addresses = [check_address(args.address)] if args.address else _recorded_addresses()
    given_key = _given_key(args)
    if not addresses:
        print("No active cluster is found.")
        return
    failed = []
    for address in addresses:
        key = keys.find_key(address, given_key)
        try:
            status = _core.cluster_status(address, key=key)
        except AuthenticationError as exc:
            which = "the key given" if key else "no key (this machine has none for it)"
            failed.append(
                f"the cluster at {address} refused {which}: {exc}. Pass its key: --key KEY or "
                f"{keys.KEY_ENV}=KEY (on the master's machine it is in "
                "<state dir>/keys/<port>.key, or the master was started with --insecure)"
            )
            continue
        except Exception as exc:  # an unreachable cluster is reported, the others still shown
            failed.append(f"cannot reach the cluster at {address}: {exc}")
            continue
        if args.url:
            print(_url_of(address, status, key))
        else:
            print(_status_from_api(address, status, key))
    for message in failed:
        print(f"xparl status: error: {message}", file=sys.stderr)
    if failed:
        sys.exit(1)


def _url_of(address: str, status: dict[str, Any], key: Optional[str]) -> str:
    http_address = status.get("http_address")
    if not http_address:
        return f"# Cluster {address} serves no HTTP endpoint."
    host = address.removeprefix("tcp://").rpartition(":")[0]
    return _status_url(host, int(http_address.rsplit(":", 1)[1]), key)


def _recorded_addresses() -> list[str]:
    """Addresses of this user's recorded clusters and workers whose processes still run."""
    root = state_dir()
    addresses = []
    for _path, record in nodes.read_records(root / "clusters"):
        if nodes.is_our_node(record.get("pids", {}).get("master") or -1):
            addresses.append(record["address"])
    for _path, record in nodes.read_records(root / "workers"):
        if nodes.is_our_node(record.get("pid") or -1):
            addresses.append(record["address"])
    # One cluster may be recorded under several names (127.0.0.1:P and localhost:P).
    unique: dict[str, str] = {}
    for address in addresses:
        unique.setdefault(resolved_address(address), address)
    return list(unique.values())


_SESSIONS = {
    "insecure": "NOT authenticated (--insecure)",
    "authenticated": "authenticated (not encrypted)",
    "encrypted": "encrypted and authenticated",
}


def _status_from_api(address: str, status: dict[str, Any], key: Optional[str]) -> str:
    """The cluster as the monitor's API reports it; the master's own report (`status`) when
    its HTTP endpoint cannot be reached (a firewall, `http_port=None`)."""
    try:
        return format_cluster(address, endpoint_of(address, key, status).get("/api/v1/cluster"))
    except OSError as exc:
        _note(f"{exc}; showing the master's own report")
        return _format_status(address, status)


def cmd_monitor(args: argparse.Namespace) -> None:
    addresses = [check_address(args.address)] if args.address else _recorded_addresses()
    if not addresses:
        raise CliError("no active cluster is found: pass --address HOST:PORT")
    given_key = _given_key(args)
    for address in addresses:
        key = keys.find_key(address, given_key)
        try:
            endpoint = endpoint_of(address, key)
        except Exception as exc:
            raise CliError(f"cannot reach the cluster at {address}: {exc}") from None
        if args.token:
            print(endpoint.token or "# no token: the cluster is insecure")
            continue
        link = endpoint.login_link()
        print(link)
        if args.open:
            import webbrowser

            if not webbrowser.open(link):
                _note("no browser could be started here: open the link above on your machine")


def _format_status(address: str, status: dict[str, Any]) -> str:
    # PARL's line, word for word.
    lines = [
        f"# Cluster {address} has {status.get('cpu_used', 0)} used cpus, "
        f"{status.get('cpu_vacant', 0)} vacant cpus, {status.get('gpu_used', 0)} used_gpus, "
        f"{status.get('gpu_vacant', 0)} vacant_gpus."
    ]
    for worker in status.get("workers", []):
        kind = "gpu" if worker.get("gpu_total") else "cpu"
        used, vacant = worker.get(f"{kind}_used", 0), worker.get(f"{kind}_vacant", 0)
        usage = f"{used} used {kind}s, {vacant} vacant {kind}s"
        if "hwm" in worker:  # grants in flight (actors not started yet) and its mark
            limit = worker["hwm"] or "unlimited"
            usage += f", {worker.get('starting', 0)} starting (hwm {limit})"
        lines.append(f"#   worker {worker.get('worker_id')} on {worker.get('hostname')}: {usage}")
    lines.append(
        f"#   {len(status.get('clients', []))} clients, {status.get('actors', 0)} actors, "
        f"{status.get('pending_requests', 0)} pending actor requests"
    )
    sessions = _SESSIONS.get(status.get("sessions", ""), "unknown")
    lines.append(f"#   scheme: {status.get('scheme', 'unknown')}; messages: {sessions}")
    return "\n".join(lines)


def cmd_stop(args: argparse.Namespace) -> None:
    root = state_dir()
    stopped_any = False
    for path, record in nodes.read_records(root / "workers"):
        if args.port is None or keys.port_of(record.get("address", "")) == args.port:
            pid = record.get("pid") or -1
            if nodes.stop_pid(pid):
                print(f"Stopped worker pid {pid} (of cluster {record.get('address')}).")
                stopped_any = True
            path.unlink(missing_ok=True)
    for path, record in nodes.read_records(root / "clusters"):
        if args.port is None or record.get("port") == args.port:
            stopped_any |= _stop_cluster(path, record)
    if not stopped_any:
        where = f" on port {args.port}" if args.port is not None else ""
        print(f"No running parl_rs node of yours was found{where}.")


def _stop_cluster(path: Path, record: dict) -> bool:
    # The worker first: its jobs end with it, while the master can still take its goodbye.
    pids = record.get("pids", {})
    stopped = [
        f"{role} pid {pids[role]}"
        for role in ("worker", "master")
        if pids.get(role) and nodes.stop_pid(pids[role])
    ]
    cluster_dir = path.with_suffix("")
    for ready in ("master.ready", "worker.ready"):
        (cluster_dir / ready).unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    if stopped:
        print(f"Stopped the cluster on port {record.get('port')}: {', '.join(stopped)}.")
    return bool(stopped)


# --- argument parsing --------------------------------------------------------------------------


def _schemes() -> list[str]:
    """The master's placement schemes, the default first (one list, in the native core)."""
    from parl_rs import _core

    return _core.schemes()


_U32_MAX = 2**32 - 1


def _hwm_count(zero_means: str) -> Callable[[str], int]:
    """The `type` of a `--hwm` flag: a count of grants in flight, 0 to 2^32-1 (the native
    field's range), so a bad one is an argparse error, not a node that fails to start."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a whole number of grants in flight, got {text!r} (0: {zero_means})"
            ) from None
        if not 0 <= value <= _U32_MAX:
            raise argparse.ArgumentTypeError(
                f"must be 0 or more (at most {_U32_MAX}), got {value} (0: {zero_means})"
            )
        return value

    return parse


def _flag(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """Add `--name_with_underscores` (PARL's spelling) and its `--dash-form` alias."""
    dashed = name.replace("_", "-")
    aliases = [dashed] if dashed != name else []
    parser.add_argument(name, *aliases, dest=name.lstrip("-"), **kwargs)


_KEY_HELP = (
    f"the cluster key (default: ${keys.KEY_ENV}, else the key `xparl start` stored on this "
    "machine for the master's port; without one, only an --insecure cluster accepts you). "
    "`ps` shows it: prefer --key_file"
)
_KEY_FILE_HELP = "a file holding the cluster key (e.g. a copy of the master's <port>.key)"


def _key_flags(parser: argparse.ArgumentParser) -> None:
    """`--key` and `--key_file` of the commands that join or ask a cluster."""
    _flag(parser, "--key", help=_KEY_HELP)
    _flag(parser, "--key_file", help=_KEY_FILE_HELP)


def _parser() -> argparse.ArgumentParser:
    from parl_rs import __version__

    parser = argparse.ArgumentParser(prog="xparl", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"parl_rs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    start = commands.add_parser("start", help="start a master (and a worker) on this machine")
    _flag(start, "--port", type=int, required=True, help="port of the master")
    _flag(start, "--cpu_num", type=int, help="CPUs of the local worker (default: all; 0: none)")
    _flag(start, "--host", help="address to bind (default: all interfaces)")
    _flag(
        start,
        "--advertise",
        help="host that clients use to reach this machine's jobs and logs (NAT, VPN, several "
        "interfaces); default: the bound interface",
    )
    _flag(start, "--debug", action="store_true", help="verbose node logs")
    _flag(
        start,
        "--heartbeat_interval",
        type=float,
        default=1.0,
        help="seconds between heartbeats of workers and clients (default: 1)",
    )
    _flag(
        start,
        "--heartbeat_timeout",
        type=float,
        default=5.0,
        help="seconds of silence after which a worker or client is dead (default: 5)",
    )
    _flag(
        start,
        "--gpu_cluster",
        action="store_true",
        help="a GPU cluster: only GPU workers and actors (@remote_class(n_gpu=K)); no CPU slots",
    )
    _flag(
        start,
        "--gpu",
        default="",
        help="GPU ids of the local worker, e.g. 0,1 (only with --gpu_cluster)",
    )
    _flag(
        start,
        "--monitor_port",
        help="port of the master's HTTP endpoint: the web monitor, its API, /metrics, /status "
        "and actors' logs (default: port + 100)",
    )
    _flag(
        start,
        "--monitor_host",
        help="address the HTTP endpoint binds (default: --host), e.g. 127.0.0.1 to keep the "
        "monitor on this machine (reach it through an SSH tunnel)",
    )
    _flag(
        start,
        "--key",
        help=f"the cluster key (default: ${keys.KEY_ENV}, else the key stored for this port, "
        "else a new random one); stored in <state dir>/keys/<port>.key, readable only by you. "
        "`ps` shows it: prefer --key_file",
    )
    _flag(start, "--key_file", help=_KEY_FILE_HELP)
    _flag(
        start,
        "--insecure",
        action="store_true",
        help="no key: every port accepts anyone who reaches it (only on a trusted network)",
    )
    _flag(
        start,
        "--encrypt",
        action="store_true",
        help="encrypt every message of the cluster (ChaCha20-Poly1305), not only authenticate "
        "it: for networks where payloads must not be read. Workers and clients learn it from "
        "the master",
    )
    _flag(
        start,
        "--scheme",
        default=_schemes()[0],
        choices=_schemes(),
        help="where actors are placed: leastload (the least busy worker), lru (the least "
        "recently used), plainrandom, twobin (the less recently used of two at random), "
        "weighted (the less loaded of two drawn by inverse load), spread (the least busy "
        "machine), pack (fill one machine before the next). Default: %(default)s",
    )
    _flag(
        start,
        "--hwm",
        type=_hwm_count("unlimited"),
        default=0,
        metavar="N",
        help="high-water mark: the most actors granted on one worker that have not started yet "
        "(so a slow or remote worker is not handed a burst it cannot start), for workers that "
        "set none with `xparl connect --hwm`. Default: 0, unlimited",
    )
    _flag(start, "--log_server_port_range", help="accepted for PARL compatibility, ignored")
    start.set_defaults(func=cmd_start)

    join = commands.add_parser("connect", help="add this machine's CPUs (or GPUs) to a cluster")
    _flag(join, "--address", required=True, help="the master's host:port")
    _flag(join, "--cpu_num", type=int, help="CPUs to offer (default: all)")
    _flag(
        join,
        "--host",
        help="interface jobs bind (default: the one that routes to the master; 0.0.0.0 with "
        "--advertise: every interface)",
    )
    _flag(
        join,
        "--advertise",
        help="host that clients use to reach this machine's jobs and logs (default: --host)",
    )
    _flag(
        join,
        "--gpu",
        default="",
        help="offer these GPU ids (e.g. 0,1) to a GPU cluster instead of CPUs",
    )
    _flag(
        join,
        "--hwm",
        type=_hwm_count("the master's default"),
        default=0,
        metavar="N",
        help="this worker's high-water mark: the most actors granted on it that have not started "
        "yet. Default: 0, the master's (xparl start --hwm)",
    )
    _key_flags(join)
    _flag(join, "--log_server_port_range", help="accepted for PARL compatibility, ignored")
    join.set_defaults(func=cmd_connect)

    status = commands.add_parser("status", help="show the clusters of this user")
    _flag(status, "--address", help="ask this master (host:port) only")
    _key_flags(status)
    _flag(
        status,
        "--url",
        action="store_true",
        help="print the link to each cluster's HTTP status (with its token) instead",
    )
    status.set_defaults(func=cmd_status)

    monitor = commands.add_parser(
        "monitor", help="print the link that logs a browser in to each cluster's web monitor"
    )
    _flag(monitor, "--address", help="this master (host:port) only")
    _key_flags(monitor)
    _flag(monitor, "--open", action="store_true", help="open the link in a browser too")
    _flag(
        monitor,
        "--token",
        action="store_true",
        help="print only the HTTP token (for scripts and Prometheus' `authorization`)",
    )
    monitor.set_defaults(func=cmd_monitor)

    stop = commands.add_parser(
        "stop",
        help="stop the nodes this user started; a stopped master also stops the workers that "
        "joined it from other machines",
    )
    _flag(stop, "--port", type=int, help="only the cluster on this port")
    stop.set_defaults(func=cmd_stop)

    from parl_rs.slurm import add_parser as add_slurm_parser  # here: it imports this module

    add_slurm_parser(commands, _flag)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    try:
        args = _parser().parse_args(argv)
        try:
            args.func(args)
        except CliError as exc:
            print(f"xparl {args.command}: error: {exc}", file=sys.stderr)
            sys.exit(1)
        except BrokenPipeError:
            raise
        except OSError as exc:  # e.g. a full disk under the state directory: no traceback
            print(f"xparl {args.command}: error: {exc}", file=sys.stderr)
            sys.exit(1)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except BrokenPipeError:
        # `xparl status | head -1`: the reader left. Python's recipe (docs of `signal`, "Note
        # on SIGPIPE"): point stdout at devnull so the flush at exit cannot fail again, and
        # exit as a process killed by SIGPIPE would (128 + 13).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(128 + signal.SIGPIPE)


if __name__ == "__main__":
    main()
