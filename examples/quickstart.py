"""parl_rs in one page: run with `python examples/quickstart.py`.

`parl.connect()` without an address starts a small cluster inside this process. To use a
cluster started with `xparl start --port 8010`, write `parl.connect("127.0.0.1:8010")`.
"""

from __future__ import annotations

import threading
import time

import parl_rs as parl


@parl.remote_class
class Simulator:
    """A stand-in for an environment simulator: state lives in the actor's own process."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.steps = 0

    def step(self, n: int = 1) -> int:
        self.steps += n
        return self.steps

    def slow_step(self, seconds: float) -> str:
        time.sleep(seconds)  # stands for real work, e.g. running an environment
        return f"{self.name} done"

    def reset(self, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.steps = 0


def main() -> None:
    parl.connect()

    sim = Simulator("sim-0")  # created in a job process of the cluster
    print("step() ->", sim.step(), "| step(n=5) ->", sim.step(n=5))

    print("attribute read: sim.name =", sim.name)
    sim.name = "renamed"  # attribute writes go to the remote object too
    print("attribute write: sim.name =", sim.name)

    try:
        sim.reset(-1)
    except ValueError as exc:  # the remote ValueError is catchable as ValueError
        print("remote exception caught:", str(exc).splitlines()[1])
    # As in PARL, an exception ends the actor (its CPU slot is free at once): make a new one.
    # (`@parl.remote_class(keep_alive_on_error=True)` would keep it, with its state.)
    try:
        sim.step()
    except parl.ActorDiedError:
        sim = Simulator("sim-0b")
    print("a new actor after the error: step() ->", sim.step())

    # Each actor holds one CPU slot of the cluster until it is garbage collected.
    del sim

    # One actor runs one call at a time; parallelism comes from several actors.
    sims = [Simulator(f"sim-{i}") for i in (1, 2)]
    results: list[str] = []
    start = time.monotonic()
    threads = [threading.Thread(target=lambda s=s: results.append(s.slow_step(1.0))) for s in sims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    print(f"two 1 s calls on two actors took {elapsed:.2f} s: {sorted(results)}")


if __name__ == "__main__":
    main()
