"""Build the installable Blender extension: `ulip2 blender build-extension`. Runs in the
ulip2 environment; the zip leaves this module out.

The zip holds blender_addon/ and, in its wheels/ folder (how Blender extensions ship
Python packages):
- `ulip2_blender_core`, a small wheel of the core modules the panels import (sampler,
  bundle and runtime, the torch-free text side of spaces, library store, search and
  tagging, prompt templates and vocabularies), so Blender runs the very same code as
  the rest of ulip2. Each is checked at build time: standard library and numpy only at
  module level, and every core module it imports there travels too;
- the runtime wheels Blender's Python lacks (onnxruntime, tokenizers and what they
  need, never numpy, which Blender ships) for each target platform, pinned to the
  versions this environment runs. With several platforms, Blender's builder writes one
  zip per platform (`--split-platforms`);
- in bundle/, the model bundle the panels use when the preferences name none: the default
  one (shipped with ulip2, or $ULIP2_BUNDLE) with its text tower and its prompt ensembles,
  so Auto-tag, captions and search work out of the box (carry_bundle).
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

from core.errors import Ulip2Error

ADDON_DIR = Path(__file__).resolve().parent
CORE_DIR = ADDON_DIR.parent / "core"
WHEEL_NAME = "ulip2_blender_core"

# Core files the extension imports inside an artist's Blender (paths under core/; globs
# allowed). Not here on purpose: models/, export.py, meshio.py (trimesh), the torch spaces
# (minilm.py, openclip.py) and library/indexer.py: Blender never needs them.
EXTENSION_CORE_MODULES = (
    "__init__.py", "errors.py", "paths.py", "sampling.py", "triplets/__init__.py", "triplets/store.py", "formats.py", "references.py", "processes.py",
    "bundle.py", "runtime.py", "upright.py", "textcache.py",
    "spaces/__init__.py", "spaces/base.py", "spaces/onnx_text.py", "spaces/vocabularies.py", "spaces/ranking.py",
    "library/__init__.py", "library/keys.py", "library/store.py", "library/ann.py", "library/search.py",
    "library/client.py",
    "data/templates.json", "data/vocab/*.txt",
)
# Third-party modules a carried core module may import at module level; everything else
# (onnxruntime, tokenizers, faiss, PIL) must be imported where used, so a missing one
# fails one feature with a message instead of the whole extension.
MODULE_LEVEL_THIRD_PARTY = {"numpy"}

# What Blender's Python lacks for inference, and what of their requirements not to carry.
RUNTIME_PACKAGES = ("onnxruntime", "tokenizers")
RUNTIME_SKIP = {
    "numpy": "Blender ships numpy",
    # tokenizers reaches for the hub only in Tokenizer.from_pretrained; bundles carry their
    # tokenizer.json, and the hub client would bring requests, fsspec, pyyaml and more.
    "huggingface-hub": "only for hub downloads, which Blender never does",
}
# Blender platform -> pip --platform tags (pip does not widen manylinux tags by itself).
PLATFORM_TAGS = {
    "linux-x64": ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"),
    "linux-arm64": ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64",
                    "manylinux2014_aarch64"),
    "windows-x64": ("win_amd64",),
    "windows-arm64": ("win_arm64",),
    "macos-arm64": ("macosx_15_0_arm64",),  # pip widens macOS tags downwards, not upwards
    "macos-x64": ("macosx_15_0_x86_64",),
}
# The carried bundle's folder in the zip (blender_addon.ui.preferences.CARRIED_BUNDLE).
BUNDLE_DIR = "bundle"
# The carried text tower keeps float16 weights while its vectors stay this close to
# float32's (1 - cosine, on real texts); minilm's move by 2.4e-7.
FP16_MAX_COSINE_GAP = 1e-3
# Blender 4.2 to 5.x run Python 3.11.
BLENDER_PYTHON = "3.11"
_PIP_TIMEOUT_S = 600


def this_platform() -> str:
    """This machine as Blender names platforms (linux-x64, windows-x64, macos-arm64, ...)."""
    import platform

    system = {"darwin": "macos"}.get(platform.system().lower(), platform.system().lower())
    machine = platform.machine().lower()
    machine = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64"}.get(machine, machine)
    return f"{system}-{machine}"


# -- the core wheel ----------------------------------------------------------------------

def extension_core_files(core_dir: Path = CORE_DIR) -> list[str]:
    """The files under core/ that EXTENSION_CORE_MODULES names, in a stable order."""
    files = []
    for pattern in EXTENSION_CORE_MODULES:
        found = sorted(p.relative_to(core_dir).as_posix() for p in core_dir.glob(pattern) if p.is_file())
        if not found:
            raise Ulip2Error(f"EXTENSION_CORE_MODULES names core/{pattern}, which does not exist")
        files.extend(found)
    return list(dict.fromkeys(files))


def _module_name(rel: str) -> str:
    """core/ relative file -> module name: spaces/__init__.py -> core.spaces."""
    parts = ["core", *rel[:-3].split("/")]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(tree: ast.Module, module: str, is_package: bool) -> list[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) of each import that runs when the module is
    imported: module and class bodies, not function bodies nor `if TYPE_CHECKING:`."""
    package = module if is_package else module.rpartition(".")[0]
    found = []

    def visit(nodes) -> None:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.extend((alias.name, [], node.lineno) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
                found.append((name, [a.name for a in node.names], node.lineno))
            visit(ast.iter_child_nodes(node))

    visit(tree.body)
    return found


def _is_core_module(core_dir: Path, name: str) -> bool:
    path = core_dir.joinpath(*name.split(".")[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def check_extension_modules(files: list[str], core_dir: Path = CORE_DIR) -> None:
    """Raise Ulip2Error unless every carried module imports, at module level, only the
    standard library, numpy and carried core modules (so never torch)."""
    carried = {_module_name(f) for f in files if f.endswith(".py")}
    problems = []
    for rel in (f for f in files if f.endswith(".py")):
        tree = ast.parse((core_dir / rel).read_text(encoding="utf-8"), filename=rel)
        for name, names, line in _module_level_imports(tree, _module_name(rel), rel.endswith("__init__.py")):
            top = name.split(".")[0]
            if top == "core":
                # `from core.x import y` needs core.x, and core.x.y too when y is a module file
                needed = [name] + [f"{name}.{n}" for n in names if _is_core_module(core_dir, f"{name}.{n}")]
                problems += [f"core/{rel}:{line} imports {m}, which the extension does not carry (add it to "
                             "EXTENSION_CORE_MODULES in blender_addon/build.py, or import it inside the "
                             "function that needs it)" for m in needed if m not in carried]
            elif top not in sys.stdlib_module_names and top not in MODULE_LEVEL_THIRD_PARTY:
                problems.append(f"core/{rel}:{line} imports {top} at module level; Blender's Python has only the "
                                f"standard library and {', '.join(sorted(MODULE_LEVEL_THIRD_PARTY))} there: "
                                "import it inside the function that needs it")
    if problems:
        raise Ulip2Error("core modules carried into the Blender extension:\n  " + "\n  ".join(problems))


def build_core_wheel(out_dir: Path, version: str, core_dir: Path = CORE_DIR) -> Path:
    """A pure-Python wheel of the core modules and data files the extension imports."""
    files = extension_core_files(core_dir)
    check_extension_modules(files, core_dir)
    wheel = out_dir / f"{WHEEL_NAME}-{version}-py3-none-any.whl"
    dist_info = f"{WHEEL_NAME}-{version}.dist-info"
    contents = {f"core/{name}": (core_dir / name).read_bytes() for name in files}
    contents[f"{dist_info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {WHEEL_NAME}\nVersion: {version}\n"
                                         "Summary: ulip2 core modules used by the ulip2 Blender extension\n").encode()
    contents[f"{dist_info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: ulip2\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for name, data in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    contents[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in contents.items():
            zf.writestr(name, data)
    return wheel


# -- runtime wheels ----------------------------------------------------------------------

def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements(platform: str) -> dict[str, str]:
    """{distribution: version} to carry for `platform`: RUNTIME_PACKAGES and what they need
    (extras left out, RUNTIME_SKIP skipped), at the versions installed here."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    system, machine = platform.split("-")
    environment = {**default_environment(), "python_version": BLENDER_PYTHON, "python_full_version": BLENDER_PYTHON + ".0",
                   "sys_platform": {"windows": "win32", "macos": "darwin"}.get(system, system),
                   "platform_system": {"windows": "Windows", "macos": "Darwin", "linux": "Linux"}[system],
                   "platform_machine": {"x64": "x86_64", "arm64": "arm64" if system == "macos" else "aarch64"}[machine],
                   "extra": ""}
    wanted: dict[str, str] = {}
    todo = list(RUNTIME_PACKAGES)
    while todo:
        name = _canonical(todo.pop())
        if name in wanted or name in RUNTIME_SKIP:
            continue
        try:
            wanted[name] = importlib.metadata.version(name)
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError as exc:
            raise Ulip2Error(f"{name} is not installed in this environment, so its version for Blender is unknown: "
                             f"pip install {name}") from exc
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                todo.append(requirement.name)
    return dict(sorted(wanted.items()))


def _wheel_fits(path: Path, distribution: str, version: str, platform: str) -> bool:
    parts = path.name[:-4].split("-")
    if len(parts) < 5 or _canonical(parts[0]) != distribution or parts[1] != version:
        return False
    python, abi, wheel_platform = parts[-3], parts[-2], parts[-1]
    if not (python.startswith("py3") or python in ("cp311", "py2.py3") or abi == "abi3" and python <= "cp311"):
        return False
    return wheel_platform == "any" or any(platform in _blender_platforms(p) for p in wheel_platform.split("."))


def _blender_platforms(wheel_platform: str) -> set[str]:
    """Blender platforms a wheel platform tag runs on (the rule of Blender's builder)."""
    system = ("linux" if wheel_platform.startswith(("manylinux", "musllinux", "linux")) else
              "windows" if wheel_platform.startswith("win") else
              "macos" if wheel_platform.startswith("macosx") else None)
    if system is None:
        return set()
    if wheel_platform.endswith("universal2"):
        return {"macos-x64", "macos-arm64"}
    machine = next((b for w, b in (("x86_64", "x64"), ("amd64", "x64"), ("aarch64", "arm64"), ("arm64", "arm64"))
                    if wheel_platform.endswith(w)), None)
    return {f"{system}-{machine}"} if machine else set()


def download_runtime_wheels(dest: Path, platform: str, wheels_from: Path | None = None) -> list[Path]:
    """The runtime wheels for `platform` in `dest`: copied from `wheels_from`, else
    downloaded from the package registry with pip (binary wheels for Blender's Python)."""
    wanted = runtime_requirements(platform)
    tags = PLATFORM_TAGS.get(platform)
    if tags is None:
        raise Ulip2Error(f"unknown Blender platform {platform!r}; choose from {', '.join(PLATFORM_TAGS)}")
    pip_args = ["download", "--no-deps", "--only-binary=:all:", "--python-version", BLENDER_PYTHON,
                "--implementation", "cp", "--abi", "cp" + BLENDER_PYTHON.replace(".", ""), "--abi", "abi3",
                "--abi", "none", *[a for tag in tags for a in ("--platform", tag)]]
    specs = [f"{name}=={version}" for name, version in wanted.items()]
    if wheels_from is not None:
        found = []
        for name, version in wanted.items():
            match = sorted(p for p in Path(wheels_from).glob("*.whl") if _wheel_fits(p, name, version, platform))
            if not match:
                raise Ulip2Error(
                    f"{wheels_from} has no wheel of {name}=={version} for {platform}; fill it where the registry "
                    f"is reachable: pip {' '.join(pip_args)} --dest {wheels_from} {' '.join(specs)}")
            found.append(Path(shutil.copy2(match[-1], dest)))
        return found
    with tempfile.TemporaryDirectory(prefix="ulip2-wheels-") as tmp:
        result = subprocess.run([sys.executable, "-m", "pip", *pip_args, "--dest", tmp, *specs],
                                capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
        if result.returncode != 0:
            said = " | ".join(line.strip() for line in (result.stdout + result.stderr).splitlines()
                              if "ERROR" in line or "rror" in line)[-600:]
            raise Ulip2Error(
                f"could not download the runtime wheels for {platform} ({', '.join(specs)}) from the package "
                f"registry: {said or 'pip failed'}. Offline: --wheels-from DIR (wheels fetched elsewhere with "
                f"pip {' '.join(pip_args)} --dest DIR ...), or --no-runtime-wheels for a Blender whose Python "
                "already has onnxruntime and tokenizers")
        return [Path(shutil.copy2(p, dest)) for p in sorted(Path(tmp).glob("*.whl"))]


# -- the carried bundle ------------------------------------------------------------------

def carry_bundle(dest: Path):
    """Write into `dest` the bundle the zip carries: the default one ($ULIP2_BUNDLE, else the
    shipped bundle) with its prompt ensembles and its text tower, exported now if it has none
    (which needs the torch extra), without its torch weights (Blender never fine-tunes).
    The text tower's weights are stored in float16 where its vectors stay within
    FP16_MAX_COSINE_GAP of float32's (halve_text_tower)."""
    from core.bundle import read_bundle, write_bundle
    from core.export import add_text_tower

    source = read_bundle("default", warn_untrained=False)
    shutil.copytree(source.path, dest)
    if "weights" in source.files:
        (dest / source.files["weights"]).unlink()
    write_bundle(dataclasses.replace(source, path=dest, files={k: v for k, v in source.files.items() if k != "weights"}))
    if not source.has_text:
        try:
            add_text_tower(dest)
        except ImportError as exc:
            raise Ulip2Error(
                f"the extension carries the text tower of {source.space}, and exporting it needs {exc.name}: "
                "pip install 'ulip2[torch]'; or carry a bundle that has one: ulip2 models add-text default "
                "--out DIR, then ULIP2_BUNDLE=DIR ulip2 blender build-extension ...") from exc
    return halve_text_tower(dest)


def _check_texts() -> list[str]:
    """Real texts for the carried tower: the shipped caption bank, and ModelNet40's labels in
    every 8th of ULIP's prompt templates (469 texts)."""
    from core.spaces.vocabularies import load_bank, load_vocabulary, prompt_name
    from core.spaces.vocabularies import ULIP_TEMPLATES

    labels = load_vocabulary("modelnet40")[1]
    return [*load_bank()[1], *(t.format(prompt_name(label)) for label in labels for t in ULIP_TEMPLATES[::8])]


def cosine_gap(a, b) -> float:
    """The largest 1 - cosine between matching rows of a and b."""
    import numpy as np

    a, b = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, b))
    return float((1 - (a * b).sum(axis=1)).max())


def halve_text_tower(folder: Path):
    """Store the text tower of the bundle in `folder` with float16 weights (half the file;
    the arithmetic stays float32) if the vectors of real texts stay within
    FP16_MAX_COSINE_GAP of the float32 tower's; bundle.json then records the gap measured.
    Else the float32 tower stays, with a warning. Returns the bundle read again."""
    from core.bundle import read_bundle, write_bundle
    from core.export import store_weights_fp16
    from core.spaces.onnx_text import OnnxTextSpace

    bundle = read_bundle(folder, warn_untrained=False)
    tower = bundle.text_file("onnx")
    half = store_weights_fp16(tower, tower.with_suffix(".fp16.onnx"))
    halved = dataclasses.replace(bundle, text={**bundle.text, "onnx": half.relative_to(bundle.path).as_posix()})
    texts = _check_texts()
    gap = cosine_gap(OnnxTextSpace.of_bundle(bundle, device="cpu")._encode_text(texts),
                     OnnxTextSpace.of_bundle(halved, device="cpu")._encode_text(texts))
    if gap > FP16_MAX_COSINE_GAP:
        half.unlink()
        warnings.warn(f"the carried text tower stays float32 ({tower.stat().st_size // 2**20} MB): with float16 "
                      f"weights its vectors moved by {gap:.2g} cosine, more than {FP16_MAX_COSINE_GAP}")
        return bundle
    os.replace(half, tower)
    write_bundle(dataclasses.replace(bundle, text={**bundle.text, "weights": "float16", "cosine_gap": gap}))
    return read_bundle(folder, warn_untrained=False)


# -- the extension zip -------------------------------------------------------------------

def blender_ext_tool() -> Path:
    """Blender's own extension builder (the script behind `blender --command extension`), from bpy."""
    import importlib.util

    spec = importlib.util.find_spec("bpy")
    if spec is None or spec.origin is None:
        raise Ulip2Error("building the extension needs bpy (Blender's builder ships inside it): "
                         "pip install 'ulip2[blender]'")
    tools = sorted(Path(spec.origin).parent.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not tools:
        raise Ulip2Error(f"no extension builder (bl_pkg/cli/blender_ext.py) inside bpy at {Path(spec.origin).parent}")
    return tools[-1]


def _toml_list(values) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def build_extension(out: Path, *, platforms: list[str] | None = None, runtime_wheels: bool = True,
                    wheels_from: Path | None = None) -> list[Path]:
    """Build the installable extension into `out`; returns the zip paths (one per platform
    when runtime wheels are carried, one zip for every platform without them)."""
    import tomllib

    manifest_text = (ADDON_DIR / "blender_manifest.toml").read_text()
    manifest = tomllib.loads(manifest_text)
    platforms = list(dict.fromkeys(platforms or [this_platform()])) if runtime_wheels else []
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ulip2-extension-") as tmp:
        staging = Path(tmp) / manifest["id"]
        shutil.copytree(ADDON_DIR, staging, ignore=shutil.ignore_patterns("__pycache__"))
        wheels_dir = staging / "wheels"
        wheels_dir.mkdir()
        wheels = [build_core_wheel(wheels_dir, manifest["version"])]
        for platform in platforms:
            wheels += download_runtime_wheels(wheels_dir, platform, wheels_from)
        carry_bundle(staging / BUNDLE_DIR)
        names = sorted({f"./wheels/{w.name}" for w in wheels})
        # The manifest in the source tree lists the core wheel; the carried ones are known only now.
        text, count = re.subn(r"(?m)^wheels\s*=\s*\[[^\]]*\]", lambda _: "wheels = " + _toml_list(names), manifest_text)
        if count != 1:
            raise Ulip2Error(f"{ADDON_DIR / 'blender_manifest.toml'} must have one `wheels = [...]` line")
        if platforms:
            text = text.replace("\n[permissions]", f"platforms = {_toml_list(platforms)}\n\n[permissions]", 1)
        (staging / "blender_manifest.toml").write_text(text)
        command = [sys.executable, str(blender_ext_tool()), "build", "--source-dir", str(staging),
                   "--output-dir", str(out)]
        if platforms:
            command.append("--split-platforms")
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise Ulip2Error(f"Blender's extension builder failed:\n{result.stdout}{result.stderr}")
    stem = f"{manifest['id']}-{manifest['version']}"
    if not platforms:
        return [out / f"{stem}.zip"]
    return [out / f"{stem}-{p.replace('-', '_')}.zip" for p in platforms]
