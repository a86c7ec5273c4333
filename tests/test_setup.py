"""What a fresh clone installs and keeps out of git."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_make_demo_installs_the_runtime_only(tmp_path):
    """`make demo` needs no pytest, linters, TensorBoard or MLflow: the dev extra is for `make test`."""
    demo = subprocess.run(["make", "-n", "-C", str(ROOT), "demo", f"VENV={tmp_path / 'venv'}"], capture_output=True,
                          text=True, timeout=60)
    assert demo.returncode == 0, demo.stderr
    assert "pip install --quiet -e ." in demo.stdout and "[dev]" not in demo.stdout
    test = subprocess.run(["make", "-n", "-C", str(ROOT), "test", f"VENV={tmp_path / 'venv'}"], capture_output=True,
                          text=True, timeout=60)
    assert "-e '.[dev]'" in test.stdout


@pytest.mark.parametrize("path", ["mlruns/0/meta.yaml", "mlflow.db", "runs/train-1/model.json"])
def test_what_mlflow_and_runs_write_stays_out_of_git(path):
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", "-q", path], timeout=30)
    assert ignored.returncode == 0, f"{path} is not ignored"


def test_one_opencv_only():
    """grad-cam required opencv-python-headless beside Ultralytics' opencv-python (two packages writing one cv2):
    vqtool computes Grad-CAM itself."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in dependencies if d.startswith(("grad-cam", "opencv-python-headless"))]
    code = ("import sys; sys.modules['pytorch_grad_cam'] = None; sys.modules['cv2'] = None\n"
            "import torch\nfrom vqtool.classification.inference import cam\nprint(cam.__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
