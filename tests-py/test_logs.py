"""Actors' output: kept per job on its worker (stdout and stderr, C-level writes included),
served by the worker's HTTP log server, readable with `parl_rs.get_log`, and optionally
echoed to the driver."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import parl_rs as parl
from conftest import Cluster, wait_until


def _printer_class():
    @parl.remote_class
    class Printer:
        def __init__(self):
            print("Init actor...")

        def say(self, text):
            import os
            import sys

            print(f"out: {text}")
            sys.stderr.write(f"err: {text}\n")
            os.write(1, f"raw: {text}\n".encode())  # below Python's sys.stdout
            return text

    return Printer


def _get(url: str) -> tuple[int, bytes]:
    """GET with the cluster's HTTP token, as `parl.get_log` sends it."""
    token = parl.get_global_client().http_token
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_get_log_has_stdout_and_stderr(connected: Cluster) -> None:
    printer = _printer_class()()
    printer.say("hello")
    expected = ["Init actor...", "out: hello", "err: hello", "raw: hello"]
    log = wait_until(
        lambda: (lambda text: text if all(e in text for e in expected) else None)(
            parl.get_log(printer)
        ),
        10,
        what="the log to hold the actor's output",
    )
    assert log.index("Init actor...") < log.index("out: hello")
    assert parl.get_log(printer, lines=1).count("\n") <= 1


def test_the_http_contract_of_the_log_server(connected: Cluster) -> None:
    printer = _printer_class()()
    printer.say("contract")
    handle = printer._xparl_handle
    base = f"http://{handle.log_address}"
    status, body = _get(f"{base}/get-log")
    assert status == 400 and "job_id" in json.loads(body)["message"]
    status, body = _get(f"{base}/get-log?job_id=no-such-job")
    assert status == 400 and "no-such-job" in json.loads(body)["message"]
    wait_until(lambda: "raw: contract" in parl.get_log(printer), 10, what="the output")
    status, body = _get(f"{base}/get-log?job_id={handle.actor_id}")
    assert status == 200 and "out: contract" in json.loads(body)["log"]
    status, body = _get(parl.log_url(printer))
    assert status == 200 and b"err: contract" in body


def test_the_log_outlives_the_actor(connected: Cluster) -> None:
    printer = _printer_class()()
    printer.say("bye")
    url = parl.log_url(printer)
    wait_until(lambda p=printer: "raw: bye" in parl.get_log(p), 10, what="the output")
    del printer
    status, body = _get(url)
    assert status == 200 and b"out: bye" in body


def test_log_to_driver_echoes_output_with_the_actor_prefix(
    cluster: Cluster,
    capfd: pytest.CaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Shipped files make the job hold the init until they arrive: the output still comes once.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.txt").write_text("shipped")
    parl.connect(cluster.address, distributed_files=["data.txt"], log_to_driver=True)
    try:
        printer = _printer_class()()
        printer.say("echo-me")
        assert parl.get_global_client().files_shipped == 1
        seen = []

        def echoed() -> bool:
            seen.append(capfd.readouterr().out)
            return "echo-me" in "".join(seen)

        wait_until(echoed, 10, what="the actor's output on the driver")
        time.sleep(0.5)  # a line echoed twice would have come by now
        seen.append(capfd.readouterr().out)
        lines = [line for line in "".join(seen).splitlines() if "out: echo-me" in line]
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"[actor {printer._xparl_handle.actor_id} on ")
    finally:
        parl.disconnect()


def test_the_master_serves_status_and_finds_every_jobs_log(connected: Cluster) -> None:
    record = json.loads((connected.state_dir / "clusters" / f"{connected.port}.json").read_text())
    master_http = f"http://{record['http_address']}"
    status, body = _get(f"{master_http}/status")
    assert status == 200
    assert sum(w["cpu_total"] for w in json.loads(body)["workers"]) == 2
    printer = _printer_class()()
    printer.say("via-master")
    job_id = printer._xparl_handle.actor_id
    wait_until(lambda: "raw: via-master" in parl.get_log(printer), 10, what="the output")
    status, body = _get(f"{master_http}/get-log?job_id={job_id}")  # redirected to the worker
    assert status == 200 and "out: via-master" in json.loads(body)["log"]
    status, body = _get(f"{master_http}/get-log?job_id=unknown-job")
    assert status == 400 and "unknown-job" in json.loads(body)["message"]


def test_a_future_mode_actor_has_a_log_once_it_has_a_job(connected: Cluster) -> None:
    blocking = _printer_class()
    holders = [blocking(), blocking()]  # both CPUs of the cluster
    waiting = parl.remote_class(wait=False)(blocking._original)()
    with pytest.raises(LookupError, match="no job yet"):
        parl.get_log(waiting)
    with pytest.raises(LookupError, match="no job yet"):
        parl.log_url(waiting)
    holders.pop().destroy()
    assert waiting.say("late").get(timeout=20) == "late"
    wait_until(lambda: "out: late" in parl.get_log(waiting), 10, what="the log to hold the call")


SPAMMER = """
import os
import sys
import parl_rs as parl

parl.connect(sys.argv[1], log_to_driver=True)


@parl.remote_class
class Spammer:
    def spam(self, lines):
        for i in range(lines):
            print(f"line {i} " + "x" * 200)
        return lines

    def ping(self):
        return "pong"


spammer = Spammer()
assert spammer.spam(100_000) == 100_000  # ~20 MB of output for a stdout nobody reads
assert all(spammer.ping() == "pong" for _ in range(50))
with open(sys.argv[2], "w") as done:
    done.write("done")
os._exit(0)  # stdout is full: a normal exit would wait to flush it
"""


def test_log_to_driver_never_stalls_calls_when_stdout_is_not_read(
    cluster: Cluster, tmp_path: Path
) -> None:
    script, done = tmp_path / "spammer.py", tmp_path / "done"
    script.write_text(SPAMMER)
    # stdout is a pipe this test does not read until the end: it fills after 64 KiB.
    driver = subprocess.Popen(
        [sys.executable, str(script), cluster.address, str(done)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: done.exists() or driver.poll() is not None, 90, what="the calls")
        assert done.exists(), f"the driver exited with {driver.returncode} before its calls ended"
    finally:
        driver.kill()
        output = driver.communicate(timeout=30)[0]
    assert output.startswith(b"[actor "), output[:200]
