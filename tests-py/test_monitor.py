"""The master's monitor API on real clusters: its numbers follow actors, calls, tasks and
deaths (with their causes); `/metrics` says the same in the Prometheus text format, as read
by the official parser; the cluster key guards every path, a login link turns into an
HttpOnly cookie; logs come through the master; `xparl status` and `xparl monitor` use it."""

from __future__ import annotations

import http.cookiejar
import json
import os
import signal
import urllib.error
import urllib.request
import uuid
from email.message import Message
from typing import Any, Optional

import pytest

import parl_rs as parl
from conftest import Cluster, running_cluster, wait_until, xparl
from parl_rs.monitor import Endpoint, endpoint_of

pytestmark = pytest.mark.timeout(120)


@parl.remote_class
class Sim:
    def __init__(self, seed: int) -> None:
        self.seed = seed

    def step(self, n: int) -> int:
        print(f"sim {self.seed} step {n}", flush=True)
        return n * 2

    def pid(self) -> int:
        return os.getpid()

    def fail(self) -> None:
        raise ValueError(f"bad seed {self.seed}")

    def say(self, text: str) -> None:
        print(text, flush=True)


@parl.remote_function
def square(x: int) -> int:
    return x * x


def endpoint(cluster: Cluster) -> Endpoint:
    from parl_rs import keys

    return endpoint_of(cluster.address, keys.find_key(cluster.address))


