"""A tiny environment simulator, driven as an actor: by `examples/native_client.rs` from Rust,
or from Python with `@parl_rs.remote_class`.

A point on a line must be kept near 0: each step pushes it by the action and by noise; the
reward is minus its distance from 0; an episode ends after 200 steps or when it drifts
beyond 10.
"""

import random


class Simulator:
    def __init__(self, seed: int, noise: float = 0.1) -> None:
        self.random = random.Random(seed)
        self.noise = noise
        self.episodes = 0
        self.position = 0.0
        self.steps = 0

    def reset(self) -> list:
        self.position = self.random.uniform(-1.0, 1.0)
        self.steps = 0
        self.episodes += 1
        return [self.position, 0.0]

    def step(self, action: float) -> dict:
        push = max(-1.0, min(1.0, action))
        self.position += push + self.random.gauss(0.0, self.noise)
        self.steps += 1
        done = self.steps >= 200 or abs(self.position) > 10.0
        return {"state": [self.position, push], "reward": -abs(self.position), "done": done}
