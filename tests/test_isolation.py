"""No test touches the user's home: every cache vqtool and its libraries use points at the session's folder."""

import os
import pwd
from pathlib import Path

import pytest

REAL_HOME = Path(pwd.getpwuid(os.getuid()).pw_dir)  # whatever $HOME says


@pytest.fixture(scope="module")
def seen_by_a_module_fixture():
    """What a module-scoped fixture (trained runs, exports) sees: it runs before the function-scoped `isolated`."""
    import torch.hub

    from vqtool.data.store import cache_root
    from vqtool.detection.ultralytics_env import config_dir, vqtool_home, weights_dir

    return {"store": cache_root(), "vqtool home": vqtool_home(), "ultralytics": config_dir(),
            "yolo weights": weights_dir(), "torch hub": Path(torch.hub.get_dir()),
            **{variable: os.environ.get(variable) for variable in
               ("VQTOOL_CACHE_DIR", "VQTOOL_DATA_DIR", "TORCH_HOME", "HF_HOME", "YOLO_CONFIG_DIR")}}


def test_module_fixtures_write_no_cache_in_the_users_home(seen_by_a_module_fixture):
    home_cache = (REAL_HOME / ".cache").resolve()
    for name, folder in seen_by_a_module_fixture.items():
        assert folder, f"{name} is not set"
        resolved = Path(folder).resolve()
        assert not resolved.is_relative_to(home_cache) and resolved != REAL_HOME.resolve(), (name, folder)


def test_the_classic_datasets_and_store_share_one_cache_folder(monkeypatch, tmp_path):
    from vqtool.data.locations import cache_dir, default_data_dir
    from vqtool.detection.ultralytics_env import vqtool_home, weights_dir

    monkeypatch.setenv("VQTOOL_CACHE_DIR", str(tmp_path / "c"))
    for variable in ("VQTOOL_DATA_DIR", "VQTOOL_HOME", "VQTOOL_WEIGHTS_DIR"):
        monkeypatch.delenv(variable)
    assert cache_dir() == tmp_path / "c" and vqtool_home() == tmp_path / "c"
    assert Path(default_data_dir()) == tmp_path / "c" / "data" and weights_dir() == tmp_path / "c" / "weights"
