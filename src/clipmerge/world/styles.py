"""Image styles: each one samples a scene for a class and draws it.

A style is ``style(rng, cls, size) -> (image, Scene)``: ``image`` a float array [size, size, 3] and
``Scene`` the attributes that captions and tests read. The styles mirror ImageNet and its shifts:

- ``photo`` (ImageNet): a shaded object in its canonical pose on a muted plain, shaded or textured
  background, with pixel noise. Half of the objects have their class's typical colour (hearts are
  red, stars yellow): a spurious cue that fine-tuning can latch onto, like ImageNet's contexts.
- ``photo_drift`` (ImageNet-V2): the same process re-collected: slightly smaller, lower-contrast,
  noisier, sometimes blurred objects, and the typical colour a little less often.
- ``rendition`` (ImageNet-R): flat fill and a dark outline in a palette photos never use, no noise.
- ``sketch`` (ImageNet-Sketch): grey hand-drawn outlines, sometimes hatched, on white paper.
- ``pose`` (ObjectNet): any rotation, a side-on squash, loud striped/checkered/dotted backgrounds, and
  no class-typical colour (ObjectNet controls for pose, viewpoint and background).
- ``clutter`` (ImageNet-A): a small object among distractor blobs and lines, partly hidden behind
  a bar, in a colour typical of *another* class (the spurious cue points the wrong way).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from clipmerge.world.render import (
    RGB,
    Pose,
    add_noise,
    blur,
    composite,
    fill_mask,
    gradient,
    grid,
    hsv,
    line_mask,
    outline_mask,
    pattern,
    plain,
    polygon_mask,
    ramp,
    textured,
)

# Colour words used in captions. Photos use everyday colours; renditions a palette photos never use.
PHOTO_COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (0.08, 0.08, 0.08),
    "blue": (0.12, 0.28, 0.85),
    "brown": (0.45, 0.27, 0.12),
    "green": (0.15, 0.6, 0.2),
    "grey": (0.5, 0.5, 0.5),
    "orange": (0.95, 0.5, 0.08),
    "purple": (0.45, 0.15, 0.65),
    "red": (0.8, 0.12, 0.1),
    "white": (0.95, 0.95, 0.95),
    "yellow": (0.95, 0.85, 0.12),
}
CARTOON_COLOURS: dict[str, tuple[float, float, float]] = {
    "cyan": (0.1, 0.85, 0.9),
    "lavender": (0.72, 0.62, 0.98),
    "lime": (0.62, 0.98, 0.15),
    "magenta": (0.88, 0.1, 0.78),
    "pink": (1.0, 0.5, 0.72),
    "teal": (0.0, 0.5, 0.5),
}
# One distinct typical colour per class: the world's "context" (a cow is usually on grass).
TYPICAL_COLOUR: dict[str, str] = {
    "arrow": "purple",
    "circle": "orange",
    "cross": "white",
    "diamond": "blue",
    "heart": "red",
    "hexagon": "black",
    "ring": "grey",
    "square": "brown",
    "star": "yellow",
    "triangle": "green",
}
PHOTO_BACKGROUNDS = ("plain", "shaded", "textured")
UNUSUAL_BACKGROUNDS = ("striped", "checkered", "dotted")
_PATTERN_OF = {"striped": "stripes", "checkered": "checkers", "dotted": "dots"}


@dataclass(frozen=True)
class Scene:
    """What was drawn, for captions and tests. ``radius`` is a fraction of the image side."""

    cls: str
    style: str
    radius: float
    colour: str | None = None
    background: str | None = None


@dataclass(frozen=True)
class PhotoLook:
    """Parameters of the photo process; ImageNet-V2 is the same process with other values.

    Attributes:
        radius: range of the object radius (fraction of the image side).
        context: probability that the object has its class's typical colour.
        fade: range of the blend of the object colour towards the background (less contrast).
        noise: range of the pixel noise standard deviation.
        blur: probability of a slight Gaussian blur.
    """

    radius: tuple[float, float]
    context: float
    fade: tuple[float, float]
    noise: tuple[float, float]
    blur: float


PHOTO = PhotoLook(radius=(0.28, 0.40), context=0.5, fade=(0.0, 0.1), noise=(0.01, 0.04), blur=0.0)
PHOTO_DRIFT = PhotoLook(radius=(0.24, 0.38), context=0.35, fade=(0.05, 0.25), noise=(0.02, 0.06), blur=0.5)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _jitter(rng: np.random.Generator, colour: Sequence[float], amount: float = 0.05) -> RGB:
    return np.clip(np.asarray(colour, np.float32) + rng.uniform(-amount, amount, 3).astype(np.float32), 0, 1)


def _muted(rng: np.random.Generator) -> RGB:
    return hsv(rng.random(), rng.uniform(0.05, 0.35), rng.uniform(0.3, 0.9))


def _loud(rng: np.random.Generator) -> RGB:
    return hsv(rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.4, 0.95))


def _contrasting(rng: np.random.Generator, sample: Callable[[], RGB], against: RGB, distance: float) -> RGB:
    """A colour from ``sample`` at least ``distance`` (RGB Euclidean) away from ``against``, so the
    object stays visible; after 20 tries the last one is kept."""
    for _ in range(20):
        colour = sample()
        if np.linalg.norm(colour - against) >= distance:
            break
    return colour


def _centre(rng: np.random.Generator, radius: float, jitter: float) -> tuple[float, float]:
    """A centre at most ``jitter`` from the middle that keeps the object inside the image."""
    room = min(jitter, max(0.0, 0.48 - radius))
    return 0.5 + rng.uniform(-room, room), 0.5 + rng.uniform(-room, room)


def _lit(size: int, colour: RGB, pose: Pose, strength: float, light_deg: float) -> np.ndarray:
    """The object's colour under a directional light: brighter on one side, darker on the other."""
    x, y = grid(size)
    a = np.deg2rad(light_deg)
    t = ((x - pose.cx) * np.cos(a) + (y - pose.cy) * np.sin(a)) / pose.radius
    return np.clip(colour * (1.0 - strength * np.clip(t, -1.5, 1.5))[..., None], 0, 1)


