"""The master's web monitor and its JSON API (see docs/monitor-api.md), from Python.

`xparl status` prints from the API, `xparl monitor` prints (or opens) the link that logs a
browser in, and a program reads the same numbers with `cluster_api`::

    from parl_rs.monitor import cluster_api, monitor_url
    cluster_api("localhost:8010", "/api/v1/cluster")["totals"]["actors"]
    monitor_url()      # the link for the cluster this process is connected to
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, NamedTuple, Optional

from parl_rs import keys

__all__ = ["Endpoint", "endpoint_of", "cluster_api", "monitor_url", "format_cluster"]

# Every request has a deadline: an endpoint that accepts and never answers must not hang
# `xparl status`.
_TIMEOUT_S = 10.0


class Endpoint(NamedTuple):
    """A master's HTTP endpoint: its base URL and the token it wants (None: no key)."""

    base: str
    token: Optional[str]

    def login_link(self) -> str:
        """The link that logs a browser in once (then an HttpOnly cookie holds the token)."""
        return f"{self.base}/login?token={self.token}" if self.token else f"{self.base}/"

    def get(self, path: str) -> Any:
        """GET `path` of the endpoint as JSON (or text for /metrics and logs)."""
        request = urllib.request.Request(self.base + path)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
                body = response.read()
                if response.headers.get_content_type() == "application/json":
                    return json.loads(body)
                return body.decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:300]
            raise OSError(f"{self.base}{path} answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OSError(f"cannot reach the monitor at {self.base}: {reason}") from None


def endpoint_of(address: str, key: Optional[str] = None, status: Optional[dict] = None) -> Endpoint:
    """The HTTP endpoint of the master at `address` ("host:port"): asked of the master itself
    (`status`, if given, is its answer already). Raises OSError if it serves none."""
    from parl_rs import _core

    if status is None:
        status = _core.cluster_status(address, key=key)
    http_address = status.get("http_address")
    if not http_address:
        raise OSError(f"the master at {address} serves no HTTP endpoint")
    bound_host, _, port = http_address.rpartition(":")
    host = bound_host
    if bound_host in ("0.0.0.0", "::", "[::]", ""):
        # Bound on every interface: reach it the way the master was reached.
        host = address.removeprefix("tcp://").rpartition(":")[0]
    token = _core.http_token(key) if key else None
    return Endpoint(f"http://{host}:{port}", token)


def cluster_api(address: str, path: str = "/api/v1/cluster", key: Optional[str] = None) -> Any:
    """GET `path` of the monitor API of the master at `address`, with its key (default: the
    one this machine has for it, see `xparl status`)."""
    return endpoint_of(address, keys.find_key(address, key)).get(path)


def monitor_url() -> str:
    """The login link of the web monitor of the cluster this process is connected to (with
    `parl_rs.connect`); it holds a token: keep it private."""
    from parl_rs.client import get_global_client

    client = get_global_client()
    endpoint = endpoint_of(client.master_address, None, client.status())
    return endpoint._replace(token=client.http_token).login_link()


def _mib(value: Optional[int]) -> str:
    return "?" if value is None else f"{value / 2**30:.1f} GiB"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} m"
    return f"{minutes} m {seconds} s" if minutes else f"{seconds} s"


_SESSIONS = {
    "insecure": "NOT authenticated (--insecure)",
    "authenticated": "authenticated (not encrypted)",
    "encrypted": "encrypted and authenticated",
}


def format_cluster(address: str, cluster: dict) -> str:
    """What `xparl status` prints of `/api/v1/cluster`: PARL's first line word for word, then
    a line per worker, the clients, the queue and the settings."""
    totals = cluster["totals"]
    cpu_vacant = totals["cpu_total"] - totals["cpu_used"]
    gpu_vacant = totals["gpu_total"] - totals["gpu_used"]
    lines = [
        f"# Cluster {address} has {totals['cpu_used']} used cpus, {cpu_vacant} vacant cpus, "
        f"{totals['gpu_used']} used_gpus, {gpu_vacant} vacant_gpus."
    ]
    for worker in cluster["workers"]:
        kind = "gpu" if worker["gpu_total"] else "cpu"
        used = worker[f"{kind}_used"]
        vacant = worker[f"{kind}_total"] - used
        limit = worker["hwm"] or "unlimited"
        usage = f"{used} used {kind}s, {vacant} vacant {kind}s"
        usage += f", {worker['starting']} starting (hwm {limit})"
        if worker.get("memory_total") is not None:
            usage += f", memory {_mib(worker['memory_used'])} of {_mib(worker['memory_total'])}"
        if worker.get("load1") is not None:
            usage += f", load {worker['load1']:.2f}"
        lines.append(f"#   worker {worker['worker_id']} on {worker['hostname']}: {usage}")
    lines.append(
        f"#   {totals['clients']} clients, {totals['actors']} actors, {totals['leases']} task "
        f"leases, {totals['waiting']} pending actor requests"
    )
    for client in cluster["clients"]:
        lines.append(
            f"#   client {client['client_id']} ({client['script']}, pid {client['pid']} on "
            f"{client['hostname']}, up {_duration(client['uptime_s'])}): {client['actors']} "
            f"actors, {client['calls']} calls, {client['tasks_done']} tasks done, "
            f"{client['tasks_failed']} failed, {client['tasks_queued']} queued"
        )
    for waiting in cluster["queue"]:
        lines.append(
            f"#   waiting: {waiting['class_name']} of client {waiting['client_id']} for "
            f"{waiting['resource']}, {_duration(waiting['waited_s'])}"
        )
    lines.append(
        f"#   {totals['calls']} calls, {totals['tasks_done']} tasks done, "
        f"{totals['tasks_failed']} failed, {totals['deaths']} jobs died since the master started "
        f"{_duration(cluster['uptime_s'])} ago (parl_rs {cluster['version']})"
    )
    sessions = _SESSIONS.get(cluster["sessions"], "unknown")
    lines.append(f"#   scheme: {cluster['scheme']}; messages: {sessions}")
    return "\n".join(lines)
