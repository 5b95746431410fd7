"""Reading an actor's output: what it wrote to stdout and stderr, kept in a log file on its
worker and served over HTTP by the worker's log server (`/get-log`, `/download-log`).

The log server answers only requests with the cluster's HTTP token (derived from the cluster
key): `get_log` sends it as a header, `log_url` puts it in the URL so the link works when
opened elsewhere (treat the URL like the key)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional

_TIMEOUT = 10.0


def get_log(actor: Any, lines: Optional[int] = None) -> str:
    """The last `lines` lines (default 500) the actor printed to stdout and stderr.

    Works while the actor lives and after it ended, until the worker's retention removes the
    log. Raises `ValueError` for an object that is not an actor, `LookupError` when the worker
    has no log for it or the actor has no job yet (future mode: it still waits for a slot, or
    its creation failed).
    """
    handle = _handle_of(actor)
    query = {"job_id": handle.actor_id}
    if lines is not None:
        query["lines"] = str(int(lines))
    url = f"http://{handle.log_address}/get-log?{urllib.parse.urlencode(query)}"
    return json.loads(_fetch(url, handle.actor_id))["log"]


def _http_token() -> Optional[str]:
    from parl_rs.client import get_global_client

    return get_global_client().http_token


def log_url(actor: Any) -> str:
    """The URL where the actor's whole log can be downloaded (`LookupError` as in `get_log`)."""
    handle = _handle_of(actor)
    query = {"job_id": handle.actor_id}
    token = _http_token()
    if token is not None:
        query["token"] = token
    return f"http://{handle.log_address}/download-log?{urllib.parse.urlencode(query)}"


def _handle_of(actor: Any) -> Any:
    """The native handle of an actor that has a job (a log exists only once it has one)."""
    handle = getattr(actor, "_xparl_handle", None)
    if handle is None:
        raise ValueError(f"{actor!r} is not a parl_rs actor")
    if handle.actor_id is None:
        raise LookupError(
            f"no log for this actor of `{handle.class_name}`: it has no job yet (a future-mode "
            "actor waits for a vacant slot in the background, and has none if that failed)"
        )
    return handle


def _fetch(url: str, actor_id: str) -> bytes:
    token = _http_token()
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        try:
            detail = json.loads(detail)["message"]
        except (ValueError, KeyError, TypeError):
            pass
        raise LookupError(f"no log for actor {actor_id}: {detail}") from exc
