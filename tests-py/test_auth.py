"""The cluster key: `xparl start` makes one and keeps it private, every port refuses peers
without it (clients, workers, `xparl status`, HTTP, raw ZeroMQ peers), and `--insecure`
turns it off with a warning."""

from __future__ import annotations

import contextlib
import json
import stat
import struct
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest
import zmq

import parl_rs as parl
from conftest import (
    Cluster,
    cluster_status,
    describe,
    free_port,
    run_script,
    running_cluster,
    wait_until,
    xparl,
)
from parl_rs import _core

pytestmark = pytest.mark.timeout(120)

CONNECT = """
import sys
import parl_rs as parl

key = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] != "-" else None
try:
    parl.connect(sys.argv[1], key=key)
except parl.AuthenticationError as exc:
    print("AuthenticationError:", exc)
    sys.exit(3)


@parl.remote_class
class Echo:
    def echo(self, x):
        return x


print("echo:", Echo().echo(41) + 1)
"""


def _define_actors() -> SimpleNamespace:
    # Defined in a function: shipped to the jobs by value.
    @parl.remote_class
    class Talker:
        def say(self, text):
            print(text)

    @parl.remote_class
    class Probe:
        def pid(self) -> int:
            import os

            return os.getpid()

    return SimpleNamespace(Talker=Talker, Probe=Probe)


ACTORS = _define_actors()


def _key(cluster: Cluster) -> str:
    return (cluster.state_dir / "keys" / f"{cluster.port}.key").read_text().strip()


