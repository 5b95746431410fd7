"""parl_rs soak run (issue 17): churn of actors and tasks for a long time, a worker killed every
minute, and the memory of the master and the workers sampled to see that it stays flat.

    python benches/soak.py [--minutes 30] [--workers 3] [--cpus-per-worker 2] [--kill-every 60]
                           [--out benches/results/soak.json]

It starts a master with `xparl start --cpu_num 0` (no local worker) on a free loopback port, in
a private XPARL_STATE_DIR and with a cluster key, and N workers with `xparl connect`. This
process is the client and churns without pause: it creates actors a few at a time, calls them
(small calls and ~1 MB numpy echoes), destroys them; some actors raise (which ends them, as in
PARL) and are recreated; it submits batches of `@remote_function` tasks (with retries). Every
`--kill-every` seconds a control thread SIGKILLs one worker node and starts a replacement with
`xparl connect`. The first worker is never killed (a reference that lives the whole run); the
others are killed oldest first. An `ActorDiedError` of an actor whose job belonged to a killed
worker is expected (the actor is recreated, and counted); every other error is counted and
listed as unexpected. Every 10 s it samples the resident memory (/proc VmRSS) of the master,
of each worker node, of each worker's jobs (their total), and of this client, with the counts.

At the end it stops everything (`xparl stop`, then SIGKILL by pid of whatever it started that
is left; the state directory stays, with the nodes' logs, whose WARN and ERROR lines are
counted in the summary), writes the time series and a summary to `--out`, and prints the
summary: RSS at minute 2 and at the end, the slope (least squares over the samples after 2
minutes, MB per 10 minutes) and the maximum, for the master, the client and each worker that
lived 5 minutes or more; the RSS of killed workers at the same age; totals; unexpected errors.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import faulthandler
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import numpy as np

import parl_rs

# The helpers sit next to this script (its directory is first on sys.path when it is run).
from bench_cluster import alive, children, rss_kib, xparl
from parl_rs.exceptions import ActorDiedError, RemoteError, TaskError

HERE = Path(__file__).resolve().parent
MB = 1024 * 1024
SAMPLE_S = 10.0
WARMUP_S = 120.0
LONG_LIVED_S = 300.0


# --- the actors and tasks the client churns ------------------------------------------------------


class Boom(Exception):
    """Raised on purpose by `SoakActor.boom` (it ends the actor, PARL semantics)."""


@parl_rs.remote_class(call_timeout=120)
class SoakActor:
    def __init__(self, size: int = 0):
        self.state = np.zeros(size)
        self.calls = 0

    def where(self):
        return os.getpid(), os.getppid()

    def add(self, a, b):
        self.calls += 1
        return a + b

    def echo(self, x):
        self.calls += 1
        return x

    def boom(self):
        raise Boom("on purpose")


@parl_rs.remote_function(timeout=60, retries=3)
def soak_task(i, n):
    data = np.arange(n, dtype=np.float64)
    return i, float(data.sum())


# --- processes -----------------------------------------------------------------------------------


def ours(pid: int) -> bool:
    try:
        return b"parl_rs" in Path(f"/proc/{pid}/cmdline").read_bytes() and alive(pid)
    except OSError:
        return False


def free_port() -> int:
    import socket

    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 100 < 65536:
            with socket.socket() as other:
                try:
                    other.bind(("127.0.0.1", port + 100))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair found")


class Cluster:
    """A master (`xparl start --cpu_num 0`) and N `xparl connect` workers, private state dir."""

    def __init__(self, workers: int, cpus: int) -> None:
        self.cpus = cpus
        self.state_dir = tempfile.mkdtemp(prefix="parl-rs-soak-")
        os.environ["XPARL_STATE_DIR"] = self.state_dir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.workers: dict[int, float] = {}  # live worker pid -> start time (monotonic)
        self.anchor: Optional[int] = None  # never killed
        self.all_workers: set[int] = set()
        self.job_pids: set[int] = set()
        self.killed: dict[int, dict] = {}  # pid -> {t, jobs}
        out = self._xparl(
            "start", "--host", "127.0.0.1", "--port", str(self.port), "--cpu_num", "0"
        )
        if out.returncode != 0:
            raise RuntimeError(f"xparl start failed:\n{out.stdout}{out.stderr}")
        record = json.loads(Path(self.state_dir, "clusters", f"{self.port}.json").read_text())
        self.master_pid: int = record["pids"]["master"]
        for _ in range(workers):
            self.add_worker()
        self.anchor = min(self.workers, key=self.workers.get)

    def _xparl(self, *args: str) -> subprocess.CompletedProcess:
        return xparl(self.state_dir, *args, timeout=90)

    def add_worker(self) -> int:
        out = self._xparl("connect", "--address", self.address, "--cpu_num", str(self.cpus))
        match = re.search(r"Worker \(pid (\d+)", out.stdout)
        if out.returncode != 0 or not match:
            raise RuntimeError(f"xparl connect failed:\n{out.stdout}{out.stderr}")
        pid = int(match.group(1))
        with self.lock:
            self.workers[pid] = time.monotonic()
            self.all_workers.add(pid)
        return pid

    def kill_one(self, t: float) -> Optional[int]:
        """SIGKILL the oldest worker node but the anchor; returns its pid."""
        with self.lock:
            candidates = [p for p in self.workers if p != self.anchor]
            if not candidates:
                return None
            pid = min(candidates, key=self.workers.get)
            jobs = children(pid)
            self.job_pids.update(jobs)
            if ours(pid):
                os.kill(pid, signal.SIGKILL)
            age = time.monotonic() - self.workers.pop(pid)
            self.killed[pid] = {"t": round(t, 1), "age_s": round(age, 1), "jobs": jobs}
        return pid

    def stop(self) -> list[int]:
        with contextlib.suppress(Exception):
            self._xparl("stop", "--port", str(self.port))
        with contextlib.suppress(Exception):
            self._xparl("stop")  # the `xparl connect` workers too
        pids = [self.master_pid, *self.all_workers, *self.job_pids]
        deadline = time.monotonic() + 10
        while any(ours(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        killed = []
        for pid in pids:
            if ours(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        return killed


# --- the soak ------------------------------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = dict(
            actors_created=0,
            actors_destroyed=0,
            actors_ended_on_purpose=0,
            actors_died_on_killed_worker=0,
            calls=0,
            echo_calls=0,
            tasks_done=0,
            tasks_failed_after_retries=0,
            task_batches=0,
            workers_killed=0,
            workers_started=0,
            cycles=0,
        )
        self.alive_actors = 0
        self.unexpected: list[dict] = []
        self.unexpected_by_type: dict[str, int] = {}
        self.task_failures: list[str] = []
        self.last_progress = time.monotonic()

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n
            self.last_progress = time.monotonic()

    def error(self, t: float, where: str, exc: BaseException) -> None:
        kind = type(exc).__name__
        with self.lock:
            self.unexpected_by_type[kind] = self.unexpected_by_type.get(kind, 0) + 1
            if len(self.unexpected) < 200:
                self.unexpected.append(
                    {
                        "t": round(t, 1),
                        "where": where,
                        "type": kind,
                        "message": str(exc)[:600],
                    }
                )
        print(f"[{t:7.1f}s] UNEXPECTED {kind} in {where}: {str(exc)[:300]}", flush=True)


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stats = Stats()
        self.samples: list[dict] = []
        self.t0 = time.monotonic()
        self.end_at = self.t0 + args.minutes * 60
        self.stop_event = threading.Event()
        self.cluster: Optional[Cluster] = None
        self.payload = np.random.default_rng(0).random(MB // 8)  # 1 MiB of float64
        self.rng = random.Random(17)

    def now(self) -> float:
        return time.monotonic() - self.t0

    # The client's churn, in the main thread.
    def churn(self) -> None:
        while time.monotonic() < self.end_at:
            try:
                self.actor_round()
                self.task_round()
            except Exception as exc:  # noqa: BLE001 - anything escaping a round is unexpected
                self.stats.error(self.now(), "churn", exc)
                time.sleep(1)
            self.stats.add("cycles")

    def _died_on_killed_worker(self, ppid: Optional[int], exc: BaseException) -> bool:
        if not isinstance(exc, ActorDiedError):
            return False
        if ppid is None:  # died while being created: was a worker killed just now?
            return any(self.now() - k["t"] < 30 for k in self.cluster.killed.values())
        deadline = time.monotonic() + 2  # the kill is recorded just after the signal
        while time.monotonic() < deadline:
            if ppid in self.cluster.killed:
                return True
            time.sleep(0.05)
        return False

    def actor_round(self) -> None:
        n = self.rng.randint(2, 3)
        actors: list[tuple[Any, Optional[int]]] = []
        for _ in range(n):
            try:
                actor = SoakActor(self.rng.choice([0, 1000]))
                _, ppid = actor.where()
                actors.append((actor, ppid))
                self.stats.add("actors_created")
            except Exception as exc:  # noqa: BLE001
                if self._died_on_killed_worker(None, exc):
                    self.stats.add("actors_died_on_killed_worker")
                else:
                    self.stats.error(self.now(), "create", exc)
        self.stats.alive_actors = len(actors)
        for actor, ppid in actors:
            try:
                for i in range(50):
                    assert actor.add(i, 1) == i + 1
                self.stats.add("calls", 50)
                for _ in range(2):
                    back = actor.echo(self.payload)
                    assert back.shape == self.payload.shape and back[7] == self.payload[7]
                self.stats.add("echo_calls", 2)
                if self.rng.random() < 0.2:
                    try:
                        actor.boom()
                    except RemoteError as exc:
                        kind = str(exc.remote_type or type(exc).__name__)
                        if isinstance(exc, ActorDiedError) or "Boom" not in kind:
                            raise
                        self.stats.add("actors_ended_on_purpose")
                    else:
                        raise AssertionError("boom() returned")
                    try:
                        actor.add(1, 1)
                    except RemoteError:
                        pass  # ended, as documented
                    else:
                        raise AssertionError("an actor that raised still answers")
                    continue
                actor._xparl_destroy()
                self.stats.add("actors_destroyed")
            except Exception as exc:  # noqa: BLE001
                if self._died_on_killed_worker(ppid, exc):
                    self.stats.add("actors_died_on_killed_worker")
                else:
                    self.stats.error(self.now(), "actor call", exc)
        actors.clear()
        self.stats.alive_actors = 0

    def task_round(self) -> None:
        futures = [soak_task.submit(i, self.rng.choice([10, 10, 10, 100_000])) for i in range(40)]
        for i, fut in enumerate(futures):
            try:
                got = fut.get()
                assert got[0] == i, got
                self.stats.add("tasks_done")
            except TaskError as exc:
                self.stats.add("tasks_failed_after_retries")
                if len(self.stats.task_failures) < 50:
                    self.stats.task_failures.append(f"{self.now():.1f}s: {str(exc)[:400]}")
            except Exception as exc:  # noqa: BLE001
                self.stats.error(self.now(), "task", exc)
        self.stats.add("task_batches")

    # Sampling and killing, in a control thread.
    def control(self) -> None:
        next_sample = self.t0
        next_kill = self.t0 + self.args.kill_every
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now >= next_kill and now < self.end_at:
                next_kill += self.args.kill_every
                try:
                    pid = self.cluster.kill_one(self.now())
                    if pid is not None:
                        self.stats.add("workers_killed")
                        new = self.cluster.add_worker()
                        self.stats.add("workers_started")
                        print(
                            f"[{self.now():7.1f}s] killed worker {pid}, started {new}",
                            flush=True,
                        )
                except Exception as exc:  # noqa: BLE001
                    self.stats.error(self.now(), "kill/replace worker", exc)
            if now >= next_sample:
                next_sample += SAMPLE_S
                self.sample()
            if now > self.end_at + 600:  # the churn is stuck: report it and end the run
                faulthandler.dump_traceback()
                self.stats.error(self.now(), "watchdog", RuntimeError("churn stuck 10 min"))
                self.finish(hung=True)
                os._exit(2)
            time.sleep(0.2)

    def sample(self) -> None:
        c = self.cluster
        with c.lock:
            workers = dict(c.workers)
            orphans = [j for k in c.killed.values() for j in k["jobs"] if alive(j) and ours(j)]
        rows = []
        for pid, started in sorted(workers.items(), key=lambda kv: kv[1]):
            jobs = children(pid)
            c.job_pids.update(jobs)
            rss = rss_kib(pid)
            jobs_rss = sum(rss_kib(j) or 0 for j in jobs)
            rows.append(
                dict(
                    pid=pid,
                    anchor=pid == c.anchor,
                    age_s=round(time.monotonic() - started, 1),
                    rss_mb=None if rss is None else round(rss / 1024, 2),
                    jobs=len(jobs),
                    jobs_rss_mb=round(jobs_rss / 1024, 2),
                )
            )
        master = rss_kib(c.master_pid)
        client = rss_kib(os.getpid())
        with self.stats.lock:
            counts = dict(self.stats.counts)
            unexpected = sum(self.stats.unexpected_by_type.values())
            stalled = time.monotonic() - self.stats.last_progress
        counts.update(actors_alive=self.stats.alive_actors, unexpected_errors=unexpected)
        sample = dict(
            t=round(self.now(), 1),
            master_rss_mb=None if master is None else round(master / 1024, 2),
            client_rss_mb=None if client is None else round(client / 1024, 2),
            workers=rows,
            orphan_jobs_of_killed_workers=len(orphans),
            seconds_since_progress=round(stalled, 1),
            load1=os.getloadavg()[0],
            counts=counts,
        )
        self.samples.append(sample)
        w = " ".join(f"{r['rss_mb']}+{r['jobs_rss_mb']}({r['jobs']})" for r in rows)
        print(
            f"[{sample['t']:7.1f}s] master {sample['master_rss_mb']} MB, client "
            f"{sample['client_rss_mb']} MB, workers {w}; calls {counts['calls']} tasks "
            f"{counts['tasks_done']} killed {counts['workers_killed']} died "
            f"{counts['actors_died_on_killed_worker']} unexpected {unexpected} load "
            f"{sample['load1']:.1f}",
            flush=True,
        )

    def run(self) -> int:
        self.cluster = Cluster(self.args.workers, self.args.cpus_per_worker)
        self.stats.counts["workers_started"] = self.args.workers
        print(
            f"cluster {self.cluster.address} master {self.cluster.master_pid} workers "
            f"{sorted(self.cluster.workers)} (anchor {self.cluster.anchor}); state "
            f"{self.cluster.state_dir}",
            flush=True,
        )
        parl_rs.connect(self.cluster.address)
        self.t0 = time.monotonic()
        self.end_at = self.t0 + self.args.minutes * 60
        control = threading.Thread(target=self.control, daemon=True)
        control.start()
        try:
            self.churn()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        finally:
            self.sample()
            self.stop_event.set()
            control.join(timeout=30)
            self.finish()
        return 1 if self.stats.unexpected else 0

    def finish(self, hung: bool = False) -> None:
        with contextlib.suppress(Exception):
            parl_rs.disconnect()
        leftovers = self.cluster.stop() if self.cluster else []
        summary = summarize(self.samples, self.cluster)
        with self.stats.lock:
            summary["totals"] = dict(self.stats.counts)
            summary["unexpected_errors"] = sum(self.stats.unexpected_by_type.values())
            summary["unexpected_by_type"] = dict(self.stats.unexpected_by_type)
            summary["unexpected"] = list(self.stats.unexpected)
            summary["task_failures"] = list(self.stats.task_failures)
        summary["killed_by_pid_at_stop"] = leftovers
        summary["node_log_warnings"] = log_warnings(self.cluster.state_dir) if self.cluster else {}
        summary["state_dir"] = self.cluster.state_dir if self.cluster else None
        summary["hung"] = hung
        result = dict(
            what="parl_rs soak (benches/soak.py)",
            date=datetime.datetime.now().isoformat(timespec="seconds"),
            config=vars(self.args) | {"sample_s": SAMPLE_S, "warmup_s": WARMUP_S},
            machine=dict(cpus=os.cpu_count(), python=sys.version.split()[0]),
            parl_rs=parl_rs.__version__,
            summary=summary,
            killed_workers={str(k): v for k, v in self.cluster.killed.items()},
            samples=thin(self.samples, self.args.keep_every),
        )
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print_summary(summary)
        print(f"written to {out}", flush=True)


def log_warnings(state_dir: str) -> dict[str, int]:
    """The WARN and ERROR lines of every node's log, counted by message (ids and numbers
    blanked)."""
    found: dict[str, int] = {}
    for path in Path(state_dir).rglob("*.log"):
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                if " WARN " not in line and " ERROR " not in line:
                    continue
                text = line.split(" ", 1)[-1]
                text = re.sub(r"\b[0-9a-f]{6,}\b|\d+", "N", text)
                text = re.sub(r"\b[wjc]-N\b|\b[wjc]-\w+\b", "ID", text)
                found[text] = found.get(text, 0) + 1
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


def thin(samples: list[dict], keep_every: int) -> list[dict]:
    if keep_every <= 1:
        return samples
    return [s for i, s in enumerate(samples) if i % keep_every == 0 or i == len(samples) - 1]


def fit(points: list[tuple[float, float]]) -> Optional[dict]:
    """RSS at minute 2, at the end, max, and the least-squares slope after warm-up."""
    points = [(t, v) for t, v in points if v is not None]
    if not points:
        return None
    after = [(t, v) for t, v in points if t >= WARMUP_S]
    at2 = after[0][1] if after else None
    slope = None
    if len(after) >= 3:
        ts, vs = np.array([p[0] for p in after]), np.array([p[1] for p in after])
        slope = float(np.polyfit(ts, vs, 1)[0]) * 600  # MB per 10 min
    return dict(
        first_mb=points[0][1],
        at_2min_mb=at2,
        end_mb=points[-1][1],
        max_mb=max(v for _, v in points),
        slope_mb_per_10min=None if slope is None else round(slope, 3),
        samples=len(points),
    )


def summarize(samples: list[dict], cluster: Optional[Cluster]) -> dict:
    summary: dict[str, Any] = {
        "master": fit([(s["t"], s["master_rss_mb"]) for s in samples]),
        "client": fit([(s["t"], s["client_rss_mb"]) for s in samples]),
    }
    per_worker: dict[int, list[dict]] = {}
    for s in samples:
        for row in s["workers"]:
            per_worker.setdefault(row["pid"], []).append(dict(row, t=s["t"]))
    long_lived, at_age = {}, []
    for pid, rows in per_worker.items():
        life = rows[-1]["age_s"]
        if life >= LONG_LIVED_S:
            # Age-based warm-up: slope over the samples after the worker's first 2 minutes.
            node = fit([(r["age_s"], r["rss_mb"]) for r in rows])
            jobs = fit([(r["age_s"], r["jobs_rss_mb"]) for r in rows])
            long_lived[str(pid)] = dict(
                anchor=rows[0]["anchor"], lived_s=life, node=node, jobs_total=jobs
            )
        near = [r for r in rows if 40 <= r["age_s"] <= 60]
        if near:
            r = near[-1]
            at_age.append(
                dict(
                    pid=pid,
                    started_at_s=round(r["t"] - r["age_s"], 1),
                    age_s=r["age_s"],
                    rss_mb=r["rss_mb"],
                    jobs_rss_mb=r["jobs_rss_mb"],
                )
            )
    summary["workers_long_lived"] = long_lived
    summary["workers_rss_at_age_40_60s"] = sorted(at_age, key=lambda r: r["started_at_s"])
    summary["max_orphan_jobs_of_killed_workers"] = max(
        (s["orphan_jobs_of_killed_workers"] for s in samples), default=0
    )
    summary["load1_mean"] = (
        round(float(np.mean([s["load1"] for s in samples])), 2) if samples else None
    )
    return summary


def print_summary(summary: dict) -> None:
    def line(name: str, f: Optional[dict]) -> None:
        if f:
            print(
                f"  {name:<22} first {f['first_mb']} MB, at 2 min {f['at_2min_mb']} MB, end "
                f"{f['end_mb']} MB, max {f['max_mb']} MB, slope {f['slope_mb_per_10min']} MB/10 min"
            )

    print("summary:")
    line("master", summary["master"])
    line("client", summary["client"])
    for pid, w in summary["workers_long_lived"].items():
        tag = " (anchor)" if w["anchor"] else ""
        line(f"worker {pid}{tag} node", w["node"])
        line(f"worker {pid} jobs", w["jobs_total"])
    ages = summary["workers_rss_at_age_40_60s"]
    if ages:
        print(
            "  workers at age 40-60 s, in start order: "
            + ", ".join(f"{a['rss_mb']}" for a in ages)
            + " MB"
        )
    print(f"  totals: {summary.get('totals')}")
    for text, n in summary.get("node_log_warnings", {}).items():
        print(f"  node logs: {n} x {text[:150]}")
    print(
        f"  unexpected errors: {summary.get('unexpected_errors')} "
        f"{summary.get('unexpected_by_type')}; orphan jobs (max): "
        f"{summary['max_orphan_jobs_of_killed_workers']}"
    )
    for e in summary.get("unexpected", [])[:20]:
        print(f"    {e['t']}s {e['where']}: {e['type']}: {e['message'][:200]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--cpus-per-worker", type=int, default=2)
    parser.add_argument("--kill-every", type=float, default=60, help="seconds")
    parser.add_argument("--out", default=str(HERE / "results" / "soak.json"))
    parser.add_argument(
        "--keep-every",
        type=int,
        default=1,
        help="keep 1 sample in K in the JSON (1: all)",
    )
    args = parser.parse_args()
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` dumps the stacks of a hang
    soak = Soak(args)
    try:
        return soak.run()
    except BaseException:
        traceback.print_exc()
        if soak.cluster is not None:
            soak.cluster.stop()
        raise


if __name__ == "__main__":
    sys.exit(main())
