"""README command (1): the quickstart runs to its end on an embedded cluster."""

from __future__ import annotations

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
