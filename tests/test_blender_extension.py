"""`ulip2 blender build-extension` builds a zip with Blender's own builder; it installs and
enables in a clean bpy (a fresh BLENDER_USER_RESOURCES), where core comes from the
bundled wheel, not from this environment. The wheel carries only modules that import
without torch; the runtime wheels (onnxruntime, tokenizers) come from the registry or a
folder, per platform; the default bundle with its text tower travels in bundle/."""

import json
import os
import subprocess
import sys
import tomllib
import zipfile

import pytest

pytest.importorskip("bpy")

from blender_addon.build import (RUNTIME_PACKAGES, build_extension, check_extension_modules,  # noqa: E402
                                    extension_core_files)
from cli.main import main  # noqa: E402
from core.errors import Ulip2Error  # noqa: E402

CHECK = r"""
import json, sys, bpy
result = bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default", enable_on_install=True)
import core.sampling, core.triplets, core.library.search, core.spaces.vocabularies, core.runtime, core.spaces
print(json.dumps({
    "result": sorted(result),
    "enabled": "bl_ext.user_default.ulip2" in bpy.context.preferences.addons,
    "operators": sorted(n for n in dir(bpy.ops.ulip2) if not n.startswith("_")),
    "sampler": core.sampling.__file__,
    "vocabulary": len(core.spaces.vocabularies.load_vocabulary("modelnet40")[1]),
    "heavy": sorted(m for m in ("torch", "trimesh", "transformers", "core.meshio") if m in sys.modules),
}))
"""


def test_extension_zip_installs_and_enables_in_clean_bpy(tmp_path, capsys):
    assert main(["blender", "build-extension", "--out", str(tmp_path / "dist"), "--no-runtime-wheels"]) == 0
    zip_path = json.loads(capsys.readouterr().out)["extension"]
    archive = zipfile.ZipFile(zip_path)
    names = archive.namelist()
    assert "blender_manifest.toml" in names and not [n for n in names if n.startswith("headless/")]
    assert {"ui/panel.py", "scene/extract.py", "ui/__init__.py"} <= set(names)
    assert "build.py" not in names, "the module that builds the zip is not in it"
    assert [n for n in names if n.startswith("wheels/")] == ["wheels/ulip2_blender_core-0.1.0-py3-none-any.whl"]
    # The default bundle travels with its text tower (float16 weights) and prompt ensembles,
    # not its torch weights.
    assert sorted(n for n in names if n.startswith("bundle/")) == [
        "bundle/bundle.json", "bundle/encoder.onnx", "bundle/evaluation.json", "bundle/prompts.npz",
        "bundle/text/text.onnx", "bundle/text/tokenizer.json"]
    carried = json.loads(archive.read("bundle/bundle.json"))
    assert carried["space"]["name"] == "minilm" and carried["trained"] and "weights" not in carried["files"]
    assert carried["text"]["weights"] == "float16" and carried["text"]["cosine_gap"] < 1e-3
    assert archive.getinfo("bundle/text/text.onnx").file_size < 46e6  # float32: 90 MB

    user = tmp_path / "blender-user"
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(user)}
    # Run outside the checkout: the wheel's site-packages then comes before this
    # environment's editable install, so the imports below prove the bundled wheel works.
    done = subprocess.run([sys.executable, "-c", CHECK, zip_path], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["result"] == ["FINISHED"] and report["enabled"]
    assert {"generate_triplets", "auto_tag", "caption", "search_library", "append_result"} <= set(report["operators"])
    assert report["sampler"].startswith(str(user / "extensions")), report["sampler"]
    assert report["vocabulary"] == 40  # the vocabularies travel as package data of the wheel
    assert report["heavy"] == []


def test_carried_modules_import_no_torch_and_nothing_left_behind(tmp_path):
    """The build refuses a carried module that imports torch, or a core module it does not carry, at module level."""
    files = extension_core_files()
    check_extension_modules(files)  # the real list passes
    core = tmp_path / "core"
    core.mkdir()
    (core / "__init__.py").write_text("")
    (core / "meshio.py").write_text("import trimesh\n")
    (core / "heavy.py").write_text("import numpy as np\nimport torch\n")
    (core / "light.py").write_text("import json\n\ndef f():\n    import torch  # where used: fine\n")
    (core / "user.py").write_text("from core.meshio import load_points\nfrom core import light\n")
    with pytest.raises(Ulip2Error) as error:
        check_extension_modules(["__init__.py", "heavy.py", "light.py", "user.py"], core_dir=core)
    message = str(error.value)
    assert "core/heavy.py:2 imports torch at module level" in message
    assert "core/user.py:1 imports core.meshio, which the extension does not carry" in message
    assert "light.py" not in message and "user.py:2" not in message


def _registry_reachable(tmp_path) -> bool:
    probe = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "--dest", str(tmp_path / "probe"), "flatbuffers"], capture_output=True, timeout=120)
    return probe.returncode == 0


def test_runtime_wheels_for_two_platforms_one_zip_each(tmp_path):
    """With the registry (CI has it): onnxruntime, tokenizers and their needs, never numpy, one zip per platform."""
    if not _registry_reachable(tmp_path):
        pytest.skip("the package registry is not reachable from here")
    zips = build_extension(tmp_path / "dist", platforms=["linux-x64", "windows-x64"])
    assert [z.name for z in zips] == ["ulip2-0.1.0-linux_x64.zip", "ulip2-0.1.0-windows_x64.zip"]
    for zip_path, tag in zip(zips, ("manylinux", "win_amd64")):
        archive = zipfile.ZipFile(zip_path)
        # Blender's builder writes each platform's own list under [build.generated].
        generated = tomllib.loads(archive.read("blender_manifest.toml").decode())["build"]["generated"]
        assert generated["platforms"] == [zip_path.stem.split("-")[-1].replace("_", "-")]
        wheels = [w.rsplit("/", 1)[1] for w in generated["wheels"]]
        assert sorted(n for n in archive.namelist() if n.startswith("wheels/")) == sorted(f"wheels/{w}" for w in wheels)
        names = {w.split("-")[0].lower() for w in wheels}
        assert set(RUNTIME_PACKAGES) | {"protobuf", "ulip2_blender_core"} <= names
        assert "numpy" not in names and "huggingface_hub" not in names
        assert all(tag in w for w in wheels if w.startswith(("onnxruntime", "tokenizers")))

    # The same wheels, offline, from a folder.
    folder = tmp_path / "wheels"
    folder.mkdir()
    for member in zipfile.ZipFile(zips[0]).namelist():
        if member.startswith("wheels/") and "ulip2_blender_core" not in member:
            (folder / member.split("/", 1)[1]).write_bytes(zipfile.ZipFile(zips[0]).read(member))
    offline = build_extension(tmp_path / "offline", platforms=["linux-x64"], wheels_from=folder)
    assert sorted(zipfile.ZipFile(offline[0]).namelist()) == sorted(zipfile.ZipFile(zips[0]).namelist())


def test_unreachable_registry_and_empty_wheel_folder_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(Ulip2Error, match=r"has no wheel of .*onnxruntime|has no wheel of flatbuffers"):
        build_extension(tmp_path / "dist", wheels_from=tmp_path)
    # pip itself, pointed at a registry that does not answer (and no local wheel folders).
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "3")
    with pytest.raises(Ulip2Error, match=r"could not download the runtime wheels for linux-x64 .*--wheels-from DIR"
                                         r".*--no-runtime-wheels"):
        build_extension(tmp_path / "dist", platforms=["linux-x64"])
