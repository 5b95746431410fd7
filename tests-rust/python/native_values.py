"""Python classes and functions that tests-rust/native_client.rs drives from Rust."""

import os
import time


class Values:
    def __init__(self, start=0, *, label="values"):
        self.counter = start
        self.label = label

    def echo(self, value):
        return value

    def add(self, a, b=0):
        self.counter += a + b
        return self.counter

    def fail(self, message):
        raise ValueError(message)

    def opaque(self):
        return {"ok": [1, 2], "bad": object()}

    def exit(self):
        os._exit(3)

    def sleep(self, seconds):
        time.sleep(seconds)
        return seconds


class Broken:
    def __init__(self):
        raise RuntimeError("cannot start")


def square(x):
    return x * x


def fail(message):
    raise ValueError(message)


def slow(seconds):
    time.sleep(seconds)
    return seconds
