"""A detector run's checkpoints change with its metrics row, in one commit: one consistent epoch at any instant.

Ultralytics writes ``last.pt`` and ``best.pt`` in place (``Path.write_bytes``,
then ``torch.save`` when it strips the optimizer at the end): a kill while it
writes leaves a truncated checkpoint, and a kill between its ``last.pt`` and
vqtool's metrics.csv loses the epoch's row. vqtool's trainer therefore has
Ultralytics write the epoch's checkpoints into a staging folder of the run
(``RUN/.staging-*``, removed by :func:`vqtool.runs.commit.recover` if the run is
killed before its commit), and :class:`~vqtool.detection.train.EpochRecorder`
moves them in with the metrics row and curves as one commit. The final strip of
the optimizer writes a temporary file that is then renamed over the checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from vqtool.runs.commit import STAGING_PREFIX, new_staging
from vqtool.runs.atomic_files import settle

WEIGHTS = ("ultralytics", "weights")  # the run folder's subfolder Ultralytics keeps its checkpoints in


class StagedCheckpoints:
    """The checkpoints Ultralytics saved for the epoch being finished, in a staging folder of the run that the
    epoch's commit then switches in."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.folder: Path | None = None

    def paths(self) -> tuple[Path, Path]:
        """Fresh (last.pt, best.pt) paths for Ultralytics to save the epoch's checkpoints to."""
        self.discard()
        self.folder = new_staging(self.run_dir)
        weights = self.folder.joinpath(*WEIGHTS)
        weights.mkdir(parents=True)
        return weights / "last.pt", weights / "best.pt"

    def take(self) -> Path | None:
        """The staging folder, handed to the commit (which switches it in or removes it)."""
        folder, self.folder = self.folder, None
        return folder

    def discard(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def committing_trainer(model, staged: StagedCheckpoints):
    """The model's Ultralytics trainer class, saving each epoch's checkpoints into ``staged`` for the commit."""
    base = model._smart_load("trainer")

    class CommittingTrainer(base):
        def save_model(self):
            final = self.last, self.best
            self.last, self.best = staged.paths()  # best.pt is written there only when the epoch improved
            try:
                return super().save_model()
            finally:
                self.last, self.best = final

        def final_eval(self):
            with atomic_strips(staged.run_dir):
                super().final_eval()

    return CommittingTrainer


@contextlib.contextmanager
def atomic_strips(run_dir: Path):
    """Ultralytics' end-of-training strip of the optimizer replaces each checkpoint whole: written in a staging
    folder of the run (removed by ``recover`` after a kill), then renamed over it."""
    import ultralytics.engine.trainer as trainer_module

    original = trainer_module.strip_optimizer

    def strip(f="best.pt", s="", updates=None):
        target = Path(s or f)
        folder = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=run_dir))
        temporary = folder / target.name
        try:
            stripped = original(f, s=str(temporary), updates=updates)
            if temporary.is_file():
                settle(temporary)
                os.replace(temporary, target)
            return stripped
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    trainer_module.strip_optimizer = strip
    try:
        yield
    finally:
        trainer_module.strip_optimizer = original