def _solid_object(
    rng: np.random.Generator, canvas: np.ndarray, cls: str, pose: Pose, colour: RGB, shadow: float
) -> np.ndarray:
    """A shaded object, with a drop shadow with probability ``shadow``."""
    size = canvas.shape[0]
    if rng.random() < shadow:
        canvas = canvas * (1.0 - 0.35 * fill_mask(cls, pose.shifted(0.03, 0.04), size))[..., None]
    paint = _lit(size, colour, pose, rng.uniform(0.1, 0.3), rng.uniform(0, 360))
    return composite(canvas, fill_mask(cls, pose, size), paint)


def _photo_background(rng: np.random.Generator, size: int, kind: str, base: RGB) -> np.ndarray:
    if kind == "plain":
        return plain(size, base)
    if kind == "shaded":
        return gradient(size, base, np.clip(base * rng.uniform(0.5, 1.5), 0, 1), rng.uniform(0, 360))
    return textured(rng, size, base, rng.uniform(0.08, 0.2), int(rng.integers(3, 7)))


def _photo_with(look: PhotoLook, style: str) -> Callable[[np.random.Generator, str, int], tuple]:
    def draw(rng: np.random.Generator, cls: str, size: int) -> tuple[np.ndarray, Scene]:
        word = TYPICAL_COLOUR[cls] if rng.random() < look.context else _pick(rng, tuple(PHOTO_COLOURS))
        colour = _jitter(rng, PHOTO_COLOURS[word])
        base = _contrasting(rng, lambda: _muted(rng), colour, 0.35)
        kind = _pick(rng, PHOTO_BACKGROUNDS)
        canvas = _photo_background(rng, size, kind, base)
        radius = rng.uniform(*look.radius)
        pose = Pose(*_centre(rng, radius, 0.08), radius, angle=rng.uniform(-15, 15), squash=rng.uniform(0.9, 1))
        fade = rng.uniform(*look.fade)
        canvas = _solid_object(rng, canvas, cls, pose, (1 - fade) * colour + fade * base, shadow=0.5)
        canvas = add_noise(rng, canvas, rng.uniform(*look.noise))
        if rng.random() < look.blur:
            canvas = blur(canvas, rng.uniform(0.4, 0.7))
        return canvas, Scene(cls, style, radius, word, kind)

    draw.__doc__ = f"The ``{style}`` style (see the module docstring)."
    return draw


