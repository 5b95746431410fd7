"""Shipping code and files to jobs: `distributed_files` (globs, directories, empty folders,
packages in subfolders), sent to each worker once and cached there."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import parl_rs as parl
from conftest import Cluster


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _reader_class():
    @parl.remote_class
    class Reader:
        def size(self, path):
            return os.path.getsize(path)

        def is_dir(self, path):
            return os.path.isdir(path)

        def exists(self, path):
            return os.path.exists(path)

        def import_and_call(self, module, function):
            import importlib

            return getattr(importlib.import_module(module), function)()

        def cwd(self):
            return os.getcwd()

    return Reader


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user project in the current directory: data, a config, a package, an empty folder."""
    _write(tmp_path / "data" / "blob.bin", os.urandom(2 << 20))
    _write(tmp_path / "data" / "deep" / "config.json", b"{}")
    (tmp_path / "data" / "empty").mkdir()
    _write(tmp_path / "pkg" / "__init__.py", b"")
    _write(tmp_path / "pkg" / "tools.py", b"def answer():\n    return 42\n")
    _write(tmp_path / "notes.txt", b"not shipped")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["-c"])  # ship no *.py beside the test runner
    return tmp_path


def test_distributed_files_reach_every_actor_and_travel_once(
    cluster: Cluster, project: Path
) -> None:
    parl.connect(cluster.address, distributed_files=["data", "pkg/*.py"])
    try:
        reader = _reader_class()
        actor = reader()
        assert actor.size("data/blob.bin") == 2 << 20
        for _ in range(2):  # one after the other: later jobs find the worker's cache
            other = reader()
            assert other.size("data/blob.bin") == 2 << 20
            del other
        assert parl.get_global_client().files_shipped == 1
        assert actor.exists("data/deep/config.json")
        assert actor.is_dir("data/empty"), "empty folders are kept"
        assert not actor.exists("notes.txt"), "only what the patterns match is shipped"
        assert actor.import_and_call("pkg.tools", "answer") == 42
        assert os.path.realpath(actor.cwd()) != os.path.realpath(str(project))
    finally:
        parl.disconnect()


def test_a_file_deleted_locally_after_connect_is_still_shipped(
    cluster: Cluster, project: Path
) -> None:
    parl.connect(cluster.address, distributed_files=["data/deep/config.json"])
    try:
        os.remove(project / "data" / "deep" / "config.json")  # read once, at connect
        assert _reader_class()().exists("data/deep/config.json")
    finally:
        parl.disconnect()
