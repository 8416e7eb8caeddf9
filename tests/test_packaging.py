"""What an installed lapgen holds: a wheel built from this checkout carries every module, `py.typed` and the
paper's recipes, declares every library lapgen imports, and names no package data that does not exist."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Imports that name no distribution of their own (the standard library) or ship with another one.
STDLIB = set(sys.stdlib_module_names)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the checkout (pip, no dependencies, the venv's setuptools)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(ROOT / "lapgen", src / "lapgen", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(dist), "."], cwd=src, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    [built] = dist.glob("lapgen-*.whl")
    return built


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(zf.read(name).decode())


def test_wheel_holds_every_module_py_typed_and_the_recipes(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "lapgen").rglob("*.py")}
    assert modules <= names, f"missing from the wheel: {sorted(modules - names)[:5]}"
    assert "lapgen/py.typed" in names
    recipes = {p.relative_to(ROOT).as_posix() for p in (ROOT / "lapgen" / "configs").glob("*.yaml")}
    shipped = {f"lapgen/configs/{n}.yaml" for n in ("paper-stage1-unet", "paper-stage1-unet-clip", "paper-controlnet",
                                                    "animatediff-motion")}
    assert recipes == shipped and recipes <= names
    with zipfile.ZipFile(wheel) as zf:
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "lapgen = lapgen.cli.main:main" in entry_points


def test_declared_package_data_exists():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.10 has no tomllib")

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["lapgen"]
    for pattern in patterns:
        assert list((ROOT / "lapgen").glob(pattern)), f"package data {pattern!r} matches no file in lapgen/"


def _third_party_imports() -> set[str]:
    """Top-level names of every non-lapgen, non-stdlib module imported anywhere in lapgen/."""
    found = set()
    for path in (ROOT / "lapgen").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {name for name in found if name != "lapgen" and name not in STDLIB and name != "__future__"}


def _requirement_name(spec: str) -> str:
    name = spec.split(";")[0]
    for stop in "<>=!~[ (":
        name = name.split(stop)[0]
    return name.strip().lower().replace("_", "-")


def test_every_imported_library_is_declared(wheel):
    metadata = _metadata(wheel)
    required = {_requirement_name(r) for r in metadata.get_all("Requires-Dist")}
    distributions = packages_distributions()
    missing = {}
    for module in sorted(_third_party_imports()):
        dists = {d.lower().replace("_", "-") for d in distributions.get(module, [])}
        assert dists, f"lapgen imports {module!r}, which no installed distribution provides"
        if not dists & required:
            missing[module] = sorted(dists)
    assert not missing, f"imported but not declared in pyproject.toml (module: distributions): {missing}"
