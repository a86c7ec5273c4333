"""A YOLO ``data.yaml`` as a dataset source: images and label files Ultralytics trains and validates on.

Paths resolve exactly as Ultralytics resolves them (``path:`` if set, else the
yaml's own folder), because Ultralytics itself reads the yaml. vqtool checks
every split it names exists before anything runs, so a missing folder is one
clear error instead of a download attempt (or a run of the yaml's download
script), and that the label caches Ultralytics would unpickle are plain data.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from vqtool.errors import VQError, first_line
from vqtool.pickles import LABEL_CACHE, check
from vqtool.registry import register_dataset

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class YoloDataset:
    """A resolved data.yaml: its class names and the image folders, lists or files of each split."""

    yaml: Path
    classes: list[str]
    splits: dict[str, list[str]]

    @property
    def name(self) -> str:
        return self.yaml.stem

    @property
    def heldout_split(self) -> str:
        """The split evaluation uses by default: test when there is one, else val (as for classifiers)."""
        return "test" if "test" in self.splits else "val"

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise VQError(f"{self.yaml}: no {split!r} split (it names {', '.join(self.splits)})", usage=True)
        return split


def is_yolo_yaml(spec) -> bool:
    return str(spec).lower().endswith((".yaml", ".yml"))


@register_dataset("yolo", matches=is_yolo_yaml, task="detection",
                  description="YOLO data.yaml: images/ + labels/ with paths relative to the yaml (detection)")
def load_yolo(spec: str, options=None) -> YoloDataset:
    from vqtool.detection.ultralytics_env import load_ultralytics

    load_ultralytics()
    from ultralytics.data.utils import check_det_dataset

    yaml = Path(spec).expanduser()
    if not yaml.is_file():
        raise VQError(f"{spec}: no such file", usage=True)
    try:
        info = check_det_dataset(str(yaml), autodownload=False)
    except (OSError, SyntaxError, TypeError, ValueError, KeyError, AttributeError) as error:
        raise VQError(f"{spec}: not a usable YOLO data.yaml ({first_line(error)})", usage=True) from error
    splits = {}
    for split in SPLITS:
        if info.get(split):
            paths = info[split] if isinstance(info[split], list) else [info[split]]
            missing = [p for p in paths if not Path(p).exists()]
            if missing:
                raise VQError(f"{spec}: the {split} images are not at {missing[0]}", usage=True)
            splits[split] = [str(p) for p in paths]
    for cache in label_caches(splits):
        check(cache, LABEL_CACHE)
    names = info["names"]
    return YoloDataset(yaml=yaml.resolve(), classes=[names[i] for i in sorted(names)], splits=splits)


def label_caches(splits: dict[str, list[str]]) -> list[Path]:
    """The ``labels/<split>.cache`` files (pickles) Ultralytics would read for these splits' images.

    Ultralytics reads the one beside the label folder of a split's first image;
    every folder holding a split's labels is covered here.
    """
    from ultralytics.data.utils import IMG_FORMATS, img2label_paths

    images = [file for paths in splits.values() for path in paths for file in _listed_files(Path(path))]
    labels = img2label_paths([file for file in images if file.rpartition(".")[-1].lower() in IMG_FORMATS])
    caches = {Path(label).parent.with_suffix(".cache") for label in labels}
    return sorted(cache for cache in caches if cache.is_file())


def _listed_files(path: Path) -> list[str]:
    """The files a split names, as Ultralytics lists them: a folder's, searched recursively, or a list file's."""
    if path.is_dir():
        return glob.glob(str(Path(glob.escape(path)) / "**" / "*.*"), recursive=True)
    parent = str(path.parent) + os.sep
    lines = path.read_text(encoding="utf-8-sig", errors="replace").strip().splitlines()
    return [line.replace("./", parent, 1) if line.startswith("./") else line for line in lines]
