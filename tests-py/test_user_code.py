"""`parl_rs._user_code` without a cluster: paths in a job's directory, the search path sent to
jobs, and tracebacks that name the client's files."""

from __future__ import annotations

import linecache
import sys
import sysconfig
import traceback
from pathlib import Path

import pytest

from parl_rs._user_code import CodeContext, JobCode, job_relative, search_path_for_jobs


def test_job_relative_keeps_paths_inside_the_job_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    assert job_relative("data/x.txt") == "data/x.txt"
    assert job_relative("./data/../data/x.txt") == "data/x.txt"
    assert job_relative("../lib") == "__parent__/lib"
    assert job_relative("../../c/d.py") == "__parent__/__parent__/c/d.py"
    assert job_relative(str(tmp_path / "a" / "lib")) == "__parent__/lib"
    assert job_relative("..") == "__parent__"
    assert job_relative(".") == "."


def test_the_search_path_sent_to_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stdlib = sysconfig.get_paths()["stdlib"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", stdlib, "/abs/dir", "../rel", "/abs/dir"])
    # The interpreter's own directories stay out: the job has its own.
    assert search_path_for_jobs() == ["/abs/dir", "__parent__/rel"]


def test_a_job_appends_the_clients_search_path_after_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    JobCode(str(tmp_path), CodeContext(["/abs/dir", "__parent__/rel"])).install()
    assert sys.path == [str(tmp_path), "/abs/dir", str(tmp_path / "__parent__" / "rel")]


def test_tracebacks_name_the_clients_files_and_show_shipped_source(tmp_path: Path) -> None:
    workdir = tmp_path / "job"
    (workdir / "pkg").mkdir(parents=True)
    (workdir / "pkg" / "mod.py").write_text("def f():\n    raise ValueError('in mod')\n")
    client_path = "/home/user/project/pkg/mod.py"  # not on this machine
    code = JobCode(str(workdir), CodeContext(sources={"pkg/mod.py": client_path}))
    # Code shipped by value carries the client's file name, which this machine lacks.
    namespace: dict = {}
    exec(compile("def g():\n    raise KeyError('by value')\n", client_path, "exec"), namespace)
    try:
        namespace["g"]()
    except KeyError as exc:
        error = exc
    linecache.cache.pop(client_path, None)
    code.load_sources(error)
    text = "".join(traceback.format_exception(error))
    assert f"File \"{client_path}\", line 2, in g\n    raise ValueError('in mod')" in text
    # A module imported from the job's directory is named by its path on the client.
    job_text = f'  File "{workdir / "pkg" / "mod.py"}", line 2, in f\n'
    assert code.client_names(job_text) == f'  File "{client_path}", line 2, in f\n'
