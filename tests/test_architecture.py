"""The package layers import one way (`[tool.importlinter]` in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_layers_import_one_way():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is not installed (requirements.lock pins it)"
    result = subprocess.run(
        [lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_every_module_has_a_layer():
    """A new module of `pipelines` must be placed in a layer, or the contract would not see it."""
    import pkgutil
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layered = {
        name.strip()
        for contract in config["contracts"]
        for layer in contract["layers"]
        for name in layer.replace(":", "|").split("|")
    }
    modules = {f"pipelines.{m.name}" for m in pkgutil.iter_modules([str(ROOT / "pipelines")])}
    assert modules - layered == set(), "modules of pipelines/ missing from the layer contract"
    assert set(config["root_packages"]) - {"pipelines"} <= layered