@contextlib.contextmanager
def _elsewhere(tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """Within the block, the processes a test starts look like they run on another machine
    (no key file). Undone at the end, so fixtures' teardown sees the cluster's own state."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XPARL_STATE_DIR", str(tmp_path / "other-machine"))
        patch.delenv("XPARL_CLUSTER_KEY", raising=False)
        yield patch


def test_xparl_start_keeps_a_random_key_only_its_user_can_read(cluster: Cluster) -> None:
    path = cluster.state_dir / "keys" / f"{cluster.port}.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    assert len(key) == 64 and int(key, 16) > 0


def test_clients_need_the_key_and_get_a_clear_error_without_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    key = _key(cluster)
    # On the master's machine the key file is found by port.
    local = run_script(tmp_path, CONNECT, cluster.address)
    assert local.returncode == 0 and "echo: 42" in local.stdout, describe(local)

    with _elsewhere(tmp_path) as env:
        missing = run_script(tmp_path, CONNECT, cluster.address)
        assert missing.returncode == 3, describe(missing)
        assert "requires its key" in missing.stdout and "XPARL_CLUSTER_KEY" in missing.stdout
        wrong = run_script(tmp_path, CONNECT, cluster.address, "0" * 64)
        assert wrong.returncode == 3, describe(wrong)
        assert "does not hold this cluster key" in wrong.stdout
        given = run_script(tmp_path, CONNECT, cluster.address, key)
        assert given.returncode == 0 and "echo: 42" in given.stdout, describe(given)
        env.setenv("XPARL_CLUSTER_KEY", key)
        from_env = run_script(tmp_path, CONNECT, cluster.address)
        assert from_env.returncode == 0 and "echo: 42" in from_env.stdout, describe(from_env)


def test_workers_and_status_need_the_key(cluster: Cluster, tmp_path: Path) -> None:
    key = _key(cluster)
    address = cluster.address
    with _elsewhere(tmp_path):
        refused = xparl("connect", "--address", address, "--cpu_num", "1", "--key", "0" * 64)
        assert refused.returncode == 1, describe(refused)
        assert "does not hold this cluster key" in refused.stderr, describe(refused)
        status = xparl("status", "--address", address)
        assert status.returncode == 1, describe(status)
        assert "requires its key" in status.stderr, describe(status)
        assert "--key KEY" in status.stderr, describe(status)

        joined = xparl("connect", "--address", address, "--cpu_num", "1", "--key", key)
        assert joined.returncode == 0, describe(joined)
        try:
            wait_until(
                lambda: _core.cluster_status(address, key=key)["cpu_total"] == 3,
                what="the keyed worker to join",
            )
            status = xparl("status", "--address", address, "--key", key)
            assert "vacant cpus" in status.stdout, describe(status)
        finally:
            stopped = xparl("stop")  # the worker recorded on the "other machine"
            assert stopped.returncode == 0, describe(stopped)


def test_http_endpoints_want_the_token(connected: Cluster) -> None:
    record = json.loads((connected.state_dir / "clusters" / f"{connected.port}.json").read_text())
    status_url = f"http://{record['http_address']}/status"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(status_url, timeout=10)
    assert refused.value.code == 401
    assert "requires its key" in json.loads(refused.value.read())["message"]
    token = parl.get_global_client().http_token
    request = urllib.request.Request(status_url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert [w["cpu_total"] for w in json.loads(response.read())["workers"]] == [2]

    talker = ACTORS.Talker()
    talker.say("hello from the actor")
    assert "hello from the actor" in parl.get_log(talker)
    url = parl.log_url(talker)
    with urllib.request.urlopen(url, timeout=10) as response:  # the link carries the token
        assert b"hello from the actor" in response.read()
    with pytest.raises(urllib.error.HTTPError) as no_token:
        urllib.request.urlopen(url.split("&token=")[0], timeout=10)
    assert no_token.value.code == 401


def _status_request() -> bytes:
    """A well-formed StatusRequest frame: magic, protocol version, postcard variant index."""
    status_request_variant = 14
    return b"XPRL" + struct.pack("<H", _core.PROTOCOL_VERSION) + bytes([status_request_variant])


def test_unauthenticated_messages_are_refused_and_logged_rate_limited(cluster: Cluster) -> None:
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, 5000)
    try:
        dealer.connect(f"tcp://{cluster.address}")
        for _ in range(1000):
            dealer.send(_status_request())
        answers = [dealer.recv() for _ in range(1000)]
    finally:
        dealer.close()
        context.term()
    assert all(b"before the key handshake" in answer for answer in answers)
    assert not any(b"cpu_total" in answer or b"workers" in answer for answer in answers)
    log = (cluster.state_dir / "clusters" / str(cluster.port) / "master.log").read_text()
    refusals = log.count("refused a peer without the cluster key")
    assert 1 <= refusals <= 3, f"{refusals} refusal lines for 1000 refusals:\n{log[-2000:]}"


def test_an_insecure_cluster_serves_keyless_clients(state_dir: Path, tmp_path: Path) -> None:
    with running_cluster(state_dir, 1, "--insecure") as insecure:
        assert not (state_dir / "keys" / f"{insecure.port}.key").exists()
        with _elsewhere(tmp_path):
            keyless = run_script(tmp_path, CONNECT, insecure.address)
            assert keyless.returncode == 0 and "echo: 42" in keyless.stdout, describe(keyless)
            keyed = run_script(tmp_path, CONNECT, insecure.address, "some-key")
            assert keyed.returncode == 3 and "--insecure" in keyed.stdout, describe(keyed)


def test_insecure_start_prints_a_warning(state_dir: Path) -> None:
    port = str(free_port())
    started = xparl("start", "--port", port, "--cpu_num", "0", "--host", "127.0.0.1", "--insecure")
    try:
        assert started.returncode == 0, describe(started)
        assert "WARNING: --insecure" in started.stderr
    finally:
        stopped = xparl("stop", "--port", port)
        assert stopped.returncode == 0, describe(stopped)


def test_a_restarted_master_keeps_its_key(state_dir: Path) -> None:
    with running_cluster(state_dir, 0) as first:
        key = _key(first)
        port = first.port
    started = xparl("start", "--port", str(port), "--cpu_num", "0", "--host", "127.0.0.1")
    try:
        assert started.returncode == 0, describe(started)
        assert (state_dir / "keys" / f"{port}.key").read_text().strip() == key
    finally:
        xparl("stop", "--port", str(port))


def test_the_key_is_in_no_environment_nor_command_line(connected: Cluster) -> None:
    # Jobs run the user's code: the key must not be readable from /proc/<pid>/environ (theirs,
    # or their worker's and master's) nor from any command line (what `ps` shows everyone).
    probe = ACTORS.Probe()  # kept: its job lives as long as the actor
    job_pid = probe.pid()
    key = _key(connected).encode()
    for pid in [*connected.pids, job_pid]:
        for view in ("environ", "cmdline"):
            seen = Path(f"/proc/{pid}/{view}").read_bytes()
            assert key not in seen, f"the key is in /proc/{pid}/{view}"
    assert probe.pid() == job_pid  # and the job still proves the key to its worker and client


def test_a_key_file_instead_of_a_key_on_the_command_line(cluster: Cluster, tmp_path: Path) -> None:
    key = _key(cluster)
    key_file = tmp_path / "cluster.key"
    key_file.write_text(key + "\n")
    with _elsewhere(tmp_path):
        by_file = xparl("status", "--address", cluster.address, "--key_file", str(key_file))
        assert by_file.returncode == 0 and "WARNING" not in by_file.stderr, describe(by_file)
        by_flag = xparl("status", "--address", cluster.address, "--key", key)
        assert by_flag.returncode == 0, describe(by_flag)
        assert "`ps` shows it" in by_flag.stderr, describe(by_flag)
        both = xparl("status", "--address", cluster.address, "--key", key, "--key_file", "x")
        assert both.returncode == 1 and "choose one" in both.stderr, describe(both)


def test_a_key_file_is_offered_only_to_this_machines_master(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from parl_rs import keys

    monkeypatch.delenv(keys.KEY_ENV, raising=False)
    keys.store_key(8010, "k" * 64)
    for here in ("127.0.0.1:8010", "localhost:8010", "tcp://127.0.0.1:8010"):
        assert keys.find_key(here) == "k" * 64, here
    # Another host on the same port gets nothing: it could be anyone's (a relay, a stranger).
    for elsewhere in ("192.0.2.1:8010", "198.51.100.7:8010", "127.0.0.1:8011"):
        assert keys.find_key(elsewhere) is None, elsewhere
    assert keys.find_key("192.0.2.1:8010", "explicit") == "explicit"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # let the 307 through as an HTTPError, to read its Location


def test_the_master_redirects_a_bearer_request_with_the_token_and_any_case_works(
    connected: Cluster,
) -> None:
    record = json.loads((connected.state_dir / "clusters" / f"{connected.port}.json").read_text())
    token = parl.get_global_client().http_token

    talker = ACTORS.Talker()
    talker.say("hello")
    job_id = talker._xparl_handle.actor_id
    url = f"http://{record['http_address']}/get-log?job_id={job_id}"
    opener = urllib.request.build_opener(_NoRedirect)
    for scheme in ("Bearer", "bearer", "BEARER"):  # RFC 9110: the scheme in any case
        request = urllib.request.Request(url, headers={"Authorization": f"{scheme} {token}"})
        with pytest.raises(urllib.error.HTTPError) as redirected:
            opener.open(request, timeout=10)
        assert redirected.value.code == 307, scheme
        # Clients drop Authorization on a redirect to another host: the token goes along.
        location = redirected.value.headers["Location"]
        assert f"token={token}" in location
        with urllib.request.urlopen(location, timeout=10) as response:  # no header needed
            assert b"hello" in response.read()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.parametrize("port", ["master", "job"])
def test_a_peer_without_the_key_cannot_make_a_port_buffer_a_large_frame(
    connected: Cluster, port: str
) -> None:
    # Before the handshake a peer may send a few KiB; a frame claiming 100 MB is refused at
    # its header (the connection dropped), so the process never buffers it.
    probe = ACTORS.Probe()
    record = json.loads((connected.state_dir / "clusters" / f"{connected.port}.json").read_text())
    if port == "master":
        pid, address = record["pids"]["master"], connected.address
    else:
        pid, address = probe.pid(), probe._xparl_handle.job_address.removeprefix("tcp://")
    before = _rss_kib(pid)
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(f"tcp://{address}")
        tracker = dealer.send(b"\0" * (100 << 20), copy=False, track=True)
        tracker.wait(30)  # handed to the kernel, or the connection was dropped
        grown = max(_rss_kib(pid) - before for _ in range(20))
    finally:
        dealer.close()
        context.term()
    assert grown < 20 * 1024, f"the {port} grew by {grown} KiB for a keyless 100 MB frame"
    # The port goes on serving the peers that hold the key.
    assert probe.pid() > 0 and cluster_status(connected.address)["cpu_total"] == 2


NUMPY_ECHO = """
import sys
import numpy as np
import parl_rs as parl

parl.connect(sys.argv[1])


@parl.remote_class
class Echo:
    def echo(self, x):
        return x


data = np.arange(1 << 20, dtype=np.float64)
assert np.array_equal(Echo().echo(data), data)
print("echoed", data.nbytes)
"""


def test_an_encrypting_cluster_serves_clients_and_says_so(state_dir: Path, tmp_path: Path) -> None:
    with running_cluster(state_dir, 1, "--encrypt") as encrypted:
        echoed = run_script(tmp_path, NUMPY_ECHO, encrypted.address)
        assert echoed.returncode == 0 and "echoed 8388608" in echoed.stdout, describe(echoed)
        assert cluster_status(encrypted.address)["sessions"] == "encrypted"
        status = xparl("status")
        assert "messages: encrypted and authenticated" in status.stdout, describe(status)


def test_a_plain_cluster_says_its_messages_are_authenticated(cluster: Cluster) -> None:
    status = xparl("status")
    assert "messages: authenticated (not encrypted)" in status.stdout, describe(status)


def test_encrypt_without_a_key_is_refused(state_dir: Path) -> None:
    port = str(free_port())
    started = xparl("start", "--port", port, "--cpu_num", "0", "--insecure", "--encrypt")
    assert started.returncode != 0 and "--encrypt needs the cluster key" in started.stderr, (
        describe(started)
    )
    assert not (state_dir / "clusters" / f"{port}.json").exists()