photo = _photo_with(PHOTO, "photo")
photo_drift = _photo_with(PHOTO_DRIFT, "photo_drift")


def rendition(rng: np.random.Generator, cls: str, size: int) -> tuple[np.ndarray, Scene]:
    """Flat fill, thick dark outline, unusual palette, flat pastel or white background, no noise."""
    word = _pick(rng, tuple(CARTOON_COLOURS))
    fill = np.asarray(CARTOON_COLOURS[word], np.float32)
    others = [c for c in CARTOON_COLOURS if c != word]
    pastel = [0.45 * np.asarray(CARTOON_COLOURS[_pick(rng, others)], np.float32) + 0.55 for _ in range(2)]
    kind = _pick(rng, ("plain", "white", "split"))
    if kind == "white":
        canvas = plain(size, (1.0, 1.0, 1.0))
    elif kind == "plain":
        canvas = plain(size, pastel[0])
    else:  # two flat halves, a comic-panel look
        canvas = np.where((ramp(size, rng.uniform(0, 360)) < 0.5)[..., None], pastel[0], pastel[1])
    radius = rng.uniform(0.26, 0.40)
    pose = Pose(*_centre(rng, radius, 0.08), radius, angle=rng.uniform(-30, 30), squash=rng.uniform(0.8, 1))
    ink = fill * 0.25 if rng.random() < 0.5 else np.full(3, rng.uniform(0.0, 0.15), np.float32)
    canvas = composite(canvas, fill_mask(cls, pose, size), fill)
    canvas = composite(canvas, outline_mask(cls, pose, size, rng.uniform(1.2, 2.0) * size / 32), ink)
    return canvas, Scene(cls, "rendition", radius, word, kind)


def sketch(rng: np.random.Generator, cls: str, size: int) -> tuple[np.ndarray, Scene]:
    """Wobbly grey pencil outline (sometimes doubled, sometimes hatched) on white paper; no colour."""
    scale = size / 32
    canvas = plain(size, np.full(3, rng.uniform(0.9, 1.0), np.float32))
    ink = np.full(3, rng.uniform(0.05, 0.4), np.float32)
    radius = rng.uniform(0.26, 0.42)
    pose = Pose(*_centre(rng, radius, 0.08), radius, angle=rng.uniform(-20, 20), squash=rng.uniform(0.9, 1))
    if rng.random() < 0.5:
        hatch = pattern(size, "stripes", (0, 0, 0), (1, 1, 1), 4 * scale, rng.uniform(0, 180), duty=0.25)[..., 0]
        canvas = composite(canvas, 0.5 * hatch * fill_mask(cls, pose, size), ink)
    strokes = outline_mask(cls, pose, size, rng.uniform(0.8, 1.4) * scale, rng, wobble=0.03)
    if rng.random() < 0.5:
        second = outline_mask(cls, pose, size, 0.8 * scale, rng, wobble=0.05)
        strokes = np.maximum(strokes, 0.7 * second)
    canvas = composite(canvas, strokes, ink)
    return add_noise(rng, canvas, 0.015, grey=True), Scene(cls, "sketch", radius)


