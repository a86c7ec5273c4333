"""The architecture as tests: import-layer contracts that hold and fail when broken, short functions."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
needs_import_linter = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed")
MAX_FUNCTION_LINES = 60


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    """lint-imports with the project's contracts over the vqtool package found in ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=tree, env=env, capture_output=True, text=True)


@needs_import_linter
def test_the_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "5 kept, 0 broken" in result.stdout


@needs_import_linter
@pytest.mark.parametrize("edits, contract", [
    ({"vqtool/registry.py": "import vqtool.classification.training.train"}, "Layers point one way"),
    ({"vqtool/detection/data.py": "import vqtool.classification.checkpoints.format"},
     "Classification and detection are independent tasks"),
    ({"vqtool/classification/inference/logits.py": "import vqtool.classification.training.loop"},
     "Classification's packages point one way"),
    ({"vqtool/runs/commit.py": "import vqtool.data.store"}, "Layers point one way"),
    ({"vqtool/data/images.py": "import click"}, "Only the command layer prints"),
    ({"vqtool/models/hooks.py": "import vqtool.models.surgery", "vqtool/models/surgery.py": "import vqtool.models.hooks"},
     "No import cycles"),
])
def test_breaking_a_contract_fails(tmp_path, edits, contract):
    shutil.copytree(ROOT / "vqtool", tmp_path / "vqtool", ignore=shutil.ignore_patterns("__pycache__"))
    for module, line in edits.items():
        target = tmp_path / module
        target.write_text(target.read_text() + f"\n{line}  # a deliberate violation\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1
    assert f"{contract} BROKEN" in result.stdout.splitlines(), result.stdout


def test_no_function_is_longer_than_sixty_lines():
    long = []
    for path in sorted((ROOT / "vqtool").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
