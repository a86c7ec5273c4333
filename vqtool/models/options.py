"""What the options that shape a pretrained model mean (--freeze, --head), without torch: commands check them
before it loads."""

from __future__ import annotations

from dataclasses import dataclass

from vqtool.errors import VQError

HEADS = ("linear", "mlp")


@dataclass(frozen=True)
class FreezeSpec:
    """``backbone`` (only the head trains), ``none``, the last ``stages`` trainable, or frozen ``until`` a layer."""

    mode: str  # "backbone" | "none" | "stages" | "until"
    stages: int = 0
    until: str = ""

    @classmethod
    def parse(cls, text: str) -> "FreezeSpec":
        text = str(text).strip()
        if text in ("backbone", "none"):
            return cls(text)
        if text.isdigit():
            return cls("stages", stages=int(text))
        if text.startswith("until:") and text.removeprefix("until:"):
            return cls("until", until=text.removeprefix("until:"))
        raise VQError(f"--freeze {text}: use backbone, none, a number of trailing stages to train, "
                      f"or until:LAYER", usage=True)

    def __str__(self) -> str:
        return {"stages": str(self.stages), "until": f"until:{self.until}"}.get(self.mode, self.mode)
