"""`connect` without a cluster: argument checks, shipped files, settings from the environment."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import parl_rs as parl
from parl_rs.client import _python_command, _resolve_create_timeout, collect_shipped_files


@pytest.fixture(autouse=True)
def _outside_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XPARL", raising=False)
    parl.disconnect()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_get_global_client_without_connect() -> None:
    with pytest.raises(AssertionError, match="Cannot get the client"):
        parl.get_global_client()


def test_connect_checks_its_arguments() -> None:
    with pytest.raises(AssertionError):
        parl.connect("localhost")
    with pytest.raises(AssertionError):
        parl.connect("127.0.0.1:8010:1")
    with pytest.raises(AssertionError):
        parl.connect("127.0.0.1:8010", distributed_files="a.txt")  # type: ignore[arg-type]


def test_connect_inside_a_job_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XPARL", "True")
    parl.connect("127.0.0.1:1")  # would fail to connect outside a job
    with pytest.raises(AssertionError):
        parl.get_global_client()


def test_python_files_next_to_the_script_are_shipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "main.py", "main")
    write(tmp_path / "helper.py", "helper")
    write(tmp_path / "notes.txt", "not python")
    write(tmp_path / "pkg" / "nested.py", "not directly next to the script")
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "main.py")])
    monkeypatch.chdir(tmp_path / "pkg")  # the script's directory counts, not the cwd
    assert dict(collect_shipped_files([])) == {"helper.py": b"helper", "main.py": b"main"}


def test_without_a_script_the_current_directory_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "cell_helper.py", "helper")
    monkeypatch.setattr(sys, "argv", [""])  # as in a notebook or the REPL
    monkeypatch.chdir(tmp_path)
    assert dict(collect_shipped_files([])) == {"cell_helper.py": b"helper"}


def test_distributed_files_expand_patterns_and_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "data" / "a.txt", "a")
    write(tmp_path / "data" / "deep" / "b.bin", "b")
    write(tmp_path / "conf.yaml", "c")
    write(tmp_path / "other.yaml", "o")
    monkeypatch.setattr(sys, "argv", ["-c"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "empty").mkdir()
    files = dict(collect_shipped_files(["data", "conf.*"]))
    assert files == {
        "data/a.txt": b"a",
        "data/deep/b.bin": b"b",
        "data/empty/": b"",
        "conf.yaml": b"c",
    }


def test_absolute_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="absolute path"):
        collect_shipped_files([str(tmp_path / "x.txt")])


def test_paths_above_the_current_directory_land_under_parent_in_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PARL accepts "../" in patterns; the job keeps such files inside its own directory.
    write(tmp_path / "outside.txt", "x")
    write(tmp_path / "lib" / "mod.py", "y")
    (tmp_path / "inner").mkdir()
    monkeypatch.setattr(sys, "argv", ["-c"])
    monkeypatch.chdir(tmp_path / "inner")
    files = dict(collect_shipped_files(["../outside.txt", "../lib/*", "../inner/../lib/*"]))
    assert files == {"__parent__/outside.txt": b"x", "__parent__/lib/mod.py": b"y"}


def test_a_pattern_matching_nothing_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="no local file is matched with 'missing\\*.txt'"):
        collect_shipped_files(["missing*.txt"])


def test_create_timeout_comes_from_the_argument_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PARL_RS_CREATE_TIMEOUT", raising=False)
    assert _resolve_create_timeout(None) == 300.0
    monkeypatch.setenv("PARL_RS_CREATE_TIMEOUT", "12.5")
    assert _resolve_create_timeout(None) == 12.5
    assert _resolve_create_timeout(3) == 3.0


def test_python_command_honours_xparl_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XPARL_PYTHON", raising=False)
    assert _python_command() == [sys.executable]
    monkeypatch.setenv("XPARL_PYTHON", "/opt/ld.so --library-path '/opt/my libs' /opt/python3")
    assert _python_command() == ["/opt/ld.so", "--library-path", "/opt/my libs", "/opt/python3"]
