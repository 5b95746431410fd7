"""Where a job finds the user's code, and how its tracebacks name the user's files.

A job runs in its own directory, which holds the files shipped by `connect` (the `*.py` next
to the script, and `distributed_files`). For a module found elsewhere on the client, the job
looks where the client looked:

* an absolute `sys.path` entry of the client is appended to the job's `sys.path` (it works
  where that path exists on the worker's host: the same machine or a shared file system);
* a relative entry is resolved in the job's directory, where `distributed_files` put the files
  at the same relative paths. A path above the current directory ("../lib") is stored under
  `__parent__/` ("__parent__/lib"), so `distributed_files=["../lib/*"]` with "../lib" on
  `sys.path` works, and nothing is written outside the job's directory.

The entries of the interpreter itself (its standard library and site-packages) are not sent:
the job has its own.

A traceback raised in a job names the files as the client knows them: a shipped module's
frames show its path on the client, and code shipped by value (which carries the client's file
name) shows its source line, read from the shipped copy when the worker has no such file.
"""

from __future__ import annotations

import functools
import linecache
import os
import re
import site
import sys
import sysconfig
from dataclasses import dataclass, field
from types import TracebackType
from typing import Iterator, Optional

PARENT_DIR = "__parent__"


def job_relative(path: str) -> str:
    """Where `path` (relative to the current directory, or absolute) lands in a job's
    directory: its path relative to the current directory, each leading `..` spelled
    `__parent__`."""
    parts = os.path.relpath(os.path.abspath(path)).split(os.sep)
    ups = 0
    while ups < len(parts) and parts[ups] == os.pardir:
        ups += 1
    return os.path.join(*([PARENT_DIR] * ups), *parts[ups:]) if parts[ups:] else PARENT_DIR


def search_path_for_jobs() -> list[str]:
    """The client's `sys.path` as a job uses it: absolute entries as they are, relative ones
    as `job_relative` paths; without the interpreter's own directories."""
    own = _interpreter_directories()
    entries: list[str] = []
    for entry in sys.path:
        if not entry or not isinstance(entry, str):
            continue  # "" is the current directory: a job's is its own directory
        if not os.path.isabs(entry):
            entries.append(job_relative(entry))
        elif not any(_is_within(entry, directory) for directory in own):
            entries.append(entry)
    return list(dict.fromkeys(entries))


@functools.cache
def _interpreter_directories() -> list[str]:
    paths = sysconfig.get_paths()
    directories = {paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    # The interpreter's installation (its zipped standard library...), unless it is "/".
    directories.update(p for p in (sys.base_prefix, sys.base_exec_prefix) if p != os.sep)
    directories.update(getattr(site, "getsitepackages", list)())
    user_site = getattr(site, "getusersitepackages", lambda: None)()
    if user_site:
        directories.add(user_site)
    return [os.path.abspath(directory) for directory in directories if directory]


def _is_within(path: str, directory: str) -> bool:
    path = os.path.abspath(path)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class CodeContext:
    """What the client tells a job about its code, with the actor's `init` request.

    `sys_path`: from `search_path_for_jobs`. `sources`: shipped Python file, as its path in
    the job's directory -> its absolute path on the client.
    """

    sys_path: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"sys_path": self.sys_path, "sources": self.sources}

    @classmethod
    def from_dict(cls, data: dict) -> CodeContext:
        return cls(list(data.get("sys_path", [])), dict(data.get("sources", {})))


class JobCode:
    """The job's side: extends `sys.path` and maps file names for tracebacks."""

    def __init__(self, workdir: str, context: CodeContext) -> None:
        self._workdir = workdir
        # Path of a shipped file in this job -> its path on the client, and the reverse.
        self._to_client = {
            os.path.join(workdir, relpath): client_path
            for relpath, client_path in context.sources.items()
        }
        self._to_job = {client: job for job, client in self._to_client.items()}
        self._sys_path = [
            entry if os.path.isabs(entry) else os.path.join(workdir, entry)
            for entry in context.sys_path
        ]

    def install(self) -> None:
        """Append the client's search path to this process's, after the job's own."""
        for entry in self._sys_path:
            if entry not in sys.path:
                sys.path.append(entry)

    def client_names(self, traceback_text: str) -> str:
        """A formatted traceback with the shipped files named as on the client."""
        return _FILE_LINE.sub(self._client_name, traceback_text)

    def load_sources(self, exc: BaseException) -> None:
        """Make the source lines of code shipped by value (named by its client path) readable
        here, from the shipped copy; call before formatting `exc`'s traceback."""
        for filename in set(_filenames(exc)):
            shipped = self._to_job.get(filename)
            if shipped is not None and filename not in linecache.cache:
                _cache_lines(filename, shipped)

    def _client_name(self, match: re.Match) -> str:
        path = match.group(1)
        return f'File "{self._to_client.get(path, path)}"'


_FILE_LINE = re.compile(r'File "([^"\n]+)"')


def _filenames(exc: Optional[BaseException]) -> Iterator[str]:
    seen: set[int] = set()
    chain = [exc]
    while chain:
        error = chain.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        tb: Optional[TracebackType] = error.__traceback__
        while tb is not None:
            yield tb.tb_frame.f_code.co_filename
            tb = tb.tb_next
        chain += [error.__cause__, error.__context__]


def _cache_lines(name: str, path: str) -> None:
    try:
        with open(path, encoding="utf-8", errors="replace") as source:
            lines = source.readlines()
    except OSError:
        return
    # mtime None: linecache.checkcache never drops (nor re-reads) the entry.
    linecache.cache[name] = (sum(map(len, lines)), None, lines, name)
