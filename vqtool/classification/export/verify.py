"""Checking an exported model against the eager one: the same batches through both, compared.

Each batch gives the largest absolute difference between the two outputs and
how often their top-1 predictions agree; the export passes when every
difference is within the tolerance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from vqtool.errors import VQError, first_line
from vqtool.reporter import Reporter

RANDOM_IMAGES = 4  # a batch size other than the one the model was traced with
SAMPLE_IMAGES = 16


@dataclass(frozen=True)
class Check:
    """One batch through the eager model and through the exported one."""

    batch: str  # "random" or "sample" (real images)
    images: int
    max_abs_diff: float
    top1_agreement: float | None  # None when no prediction was confident enough to compare

    def line(self) -> str:
        agreement = "-" if self.top1_agreement is None else f"{self.top1_agreement:.4f}"
        return (f"verified on the {self.batch} batch ({self.images} images): max abs diff {self.max_abs_diff:.3g}, "
                f"top-1 agreement {agreement}")


def max_abs_diff(reference: torch.Tensor, exported: torch.Tensor) -> float:
    return float((reference.float() - exported.float()).abs().max())


def top1_agreement(reference: torch.Tensor, exported: torch.Tensor) -> float:
    return float((reference.argmax(1) == exported.argmax(1)).float().mean())


def verdict(checks: list[Check], tolerance: float) -> dict:
    """The verification fields of the export summary."""
    agreements = [c.top1_agreement for c in checks if c.top1_agreement is not None]
    return {"verified": all(c.max_abs_diff <= tolerance for c in checks),  # a NaN difference fails too
            "max_abs_diff": max(c.max_abs_diff for c in checks),
            "top1_agreement": min(agreements) if agreements else None,
            "tolerance": tolerance,
            "checks": [asdict(c) for c in checks]}


def verify_classifier(checkpoint, preprocess, path: Path, options, reporter: Reporter, held_out=None) -> dict:
    """Random and real images through the checkpoint's model and through the exported file as eval loads it.
    ``held_out`` finds the real images (default :func:`held_out_split`)."""
    from vqtool.classification.inference.exported import load_exported

    exported = load_exported(path).model
    generator = torch.Generator().manual_seed(0)
    batches = {"random": torch.randn(RANDOM_IMAGES, preprocess.channels, preprocess.size, preprocess.size,
                                     generator=generator),
               **sample_batch(checkpoint, preprocess, options.sample_data, reporter, held_out)}
    checks = []
    for name, images in batches.items():
        with torch.no_grad():
            reference, outputs = checkpoint.model(images), exported(images)
        checks.append(Check(name, len(images), max_abs_diff(reference, outputs), top1_agreement(reference, outputs)))
        reporter.log(checks[-1].line())
    return verdict(checks, options.max_abs_diff)


def sample_batch(checkpoint, preprocess, dataset_spec: str | None, reporter: Reporter,
                 held_out=None) -> dict[str, torch.Tensor]:
    """{"sample": normalised real images} from ``dataset_spec`` or the checkpoint's own held-out split.

    Images spread evenly over the split, so that every class usually appears.
    When the checkpoint's own data cannot be found the export is verified on
    random input alone, with a note; a dataset the user named must load.
    """
    from vqtool.data.pipeline import Normalizer, decode_split

    found = (held_out or held_out_split)(checkpoint, preprocess, dataset_spec)
    if isinstance(found, str):
        reporter.log(f"no real images to verify with ({found}); --data DATASET names some")
        return {}
    _, split = found
    index = torch.linspace(0, len(split) - 1, min(SAMPLE_IMAGES, len(split))).round().long()
    images = decode_split(split.subset(index), preprocess, reporter=reporter, store=False).pixels  # a sample
    return {"sample": Normalizer(preprocess, torch.device("cpu"))(images)}


def held_out_split(checkpoint, preprocess, dataset_spec: str | None):
    """(split name, split) of real images to check an export against: ``dataset_spec``'s (which must load) or the
    checkpoint's own held-out data; why there are none, as a string, when the checkpoint's own data is gone."""
    from vqtool.classification.inference.classifier import Classifier
    from vqtool.classification.inference.evaluate import evaluation_split
    from vqtool.data import DataOptions

    classifier = Classifier(checkpoint.model, checkpoint.classes, preprocess, checkpoint.meta)
    try:
        _, split_name, split = evaluation_split(classifier, dataset_spec, DataOptions())
    except VQError as error:
        if dataset_spec:
            raise
        return first_line(error)
    return split_name, split
