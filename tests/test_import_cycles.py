"""No import circle among the project's modules, lazy imports included (tools/import_cycles.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "import_cycles.py"


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=60)


def test_the_project_has_no_import_circle():
    done = _run(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no import circle" in done.stdout


def test_a_planted_circle_is_found_even_behind_a_function_level_import(tmp_path):
    package = tmp_path / "core"
    (package / "spaces").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "spaces" / "__init__.py").write_text("from core.spaces.base import Space\n")
    (package / "spaces" / "base.py").write_text("class Space:\n    pass\n")
    (package / "runtime.py").write_text("from .spaces.base import Space\n\n\ndef load():\n"
                                        "    from core import tagging\n    return tagging\n")
    (package / "tagging.py").write_text("def tag():\n    from . import runtime\n    return runtime.load\n")
    clean = _run(tmp_path, "--packages", "core")
    assert clean.returncode == 1, "runtime and tagging import each other"
    assert "import circle of 2: core.runtime -> core.tagging; core.tagging -> core.runtime" in clean.stdout
    assert "core.spaces" not in clean.stdout, "a package importing its own base module is no circle"
    (package / "tagging.py").write_text("def tag():\n    return None\n")
    assert _run(tmp_path, "--packages", "core").returncode == 0
