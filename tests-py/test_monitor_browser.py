"""The web monitor in a real browser (headless Chromium through Selenium) against a real
cluster of two workers: the page shows the JSON API's numbers, an actor's output, the job
deaths with their cause, logs no console error, and the HTTP port wants the token (the login
link turns it into an HttpOnly cookie and leaves no token in the address bar).

A screenshot of each view is saved to $PARL_RS_TEST_ARTIFACTS (default target/test-artifacts/
in the repository) for a person to look at. Skipped when selenium, chromium or chromedriver
is missing (Debian: apt install chromium chromium-driver; PyPI: selenium).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

import pytest

import parl_rs as parl
from conftest import Cluster, describe, kill_if_ours, running_cluster, wait_until, xparl
from parl_rs import _core

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
)
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = os.environ.get("PARL_RS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PARL_RS_CHROMEDRIVER", "/usr/bin/chromedriver")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(
        f"no headless browser: {CHROMIUM} or {CHROMEDRIVER} is missing "
        "(Debian: apt install chromium chromium-driver)",
        allow_module_level=True,
    )

# Module-scoped fixtures (the cluster, the browser) are set up within the first test's time.
pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1600, 1000

# data-testid on the page -> the field of /api/v1/cluster's "totals" it shows.
TOTALS = {
    "total-workers": "workers",
    "total-clients": "clients",
    "total-cpu-used": "cpu_used",
    "total-cpu-total": "cpu_total",
    "total-gpu-used": "gpu_used",
    "total-gpu-total": "gpu_total",
    "total-actors": "actors",
    "total-leases": "leases",
    "total-waiting": "waiting",
    "total-calls": "calls",
    "total-tasks-done": "tasks_done",
    "total-tasks-failed": "tasks_failed",
    "total-deaths": "deaths",
}


def _define_actors() -> SimpleNamespace:
    # Defined in a function: shipped to the jobs by value.
    @parl.remote_class
    class Talker:
        def say(self, text: str) -> int:
            print(text, flush=True)
            return os.getpid()

    return SimpleNamespace(Talker=Talker)


ACTORS = _define_actors()


@parl.remote_function
def square(x: int) -> int:
    return x * x


# ------------------------------------------------------------------------------ the API


@dataclass
class Monitor:
    """The HTTP port of a cluster and its token."""

    http_address: str
    token: str

    @property
    def base(self) -> str:
        return f"http://{self.http_address}"

    def get(self, path: str, token: bool = True, timeout: float = 10.0) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        request = urllib.request.Request(self.base + path, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if path.startswith("/api/") and "/log" not in path else body

    def status_of(self, path: str, token: bool = False) -> int:
        try:
            self.get(path, token=token)
        except urllib.error.HTTPError as error:
            return error.code
        return 200


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# ------------------------------------------------------------------------------ fixtures


@dataclass
class Scene:
    cluster: Cluster
    monitor: Monitor
    killed: dict  # the /api/v1/actors entry of the actor whose job was killed (before)
    talkers: list  # the proxies of the actors still running
    live_job_ids: list[str]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    """A cluster of two 2-CPU workers; this process its client, with 3 actors on both workers,
    one killed by SIGKILL, and 100 tasks done."""
    state = tmp_path_factory.mktemp("monitor") / "xparl-state"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XPARL_STATE_DIR", str(state))
        patch.delenv("XPARL_CLUSTER_KEY", raising=False)
        with running_cluster(state, 2) as cluster:
            second = xparl("connect", "--address", cluster.address, "--cpu_num", "2")
            assert second.returncode == 0, describe(second)
            try:
                yield from _scene(cluster)
            finally:
                # Every node recorded in this private state dir, the `xparl connect` worker
                # too (`running_cluster` then checks the cluster's own nodes are gone).
                stopped = xparl("stop")
                for record in (state / "workers").glob("*.json"):
                    kill_if_ours(json.loads(record.read_text())["pid"], b"parl_rs._node")
                assert stopped.returncode == 0, describe(stopped)


def _scene(cluster: Cluster) -> Iterator[Scene]:
    record = json.loads((cluster.state_dir / "clusters" / f"{cluster.port}.json").read_text())
    key = (cluster.state_dir / "keys" / f"{cluster.port}.key").read_text().strip()
    monitor = Monitor(record["http_address"], _core.http_token(key))
    wait_until(
        lambda: monitor.get("/api/v1/cluster")["totals"]["workers"] == 2, 30, what="2 workers"
    )
    parl.connect(cluster.address, create_timeout=30)
    try:
        talkers = [ACTORS.Talker() for _ in range(3)]
        pids = [talker.say(f"actor {i} is up") for i, talker in enumerate(talkers)]
        actors = wait_until(
            lambda: _running_actors(monitor, pids), 15, what="the 3 actors in /api/v1/actors"
        )
        assert len({a["worker_id"] for a in actors}) == 2, f"not on both workers: {actors}"

        victim = actors[0]
        cmdline = Path(f"/proc/{victim['pid']}/cmdline").read_bytes()
        assert b"parl_rs" in cmdline, f"pid {victim['pid']} is not a job: {cmdline!r}"
        os.kill(victim["pid"], signal.SIGKILL)
        wait_until(
            lambda: _actor_state(monitor, victim["job_id"]) == ("ended", "signal"),
            15,
            what="the killed job to end with cause signal",
        )

        assert square.map(range(100)) == [x * x for x in range(100)]
        wait_until(
            lambda: monitor.get("/api/v1/cluster")["totals"]["tasks_done"] >= 100,
            15,
            what="the master to count 100 tasks done",
        )
        survivors = [t for t, a in zip(talkers, actors) if a is not victim]
        yield Scene(cluster, monitor, victim, survivors, [a["job_id"] for a in actors[1:]])
    finally:
        parl.disconnect()


def _running_actors(monitor: Monitor, pids: list[int]) -> Optional[list[dict]]:
    """The /api/v1/actors entries of the jobs with these pids, in that order, once all run."""
    by_pid = {a["pid"]: a for a in monitor.get("/api/v1/actors")["actors"]}
    found = [by_pid.get(pid) for pid in pids]
    if all(a is not None and a["state"] == "running" for a in found):
        return found  # type: ignore[return-value]
    return None


def _actor_state(monitor: Monitor, job_id: str) -> tuple[str, Optional[str]]:
    actor = monitor.get(f"/api/v1/actors/{job_id}")
    return actor["state"], actor["cause"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: $PARL_RS_TEST_ARTIFACTS, else target/test-artifacts/, else a
    temporary directory when that is not writable."""
    wanted = Path(os.environ.get("PARL_RS_TEST_ARTIFACTS") or REPO / "target" / "test-artifacts")
    directory = wanted / "monitor"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError:
        directory = tmp_path_factory.mktemp("test-artifacts")
    return directory


