"""A `kill -9` of `ulip2 index` leaves nothing behind: its loading pool (workers,
forkserver, resource tracker) and its Blender workers end within 10 s. Real processes;
the bundle is the session's small random-weight one."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshes import write_meshes

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"), pytest.mark.crash]


def session_members(sid: int) -> list[str]:
    """The command lines of the processes in session `sid`."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:  # after pid and (comm): state, ppid, pgrp, session
                members.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, IndexError, ValueError):
            continue  # it ended while being read
    return members


def wait_for(predicate, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def _assets(folder: Path, kind: str) -> None:
    if kind == "loading pool":
        write_meshes(folder, 60, subdivisions=5)
        return
    pytest.importorskip("bpy")
    from blender_files import write_blend_files

    blend, _ = write_blend_files(folder, fbx=False)
    for i in range(8):
        shutil.copy(blend, folder / f"scene-{i}.blend")


@pytest.mark.parametrize("kind", ["loading pool", pytest.param("Blender workers", marks=pytest.mark.blender)])
def test_no_process_of_a_killed_index_outlives_it(tmp_path, tiny_bundle, kind):
    folder = tmp_path / "assets"
    _assets(folder, kind)
    # Up when the forkserver and two workers (forked from it, so the same command line) run.
    sign, needed = ("multiprocessing.forkserver", 3) if kind == "loading pool" else ("blender_addon.headless.worker", 1)
    for attempt in range(2):
        proc = subprocess.Popen([sys.executable, "-m", "cli", "index", str(folder),
                                 "--db", str(tmp_path / f"lib-{attempt}.sqlite"), "--bundle", str(tiny_bundle.path),
                                 "--workers", "2", "--quiet"],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        members = wait_for(lambda: sum(sign in m for m in session_members(proc.pid)) >= needed, 90)
        assert members, f"the run never had its workers up: {session_members(proc.pid)}"
        os.kill(proc.pid, signal.SIGKILL)  # the main process alone, as a crash or the OOM killer would
        proc.wait()
        assert wait_for(lambda: not session_members(proc.pid), 10), \
            f"still running 10 s after the kill: {session_members(proc.pid)}"