def raw_get(url: str, headers: Optional[dict[str, str]] = None) -> tuple[int, Message, bytes]:
    """GET without following redirects: (status, headers, body)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_the_api_and_metrics_follow_actors_tasks_and_deaths(four_cpus: Cluster) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    api = endpoint(four_cpus)
    sims = [Sim(seed) for seed in range(3)]
    for n in range(4):
        assert [sim.step(n) for sim in sims] == [n * 2] * 3
    assert sum(square.map(range(100))) == sum(x * x for x in range(100))
    os.kill(sims[0].pid(), signal.SIGKILL)
    with pytest.raises(Exception, match="bad seed 1"):
        sims[1].fail()

    def settled() -> Optional[dict]:
        cluster = api.get("/api/v1/cluster")
        totals = cluster["totals"]
        # Idle task leases go back within a second: then the slots are still.
        done = totals["tasks_done"] == 100 and totals["deaths"] == 2 and totals["actors"] == 1
        done = done and totals["leases"] == 0 and totals["cpu_used"] == 1
        return cluster if done else None

    cluster = wait_until(settled, 20, what="the API to count the tasks and both deaths")
    totals = cluster["totals"]
    # 3 inits, 12 steps, 1 pid, 1 failed call (a failed call is answered too).
    assert totals["calls"] == 17, totals
    assert (totals["workers"], totals["clients"], totals["tasks_failed"]) == (1, 1, 0)
    (client,) = cluster["clients"]
    assert client["script"] and client["pid"] == os.getpid()
    assert (client["tasks_submitted"], client["tasks_done"], client["tasks_queued"]) == (
        100,
        100,
        0,
    )
    (worker,) = cluster["workers"]
    assert worker["cpu_total"] == 4 and worker["actors"] == 1
    wait_until(
        lambda: api.get("/api/v1/cluster")["workers"][0]["memory_total"], 10, what="worker stats"
    )

    actors = {a["job_id"]: a for a in api.get("/api/v1/actors")["actors"] if a["kind"] == "actor"}
    by_pid = {a["pid"]: a for a in actors.values()}
    live = by_pid[sims[2].pid()]
    assert (live["class_name"], live["state"]) == ("Sim", "running")
    wait_until(
        lambda: api.get(f"/api/v1/actors/{live['job_id']}")["calls"] == 6,
        10,
        what="the job's own count of its calls (init, 4 steps, pid)",
    )
    ended = sorted((a["cause"], a["state"]) for a in actors.values() if a["state"] == "ended")
    assert ended == [("exception", "ended"), ("signal", "ended")], actors

    events = api.get("/api/v1/events")["events"]
    deaths = {e["cause"]: e["message"] for e in events if e["kind"] == "job_died"}
    assert set(deaths) == {"signal", "exception"}, events
    assert "SIGKILL" in deaths["signal"] and "bad seed 1" in deaths["exception"], deaths
    assert api.get(f"/api/v1/events?after={events[-1]['seq']}")["events"] == []

    history = api.get("/api/v1/history")
    assert sum(history["cluster"]["tasks_done"]) == 100
    assert sum(history["cluster"]["deaths"]) == 2

    # One more call since (sims[2].pid()): the metrics count it once the client reported it.
    calls = 18
    wait_until(lambda: api.get("/api/v1/cluster")["totals"]["calls"] == calls, 10, what="a report")
    metrics = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(api.get("/metrics"))
        for sample in family.samples
    }
    assert metrics[("parl_rs_tasks_total", (("outcome", "done"),))] == 100
    assert metrics[("parl_rs_job_deaths_total", (("cause", "signal"),))] == 1
    assert metrics[("parl_rs_job_deaths_total", (("cause", "exception"),))] == 1
    assert metrics[("parl_rs_calls_total", ())] == calls
    assert metrics[("parl_rs_actors", ())] == 1
    assert metrics[("parl_rs_cpu_slots", (("state", "used"),))] == totals["cpu_used"]
    assert metrics[("parl_rs_queue_length", (("resource", "cpu"),))] == 0
    assert (
        "parl_rs_worker_load1",
        (("hostname", worker["hostname"]), ("worker", worker["worker_id"])),
    ) in metrics


def test_every_path_needs_the_key_and_the_login_link_leaves_only_a_cookie(
    connected: Cluster,
) -> None:
    api = endpoint(connected)
    assert api.token
    for path in ["/", "/api/v1/cluster", "/api/v1/actors", "/metrics", "/assets/app.js"]:
        status, _, _ = raw_get(api.base + path)
        assert status == 401, path
    status, headers, body = raw_get(api.base + "/", {"Accept": "text/html"})
    assert status == 401 and b"xparl monitor" in body
    assert raw_get(api.base + "/login?token=" + "0" * 64)[0] == 401
    assert raw_get(api.base + "/api/v1/cluster", {"Cookie": "parl_rs_token=00"})[0] == 401

    status, headers, _ = raw_get(api.login_link())
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"parl_rs_token={api.token};")
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"]:
        assert attribute in cookie, cookie

    # A browser-like client: follows the redirect with the cookie, ends on "/" with no token.
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(api.login_link(), timeout=10) as page:
        assert page.status == 200 and page.geturl() == api.base + "/"
        assert "text/html" in page.headers["Content-Type"]
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert page.headers["Referrer-Policy"] == "no-referrer"
    with opener.open(api.base + "/api/v1/cluster", timeout=10) as answer:
        assert json.loads(answer.read())["api_version"] == 1


def test_an_actors_log_comes_through_the_master(connected: Cluster) -> None:
    api = endpoint(connected)
    sim = Sim(7)
    marker = f"marker-{uuid.uuid4()}"
    sim.say(marker)
    job = next(a for a in api.get("/api/v1/actors")["actors"] if a["pid"] == sim.pid())
    log_path = f"/api/v1/actors/{job['job_id']}/log?lines=50"
    wait_until(lambda: marker in api.get(log_path), 2, what="the actor's line in its log")
    status, headers, body = raw_get(
        api.base + f"/api/v1/actors/{job['job_id']}/log?download=1",
        {"Authorization": f"Bearer {api.token}"},
    )
    assert status == 200 and marker.encode() in body
    assert headers["Content-Disposition"] == f'attachment; filename="{job["job_id"]}.log"'
    status, _, _ = raw_get(
        api.base + "/api/v1/actors/w-nobody-1/log", {"Authorization": f"Bearer {api.token}"}
    )
    assert status == 404


def test_xparl_status_prints_from_the_api_and_monitor_prints_the_link(
    connected: Cluster,
) -> None:
    sim = Sim(1)
    assert sim.step(1) == 2
    status = xparl("status", "--address", connected.address)
    assert status.returncode == 0, status.stderr
    assert "used cpus" in status.stdout and "1 actors" in status.stdout, status.stdout
    assert "calls" in status.stdout and "memory" in wait_for_memory(connected)
    monitor = xparl("monitor", "--address", connected.address)
    assert monitor.returncode == 0, monitor.stderr
    (link,) = monitor.stdout.split()
    assert link == endpoint(connected).login_link()
    token = xparl("monitor", "--address", connected.address, "--token").stdout.strip()
    assert token == endpoint(connected).token


def wait_for_memory(cluster: Cluster) -> str:
    """`xparl status` once its worker has reported its memory (every 2 s)."""

    def printed() -> Optional[str]:
        out = xparl("status", "--address", cluster.address).stdout
        return out if "memory" in out else None

    return wait_until(printed, 15, interval=0.5, what="the worker's memory in xparl status")


def test_monitor_host_binds_the_endpoint_where_asked(state_dir: Any) -> None:
    with running_cluster(state_dir, 0, "--monitor_host", "127.0.0.1", host="0.0.0.0") as cluster:
        record = json.loads((state_dir / "clusters" / f"{cluster.port}.json").read_text())
        assert record["http_address"].startswith("127.0.0.1:"), record
        assert endpoint(cluster).get("/api/v1/cluster")["totals"]["workers"] == 0


def test_monitor_url_of_an_embedded_cluster() -> None:
    parl.connect()
    try:
        sim = Sim(3)
        assert sim.step(2) == 4
        link = parl.monitor_url()
        assert "/login?token=" in link
        base = link.split("/login")[0]
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        opener.open(link, timeout=10).close()
        with opener.open(base + "/api/v1/cluster", timeout=10) as answer:
            assert json.loads(answer.read())["totals"]["actors"] == 1
    finally:
        parl.disconnect()


def test_an_ended_actor_keeps_its_last_calls_and_its_cause(connected: Cluster) -> None:
    api = endpoint(connected)
    sim = Sim(5)
    pid = sim.pid()
    for n in range(3):
        sim.step(n)
    del sim  # released at once: its last calls were never in a worker's periodic report

    def ended() -> Optional[dict]:
        actors = api.get("/api/v1/actors")["actors"]
        actor = next((a for a in actors if a["pid"] == pid), None)
        return actor if actor and actor["state"] == "ended" else None

    actor = wait_until(ended, 10, what="the released actor to be listed as ended")
    # Its init, pid() and 3 steps; a release is no death.
    assert (actor["calls"], actor["cause"]) == (5, "released"), actor
    assert api.get("/api/v1/cluster")["totals"]["deaths"] == 0
