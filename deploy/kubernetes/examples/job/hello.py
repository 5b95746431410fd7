"""Runs 4 actors (the CPU slots of the base: 2 workers of 2 CPUs) and prints where each lives.

The key comes from XPARL_CLUSTER_KEY (the Secret parl-cluster-key); the master from the
Service parl-master in this namespace.
"""

import socket

import parl_rs


@parl_rs.remote_class
class Counter:
    def __init__(self, start):
        self.value = start

    def add(self, n):
        self.value += n
        return self.value

    def where(self):
        return socket.gethostname()


parl_rs.connect("parl-master:8010")
counters = [Counter(start=10 * i) for i in range(4)]
for i, counter in enumerate(counters):
    print(f"actor {i}: add(5) -> {counter.add(5)} on worker pod {counter.where()}")
