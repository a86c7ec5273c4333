"""The photo a conv command looks at: a file, or a sample that ships with scikit-learn (works offline)."""

from __future__ import annotations

from PIL import Image

from vqtool.data.images import UnreadableImage, read_image
from vqtool.errors import VQError, first_line

SAMPLE_PHOTO = "china.jpg"


def read_photo(path: str | None, channels: int) -> tuple[Image.Image, str]:
    """(RGB or L image, where it came from); scikit-learn's sample photo when ``path`` is None."""
    if path is None:
        return sample_photo(channels), f"{SAMPLE_PHOTO} (scikit-learn sample)"
    try:
        return read_image(path, channels), path
    except UnreadableImage as error:
        if isinstance(error.__cause__, FileNotFoundError):
            raise VQError(f"{path}: no such image file", usage=True) from error
        raise VQError(f"{path}: not an image vqtool can read ({first_line(error)})", usage=True) from error


def sample_photo(channels: int) -> Image.Image:
    from sklearn.datasets import load_sample_image

    image = Image.fromarray(load_sample_image(SAMPLE_PHOTO))
    return image.convert("L" if channels == 1 else "RGB")
