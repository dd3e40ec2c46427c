"""Debian packages as data: `apt-get download` (no install, no root needed beyond apt's
lists) and `dpkg -x` into a folder of the recipe's own.

A killed download never leaves a truncated .deb taken as done (it lands in a staging
folder first), and each unpacked .deb is marked done only once `dpkg -x` has finished.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from core.errors import Ulip2Error


def fetch_packages(packages: tuple[str, ...], debs: Path, into: Path, hint: str) -> Path:
    """Download the packages into `debs` (unless present) and unpack them into `into`;
    `hint` says what to do when apt-get or dpkg fails. Returns `into`."""
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        partial = debs / ".download"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        print(f"fetch: apt-get download {' '.join(missing)}", file=sys.stderr)
        run_tool(["apt-get", "download", *missing], partial,
                 "if it cannot locate the packages, run `apt-get update` (as root) first, or " + hint, hint)
        for deb in partial.glob("*.deb"):
            os.replace(deb, debs / deb.name)
        partial.rmdir()
    into.mkdir(parents=True, exist_ok=True)
    for deb in sorted(d for p in packages for d in debs.glob(f"{p}_*.deb")):
        done = into / f".{deb.name}.done"
        if not done.exists():
            print(f"fetch: dpkg -x {deb.name}", file=sys.stderr)
            run_tool(["dpkg", "-x", str(deb), str(into)], into, hint, hint)
            done.touch()
    return into


def run_tool(command: list[str], cwd: Path, hint: str, missing_hint: str) -> None:
    """Run a packaging tool; `hint` says what to do when it fails, `missing_hint` when it is absent."""
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise Ulip2Error(f"{command[0]} not found: on non-Debian systems {missing_hint}") from None
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
        raise Ulip2Error(f"`{' '.join(command)}` failed (exit {result.returncode}): "
                         f"{' / '.join(detail)}; {hint}")
