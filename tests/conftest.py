import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

ASSETS = os.environ.get("VQTOOL_TEST_ASSETS")
# Every folder vqtool, torch, Hugging Face and Ultralytics would write in the user's home, for the whole session.
CACHE_VARIABLES = {"VQTOOL_CACHE_DIR": "vqtool", "VQTOOL_HOME": "vqtool", "VQTOOL_DATA_DIR": "vqtool/data",
                   "VQTOOL_WEIGHTS_DIR": "vqtool/weights", "TORCH_HOME": "torch", "HF_HOME": "huggingface",
                   "HF_HUB_CACHE": "huggingface/hub", "YOLO_CONFIG_DIR": "ultralytics", "XDG_CACHE_HOME": "xdg",
                   "MPLCONFIGDIR": "matplotlib"}
_session_cache = {}


def pytest_configure(config):
    """Before any fixture (session- and module-scoped ones included) runs, point every cache at a session folder, so
    no test reads or writes the user's ~/.cache (make test once left 8 store entries there)."""
    folder = Path(tempfile.mkdtemp(prefix="vqtool-test-home-"))
    _session_cache["folder"] = folder
    for variable, below in CACHE_VARIABLES.items():
        os.environ[variable] = str(folder / below)
    from vqtool.telemetry import decline_openvino_telemetry

    decline_openvino_telemetry()  # test modules import openvino themselves, before vqtool would decline it


def pytest_unconfigure(config):
    if "folder" in _session_cache:
        shutil.rmtree(_session_cache.pop("folder"), ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test runs in its own folder, so run folders, caches and the store never land in the repo or home."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VQTOOL_DATA_DIR", str(tmp_path / "data-cache"))
    monkeypatch.setenv("VQTOOL_CACHE_DIR", str(tmp_path / "store"))  # the pixel and feature store: never ~/.cache
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("VQTOOL_DEBUG", raising=False)


@pytest.fixture
def run_cli():
    """Invoke vqtool in-process: run_cli("train", "--json") -> click Result."""
    from vqtool.cli import cli

    def invoke(*args, input=None):
        return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke


def summary_of(result) -> dict:
    """The JSON document a successful ``--json`` command printed (a CliRunner result or a finished subprocess)."""
    code = result.exit_code if hasattr(result, "exit_code") else result.returncode
    assert code == 0, result.output if hasattr(result, "output") else result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout  # one document (under torchrun: rank 1 prints nothing)
    return json.loads(lines[0])


def stripes(orientation: str, size: int, seed: int) -> Image.Image:
    """A noisy striped image: a task a small CNN learns in an epoch or two."""
    rng = np.random.default_rng(seed)
    period = 4 + seed % 3
    line = (np.arange(size) // (period // 2)) % 2 * 200
    array = np.tile(line, (size, 1)) if orientation == "vertical" else np.tile(line[:, None], (1, size))
    array = np.clip(array + rng.normal(0, 25, (size, size)), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([array] * 3, axis=-1))


def make_class_tree(root: Path, per_class: int = 12, size: int = 32, splits=("train", "val"),
                    classes=("horizontal", "vertical")) -> Path:
    """root/<split>/<class>/*.png (or root/<class>/ when splits is empty)."""
    for split in splits or (None,):
        for cls in classes:
            folder = root / split / cls if split else root / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                stripes(cls, size, seed=i + (1000 if split != "train" else 0)).save(folder / f"{cls}_{i}.png")
    return root


@pytest.fixture
def class_tree(tmp_path):
    return make_class_tree(tmp_path / "stripes")


requires_assets = pytest.mark.skipif(
    not (ASSETS and Path(ASSETS).is_dir()),
    reason="set VQTOOL_TEST_ASSETS to the shared assets folder to run real-data tests",
)


class RecordingReporter:
    """A reporter (vqtool.reporter.Reporter) that keeps what the library tells it, for assertions."""

    def __init__(self):
        from vqtool.reporter import SilentReporter

        self._silent = SilentReporter()
        self.logs, self.warnings, self.tables = [], [], []

    def log(self, message):
        self.logs.append(message)

    def warn(self, message):
        self.warnings.append(message)

    def progress(self, description, total):
        return self._silent.progress(description, total)

    def table(self, columns, rows, title=None):
        self.tables.append((columns, rows, title))


@pytest.fixture
def reporter():
    return RecordingReporter()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smallcnn checkpoint (28 px input) trained one epoch on the stripes, and its data."""
    from click.testing import CliRunner

    from vqtool.cli import cli

    root = tmp_path_factory.mktemp("export")
    data = make_class_tree(root / "stripes")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        result = CliRunner().invoke(cli, ["train", str(data), "--model", "smallcnn", "--epochs", "1",
                                          "--out", str(root / "run"), "--json", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root / "run", data


@pytest.fixture
def drawn_figures(monkeypatch):
    """What each PNG figure saved during the test shows: its title and, per axes, title, labels, x range, texts and
    whether a colour bar is attached (a list, one dict per saved figure)."""
    from matplotlib.figure import Figure

    seen, save = [], Figure.savefig

    def record(figure, *args, **kwargs):
        figure.canvas.draw()  # tick labels exist once drawn
        axes = [{"title": axis.get_title(), "xlabel": axis.get_xlabel(), "ylabel": axis.get_ylabel(),
                 "xlim": axis.get_xlim(), "xticks": visible_ticks(axis),
                 "texts": [t.get_text() for t in axis.texts],
                 "fontsizes": [t.get_fontsize() for t in axis.texts],
                 "images": [image.get_array() for image in axis.images],
                 "clim": [image.get_clim() for image in axis.images],
                 "colorbar": any(image.colorbar is not None for image in axis.images)}
                for axis in figure.axes]
        seen.append({"title": figure._suptitle.get_text() if figure._suptitle else "", "axes": axes,
                     "size": tuple(figure.get_size_inches())})
        return save(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return seen


def visible_ticks(axis) -> list[str]:
    low, high = sorted(axis.get_xlim())
    return [label.get_text() for tick, label in zip(axis.get_xticks(), axis.get_xticklabels())
            if low <= tick <= high and label.get_text()]