def pose(rng: np.random.Generator, cls: str, size: int) -> tuple[np.ndarray, Scene]:
    """A photo-like object at any rotation, squashed side-on, on a loud patterned background."""
    word = _pick(rng, tuple(PHOTO_COLOURS))  # no typical colour: the context is controlled
    colour = _jitter(rng, PHOTO_COLOURS[word])
    kind = _pick(rng, UNUSUAL_BACKGROUNDS)
    first, second = (_contrasting(rng, lambda: _loud(rng), colour, 0.3) for _ in range(2))
    period = rng.uniform(3, 7) * size / 32
    canvas = pattern(size, _PATTERN_OF[kind], first, second, period, rng.uniform(0, 180))
    radius = rng.uniform(0.26, 0.40)
    angle = rng.uniform(45, 315)  # at least 45 degrees away from the canonical pose
    pose_ = Pose(*_centre(rng, radius, 0.12), radius, angle=angle, squash=rng.uniform(0.55, 0.85))
    canvas = _solid_object(rng, canvas, cls, pose_, colour, shadow=0.5)
    return add_noise(rng, canvas, rng.uniform(0.01, 0.04)), Scene(cls, "pose", radius, word, kind)


def _blob(rng: np.random.Generator) -> np.ndarray:
    """An irregular polygon (a distractor that is none of the classes), in image fractions."""
    centre = rng.uniform(0.1, 0.9, 2)
    n = int(rng.integers(5, 9))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.5, 1.0, n) * rng.uniform(0.04, 0.1)
    return centre + np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]


def _bar_across(rng: np.random.Generator, pose_: Pose) -> np.ndarray:
    """A long bar passing off-centre over the object: it hides about 15-30 % of it."""
    a = rng.uniform(0, np.pi)
    along = np.array([np.cos(a), np.sin(a)])
    normal = np.array([-np.sin(a), np.cos(a)])
    offset = rng.uniform(0.35, 0.8) * pose_.radius * (1 if rng.random() < 0.5 else -1)
    centre = np.array([pose_.cx, pose_.cy]) + offset * normal
    half_len, half_wid = rng.uniform(1.5, 3.0) * pose_.radius, rng.uniform(0.15, 0.3) * pose_.radius
    corners = [(1, 1), (1, -1), (-1, -1), (-1, 1)]
    return np.stack([centre + s * half_len * along + t * half_wid * normal for s, t in corners])


def clutter(rng: np.random.Generator, cls: str, size: int) -> tuple[np.ndarray, Scene]:
    """A small, partly hidden object among distractors, in a colour typical of another class."""
    word = _pick(rng, tuple(c for c in PHOTO_COLOURS if c != TYPICAL_COLOUR[cls]))
    colour = _jitter(rng, PHOTO_COLOURS[word])
    base = _contrasting(rng, lambda: _muted(rng), colour, 0.25)
    canvas = textured(rng, size, base, rng.uniform(0.1, 0.25), int(rng.integers(4, 9)))
    for _ in range(int(rng.integers(2, 6))):
        paint = _jitter(rng, PHOTO_COLOURS[_pick(rng, tuple(PHOTO_COLOURS))], 0.1)
        canvas = composite(canvas, polygon_mask([_blob(rng)], size), paint)
    segments = [(rng.uniform(0, 1, 2), rng.uniform(0, 1, 2)) for _ in range(int(rng.integers(1, 4)))]
    canvas = composite(canvas, line_mask(segments, size, size / 32), _muted(rng))
    radius = rng.uniform(0.17, 0.25)
    pose_ = Pose(*_centre(rng, radius, 0.5), radius, angle=rng.uniform(-25, 25), squash=rng.uniform(0.85, 1))
    canvas = _solid_object(rng, canvas, cls, pose_, colour, shadow=0.3)
    canvas = composite(canvas, polygon_mask([_bar_across(rng, pose_)], size), _muted(rng))
    return add_noise(rng, canvas, rng.uniform(0.02, 0.05)), Scene(cls, "clutter", radius, word, "cluttered")


STYLES: dict[str, Callable[[np.random.Generator, str, int], tuple[np.ndarray, Scene]]] = {
    "photo": photo,
    "photo_drift": photo_drift,
    "rendition": rendition,
    "sketch": sketch,
    "pose": pose,
    "clutter": clutter,
}
