"""README command (1): the quickstart runs to its end on an embedded cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import describe

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"


@pytest.mark.timeout(120)
def test_the_quickstart_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(QUICKSTART)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, describe(result)
    assert "remote exception caught: ValueError" in result.stdout, describe(result)
    assert "two 1 s calls on two actors took" in result.stdout, describe(result)


@pytest.mark.timeout(600)
@pytest.mark.skipif(shutil.which("cargo") is None, reason="the Rust example needs cargo")
def test_the_native_client_example_drives_four_python_simulators(tmp_path: Path) -> None:
    # The jobs run this interpreter (which has parl_rs), through the example's LocalCluster.
    result = subprocess.run(
        ["cargo", "run", "-q", "-p", "parl-client", "--example", "native_client"],
        cwd=QUICKSTART.parent.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=580,
        env=dict(os.environ, PARL_RS_PYTHON=sys.executable),
    )
    assert result.returncode == 0, describe(result)
    lines = [line for line in result.stdout.splitlines() if line.startswith("simulator ")]
    assert len(lines) == 4, describe(result)
    assert all(" 200 steps, return " in line for line in lines), describe(result)
