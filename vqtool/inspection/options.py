"""What `vqtool inspect` looks at and with which backbone; no torch, so the command takes its defaults from here."""

from __future__ import annotations

from dataclasses import dataclass

from vqtool.choices import DEFAULT_DEVICE
from vqtool.errors import VQError
from vqtool.multilabel.config import LABELS_FROM
from vqtool.option_fields import check_fields, option

DEFAULT_MODEL = "timm/tf_efficientnet_lite0"
TASKS = ("classification", "multilabel")  # whose labels the data holds (a data.yaml alone: its images, no labels)


@dataclass(frozen=True)
class InspectOptions:
    """`vqtool inspect`'s options (its Click options are made from the option fields)."""

    model: str = option(DEFAULT_MODEL, "Backbone whose features are the embeddings.", show_default=True,
                        parameter="model_name", complete="model")
    weights: str | None = option(None, "Its weights: DEFAULT (from the local cache), a timm tag or torchvision enum, "
                                 "or a local .safetensors/.pth file (offline).", metavar="SPEC")
    imgsz: int | None = option(None, "Image size for the backbone (default: its own).", min=8)
    near_threshold: float = option(0.92, "Cosine similarity of two embeddings from which the images are near-copy "
                                   "candidates; a candidate is reported when its small greyscale thumbnails' detail "
                                   "matches too (and the thumbnails' own near neighbours whose layout matches are "
                                   "reported whatever this is).", min=0, max=1, min_open=True, show_default=True)
    neighbours: int = 10  # nearest others looked at per image
    labels: bool = option(True, "Look for label errors (k-fold linear head on the embeddings, cleanlab's confident "
                          "learning).", flag="--label-check", parameter="label_check", show_default=True)
    device: str = DEFAULT_DEVICE  # --device: PredictOptions.device's option (where a model runs)
    task: str | None = option(None, "multilabel: read DATASET's labels as `train --task multilabel` does (a CSV/TSV or "
                              "text list with several labels per image, or one 0/1 column per label).", choices=TASKS)
    labels_from: str | None = option(None, "boxes: a YOLO data.yaml's image-level labels (each image labelled with the "
                                     "classes it has boxes of), inspected as multi-label data.", choices=LABELS_FROM)

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel" or self.labels_from is not None

    def check(self) -> None:
        check_fields(self)
        if self.labels_from and self.task == "classification":
            raise VQError("--labels-from boxes makes multi-label data; drop --task classification", usage=True)