class Browser:
    """A headless Chromium logged in to the monitor, which fails on console errors."""

    def __init__(self, monitor: Monitor, artifacts: Path) -> None:
        self.monitor = monitor
        self.artifacts = artifacts
        options = Options()
        options.binary_location = CHROMIUM
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            f"--window-size={WIDTH},{HEIGHT}",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
        ):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # An explicit chromedriver: Selenium Manager never downloads anything.
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.set_page_load_timeout(30)
        self.driver.set_script_timeout(10)
        # The page's viewport exactly WIDTH x HEIGHT (the window size includes no chrome in
        # headless mode, but make the screenshots' size certain).
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        self.console: list[dict] = []

    def quit(self) -> None:
        with contextlib.suppress(WebDriverException):
            self.driver.quit()

    def open(self, route: str) -> None:
        """Go to a view (`#/...`) of the page already loaded."""
        self.driver.execute_script("location.hash = arguments[0]", route)
        self.wait(
            lambda: (
                self.driver.execute_script("return document.body.dataset.view")
                == {"#/": "overview", "#/actors": "actors", "#/events": "events"}.get(
                    route, "actor"
                )
            ),
            what=f"the view {route}",
        )

    def wait(self, condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        return wait_until(condition, timeout, interval=0.1, what=what)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def text(self, testid: str) -> str:
        return self.js(
            "const e = document.querySelector(`[data-testid='${arguments[0]}']`);"
            "return e ? e.textContent : null",
            testid,
        )

    def console_problems(self) -> list[dict]:
        """Console messages of level SEVERE or WARNING since the last call."""
        entries = self.driver.get_log("browser")
        self.console.extend(entries)
        return [e for e in entries if e["level"] in ("SEVERE", "WARNING")]

    def assert_clean_console(self, view: str) -> None:
        problems = self.console_problems()
        assert not problems, f"console errors on {view}: " + json.dumps(problems, indent=1)

    def screenshot(self, name: str) -> Path:
        path = self.artifacts / f"monitor-{name}.png"
        assert self.driver.save_screenshot(str(path)), f"no screenshot {path}"
        return path


@pytest.fixture(scope="module")
def browser(scene: Scene, artifacts: Path) -> Iterator[Browser]:
    try:
        browser = Browser(scene.monitor, artifacts)
    except WebDriverException as error:
        pytest.skip(f"chromium does not start under chromedriver: {error.msg}")
    try:
        browser.driver.get(f"{scene.monitor.base}/login?token={scene.monitor.token}")
        browser.wait(
            lambda: browser.text("master-address") not in (None, "", "–"),
            15,
            what="the page to show the master",
        )
        yield browser
    finally:
        browser.quit()


# ------------------------------------------------------------------------------ helpers


def _number(text: Optional[str]) -> Optional[int]:
    digits = re.sub(r"\D", "", text or "")
    return int(digits) if digits else None


def _page_totals(browser: Browser) -> dict[str, Optional[int]]:
    texts = browser.js(
        "return Object.fromEntries(Object.keys(arguments[0]).map(id => "
        "[id, (document.querySelector(`[data-testid='${id}']`) || {}).textContent]))",
        TOTALS,
    )
    return {testid: _number(text) for testid, text in texts.items()}


def _api_totals(monitor: Monitor) -> dict[str, Optional[int]]:
    totals = monitor.get("/api/v1/cluster")["totals"]
    return {testid: totals[field] for testid, field in TOTALS.items()}


def _same_as_the_api(browser: Browser, read_page: Callable[[], Any], read_api: Callable[[], Any]):
    """Waits until the page shows what the API says (asked before and after reading the page,
    so a change in between is not a mismatch); returns the values. Fails with both."""
    seen: dict[str, Any] = {}

    def agree() -> Any:
        before = read_api()
        page = read_page()
        after = read_api()
        seen.update(api=after, page=page)
        return page if page in (before, after) else None

    try:
        return browser.wait(agree, 15, what="the page to show the API's values")
    except AssertionError as error:
        raise AssertionError(
            f"{error}\n  page: {seen.get('page')}\n  api:  {seen.get('api')}"
        ) from None


# ------------------------------------------------------------------------------ the tests


def test_requests_need_the_token_and_the_login_link_leaves_only_a_cookie(
    scene: Scene, browser: Browser
) -> None:
    monitor = scene.monitor
    for path in ("/", "/api/v1/cluster"):
        assert monitor.status_of(path) == 401, f"{path} answered without the token"
        assert monitor.status_of(path, token=True) == 200, f"{path} refused the token"
    wrong = Monitor(monitor.http_address, "0" * len(monitor.token))
    assert wrong.status_of("/api/v1/cluster", token=True) == 401

    # The login link: 303 to /, with an HttpOnly cookie (seen without following the redirect).
    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as answer:
        opener.open(f"{monitor.base}/login?token={monitor.token}", timeout=10)
    assert answer.value.code == 303
    assert answer.value.headers["Location"] == "/"
    cookie = answer.value.headers["Set-Cookie"]
    assert "parl_rs_token=" in cookie and "HttpOnly" in cookie, cookie
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(f"{monitor.base}/login?token={'0' * len(monitor.token)}", timeout=10)
    assert refused.value.code == 401

    # In the browser (the fixture visited the link): the address bar holds no token, the
    # cookie is HttpOnly (no script can read it), and the page works on it alone.
    assert browser.driver.current_url.rstrip("/") == monitor.base, browser.driver.current_url
    assert "token" not in browser.driver.current_url
    (session,) = [c for c in browser.driver.get_cookies() if c["name"] == "parl_rs_token"]
    assert session["httpOnly"] is True, session
    assert "parl_rs_token" not in browser.js("return document.cookie")
    browser.assert_clean_console("the page after the login link")


def test_the_overview_shows_the_numbers_of_the_api(scene: Scene, browser: Browser) -> None:
    browser.open("#/")
    totals = _same_as_the_api(
        browser, lambda: _page_totals(browser), lambda: _api_totals(scene.monitor)
    )
    assert totals["total-workers"] == 2
    assert totals["total-cpu-total"] == 4
    assert totals["total-actors"] == 2  # 3 created, 1 killed
    assert totals["total-deaths"] == 1  # the killed one: returned leases are releases
    assert totals["total-tasks-done"] >= 100
    assert totals["total-tasks-failed"] == 0
    assert totals["total-calls"] >= 3

    def workers_on_page() -> dict[str, str]:
        return browser.js(
            "return Object.fromEntries([...document.querySelectorAll("
            "'[data-testid=worker-row]')].map(r => [r.dataset.workerId, "
            "r.querySelector('td[data-col=cpu]').textContent]))"
        )

    def workers_in_api() -> dict[str, str]:
        workers = scene.monitor.get("/api/v1/cluster")["workers"]
        return {w["worker_id"]: f"{w['cpu_used']} / {w['cpu_total']}" for w in workers}

    assert len(_same_as_the_api(browser, workers_on_page, workers_in_api)) == 2

    def clients_on_page() -> dict[str, Optional[int]]:
        cells = browser.js(
            "return Object.fromEntries([...document.querySelectorAll("
            "'[data-testid=client-row]')].map(r => [r.dataset.clientId, "
            "r.querySelector('td[data-col=tasks-done]').textContent]))"
        )
        return {client: _number(text) for client, text in cells.items()}

    def clients_in_api() -> dict[str, int]:
        clients = scene.monitor.get("/api/v1/cluster")["clients"]
        return {c["client_id"]: c["tasks_done"] for c in clients}

    (done,) = _same_as_the_api(browser, clients_on_page, clients_in_api).values()
    assert done >= 100
    # The charts are drawn from /api/v1/history: the 100 tasks are bars of the tasks chart.
    charts = ("chart-tasks", "chart-calls", "chart-actors", "chart-slots")
    drawn = (
        "return arguments[0].every(id => [...document.querySelectorAll("
        "`[data-testid=${id}] svg path`)].some(p => (p.getAttribute('d') || '').length))"
    )
    browser.wait(lambda: browser.js(drawn, charts), what="the charts")
    task_bars = "[data-testid=chart-tasks] path.bars.s-good"
    assert browser.js(
        f"return [...document.querySelectorAll('{task_bars}')].some(p => p.getAttribute('d'))"
    )
    browser.assert_clean_console("#/")
    browser.screenshot("overview")


def test_the_actors_view_lists_the_jobs_of_the_api(scene: Scene, browser: Browser) -> None:
    browser.open("#/actors")

    def rows_on_page() -> dict[str, str]:
        return browser.js(
            "return Object.fromEntries([...document.querySelectorAll("
            "'[data-testid=actor-row]')].map(r => [r.dataset.jobId, r.dataset.state]))"
        )

    def jobs_in_api() -> dict[str, str]:
        return {a["job_id"]: a["state"] for a in scene.monitor.get("/api/v1/actors")["actors"]}

    rows = _same_as_the_api(browser, rows_on_page, jobs_in_api)
    assert rows[scene.killed["job_id"]] == "ended"
    assert all(rows[job_id] == "running" for job_id in scene.live_job_ids)

    # The state filter and a sort by a column header stay through refreshes.
    browser.driver.find_element(
        By.CSS_SELECTOR, "[data-testid=actor-state] option[value=ended]"
    ).click()
    browser.wait(lambda: set(rows_on_page().values()) == {"ended"}, what="the ended rows only")
    browser.driver.find_element(
        By.CSS_SELECTOR, "[data-testid=actor-state] option[value=all]"
    ).click()
    browser.driver.find_element(By.CSS_SELECTOR, "th[data-sort=calls]").click()
    refreshed = browser.text("updated")
    browser.wait(lambda: browser.text("updated") != refreshed, what="a refresh")

    def calls_column() -> list[int]:
        texts = browser.js(
            "return [...document.querySelectorAll('[data-testid=actor-row] td[data-col=calls]')]"
            ".map(td => td.textContent)"
        )
        return [_number(text) or 0 for text in texts]

    assert calls_column() == sorted(calls_column(), reverse=True)
    browser.assert_clean_console("#/actors")
    browser.screenshot("actors")


def test_an_actors_page_shows_what_it_prints_within_2_s(scene: Scene, browser: Browser) -> None:
    talker, job_id = scene.talkers[0], scene.live_job_ids[0]
    browser.open(f"#/actors/{job_id}")
    browser.wait(lambda: "actor" in (browser.text("actor-log") or ""), what="the log of the actor")
    assert browser.text("actor-field-job_id") == job_id
    assert browser.text("actor-field-state") == "running"
    download = browser.driver.find_element(By.CSS_SELECTOR, "[data-testid=log-download]")
    assert download.get_attribute("href").endswith(f"/api/v1/actors/{job_id}/log?download=1")

    marker = f"monitor-marker-{uuid.uuid4().hex}"
    talker.say(marker)
    printed = time.monotonic()
    browser.wait(
        lambda: marker in (browser.text("actor-log") or ""), 2.0, what="the marker in the log"
    )
    shown_after = time.monotonic() - printed
    # The view follows the end of the log.
    assert browser.js(
        "const p = arguments[0]; return p.scrollHeight - p.scrollTop - p.clientHeight < 8",
        browser.driver.find_element(By.CSS_SELECTOR, "[data-testid=actor-log]"),
    )
    downloaded = scene.monitor.get(f"/api/v1/actors/{job_id}/log?download=1")
    assert marker.encode() in downloaded
    browser.assert_clean_console(f"#/actors/{job_id}")
    browser.screenshot("actor")
    print(f"the marker was on the page {shown_after:.2f} s after the actor printed it")


def test_the_events_view_shows_the_job_death_with_its_cause(scene: Scene, browser: Browser) -> None:
    browser.open("#/events")
    job_id = scene.killed["job_id"]
    selector = "[data-testid=event-row][data-kind=job_died][data-cause=signal]"

    def death_row() -> Optional[str]:
        rows = browser.driver.find_elements(By.CSS_SELECTOR, selector)
        texts = [row.text for row in rows]
        return next((text for text in texts if job_id in text), None)

    text = browser.wait(death_row, what=f"the death of {job_id} in the events view")
    assert "signal" in text
    badge_class = browser.js(
        "return document.querySelector(arguments[0] + ' [data-testid=event-cause]').className",
        selector,
    )
    assert "bad" in badge_class  # red
    events = scene.monitor.get("/api/v1/events")["events"]
    assert any(
        e["kind"] == "job_died" and e["cause"] == "signal" and e["job_id"] == job_id for e in events
    ), events
    joined = browser.driver.find_elements(By.CSS_SELECTOR, "[data-kind=worker_joined]")
    assert len(joined) >= 2
    browser.assert_clean_console("#/events")
    browser.screenshot("events")


def test_no_console_message_of_any_view_was_an_error(browser: Browser) -> None:
    browser.console_problems()
    problems = [e for e in browser.console if e["level"] in ("SEVERE", "WARNING")]
    assert not problems, json.dumps(problems, indent=1)
