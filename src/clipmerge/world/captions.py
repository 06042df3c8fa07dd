"""Captions for the pre-training images, and the zero-shot templates that match them.

Every caption names the class and describes only what was drawn. Each style has several phrasings
so that the text tower sees the class name in varied contexts, as in web captions. Captions stay at
most 12 words of common English (half of them end with a full stop), which fits the tiny CLIP's
16-token context with its start and end tokens. The article before a class, colour or size word is
always "a", also before a vowel, so that captions and the zero-shot templates (``"a photo of a {}"``
formatted with "arrow") agree word for word.
"""

from __future__ import annotations

import numpy as np

from clipmerge.world.styles import Scene

# Per style: phrasings with the fields {cls}, {size}, {colour}, {background}.
PHRASINGS: dict[str, tuple[str, ...]] = {
    "photo": (
        "a photo of a {size} {colour} {cls} on a {background} background",
        "a photo of a {cls}",
        "a {size} {colour} {cls}",
        "a picture of a {colour} {cls}",
        "a {colour} {cls} on a {background} background",
        "a {cls}",
    ),
    "rendition": (
        "a cartoon of a {size} {colour} {cls}",
        "a rendition of a {cls}",
        "a cartoon {cls}",
        "an illustration of a {colour} {cls}",
        "a {colour} cartoon {cls}",
    ),
    "sketch": (
        "a sketch of a {cls}",
        "a pencil sketch of a {size} {cls}",
        "a black and white sketch of a {cls}",
        "a line drawing of a {cls}",
        "a drawing of a {cls}",
    ),
    "pose": (
        "a photo of a rotated {cls}",
        "a photo of a {colour} {cls} on a {background} background",
        "a tilted {colour} {cls}",
        "a rotated {cls} on a {background} background",
        "a {cls} seen from an odd angle",
    ),
    "clutter": (
        "a photo of a {size} {cls} in clutter",
        "a {size} {colour} {cls} among other things",
        "a partly hidden {cls}",
        "a cluttered photo of a {size} {colour} {cls}",
    ),
}

# Zero-shot templates, one per style family plus the bare name: the classifier averages them, like
# OpenAI's 80 ImageNet templates ("a sketch of a {}.", "a rendition of a {}.", ...).
TEMPLATES: tuple[str, ...] = (
    "a photo of a {}",
    "a {}",
    "a cartoon of a {}",
    "a rendition of a {}",
    "a sketch of a {}",
    "a drawing of a {}",
    "a photo of a rotated {}",
    "a photo of a small {} in clutter",
)


def size_word(radius: float) -> str:
    """The size adjective a captioner would use for an object of this radius ("" for medium)."""
    if radius < 0.2:
        return "tiny"
    if radius < 0.3:
        return "small"
    return "big" if radius > 0.37 else ""


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """One caption of ``scene``, in a phrasing chosen by ``rng``."""
    options = PHRASINGS[scene.style]
    text = options[int(rng.integers(len(options)))].format(
        cls=scene.cls,
        size=size_word(scene.radius),
        colour=scene.colour or "",
        background=scene.background or "",
    )
    text = " ".join(text.split())  # drop the double space an empty field leaves
    # Half end with a full stop, so templates work with and without one ("a photo of a {}.").
    return text + "." if rng.random() < 0.5 else text
