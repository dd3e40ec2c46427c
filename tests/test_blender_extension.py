"""`ulip2 blender build-extension` builds a zip with Blender's own builder; it installs and
enables in a clean bpy (a fresh BLENDER_USER_RESOURCES), where the sampler comes from the
bundled wheel, not from this environment."""

import json
import os
import subprocess
import sys
import zipfile

import pytest

pytest.importorskip("bpy")

from core.cli import main  # noqa: E402

CHECK = r"""
import json, sys, bpy
result = bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default", enable_on_install=True)
import core.sampling, core.triplets
print(json.dumps({
    "result": sorted(result),
    "enabled": "bl_ext.user_default.ulip2" in bpy.context.preferences.addons,
    "operator": "generate_triplets" in dir(bpy.ops.ulip2),
    "sampler": core.sampling.__file__,
    "torch": "torch" in sys.modules,
}))
"""


def test_extension_zip_installs_and_enables_in_clean_bpy(tmp_path, capsys):
    assert main(["blender", "build-extension", "--out", str(tmp_path / "dist")]) == 0
    zip_path = json.loads(capsys.readouterr().out)["extension"]
    names = zipfile.ZipFile(zip_path).namelist()
    assert "blender_manifest.toml" in names and "worker.py" not in names
    assert any(n.startswith("wheels/ulip2_blender_core-") for n in names)

    user = tmp_path / "blender-user"
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(user)}
    # Run outside the checkout: the wheel's site-packages then comes before this
    # environment's editable install, so the import below proves the bundled wheel works.
    done = subprocess.run([sys.executable, "-c", CHECK, zip_path], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"result": ["FINISHED"], "enabled": True, "operator": True,
                      "sampler": report["sampler"], "torch": False}
    assert report["sampler"].startswith(str(user / "extensions")), report["sampler"]
