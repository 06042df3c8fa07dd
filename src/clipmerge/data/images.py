"""Decoding one image file, with an error that names the file (PIL's own does not)."""

from __future__ import annotations

from PIL import Image
from torchvision.datasets.folder import default_loader

from clipmerge.errors import ClipmergeError


def load_image(path: str) -> Image.Image:
    """The image as RGB; a truncated or unreadable file raises ClipmergeError naming it."""
    try:
        image = default_loader(path)
        image.load()  # PIL decodes lazily: force it here so a truncated file fails with its name
        return image
    except (OSError, SyntaxError, ValueError) as e:
        raise ClipmergeError(f"{path}: cannot decode image ({e})") from e
