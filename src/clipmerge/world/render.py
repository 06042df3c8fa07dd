"""Drawing primitives: backgrounds, antialiased shape masks, compositing.

Images are float32 arrays [H, W, 3] in [0, 1] until :func:`to_png_image`. Shapes are rasterised by
PIL at SUPERSAMPLE times the final size and box-filtered down, which gives antialiased coverage
masks, so small objects keep their outline at 32 px instead of turning into jagged blobs.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from clipmerge.world.shapes import SHAPES

SUPERSAMPLE = 4
RGB = np.ndarray  # shape [3], floats in [0, 1]


@dataclass(frozen=True)
class Pose:
    """Where and how an object is drawn. Lengths are fractions of the image side.

    Attributes:
        cx: horizontal centre.
        cy: vertical centre (0 is the top).
        radius: radius of the object's unit disc.
        angle: rotation in degrees, counter-clockwise from the canonical pose.
        squash: width factor in the object's own frame before rotation (a side-on viewpoint).
    """

    cx: float
    cy: float
    radius: float
    angle: float = 0.0
    squash: float = 1.0

    def shifted(self, dx: float, dy: float) -> Pose:
        return replace(self, cx=self.cx + dx, cy=self.cy + dy)


def place(points: np.ndarray, pose: Pose, side: float) -> np.ndarray:
    """Map unit-frame vertices [N, 2] to pixel coordinates on a canvas ``side`` pixels wide."""
    x = points[:, 0] * pose.squash
    y = points[:, 1]
    a = np.deg2rad(pose.angle)
    xr = x * np.cos(a) - y * np.sin(a)
    yr = x * np.sin(a) + y * np.cos(a)
    # Image rows grow downwards, the unit frame's y grows upwards.
    return np.stack([(pose.cx + pose.radius * xr) * side, (pose.cy - pose.radius * yr) * side], axis=1)


def rasterize(size: int, draw: Callable[[ImageDraw.ImageDraw, int], None]) -> np.ndarray:
    """Coverage mask [size, size] in [0, 1] of whatever ``draw(canvas, side)`` paints with value 255."""
    side = size * SUPERSAMPLE
    big = Image.new("L", (side, side), 0)
    draw(ImageDraw.Draw(big), side)
    small = big.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _xy(points: np.ndarray) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in points]


def fill_mask(cls: str, pose: Pose, size: int) -> np.ndarray:
    """Coverage mask of the filled shape of class ``cls``."""

    def draw(canvas: ImageDraw.ImageDraw, side: int) -> None:
        for points, is_hole in SHAPES[cls]:
            canvas.polygon(_xy(place(points, pose, side)), fill=0 if is_hole else 255)

    return rasterize(size, draw)


def outline_mask(
    cls: str, pose: Pose, size: int, width_px: float, rng: np.random.Generator | None = None, wobble: float = 0.0
) -> np.ndarray:
    """Coverage mask of the shape's outline, ``width_px`` final pixels wide.

    ``wobble`` jitters every vertex by that fraction of the radius (a hand-drawn stroke); it needs ``rng``.
    """

    def draw(canvas: ImageDraw.ImageDraw, side: int) -> None:
        for points, _ in SHAPES[cls]:
            xy = place(points, pose, side)
            if wobble:
                xy = xy + rng.normal(0.0, wobble * pose.radius * side, xy.shape)
            closed = np.vstack([xy, xy[:1]])
            canvas.line(_xy(closed), fill=255, width=max(1, round(width_px * SUPERSAMPLE)), joint="curve")

    return rasterize(size, draw)


def polygon_mask(points_frac: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Coverage mask of free polygons given in image-fraction coordinates (distractors, occluders)."""

    def draw(canvas: ImageDraw.ImageDraw, side: int) -> None:
        for points in points_frac:
            canvas.polygon(_xy(points * side), fill=255)

    return rasterize(size, draw)


def line_mask(segments: Sequence[tuple[np.ndarray, np.ndarray]], size: int, width_px: float) -> np.ndarray:
    """Coverage mask of straight segments (start, end) in image-fraction coordinates."""

    def draw(canvas: ImageDraw.ImageDraw, side: int) -> None:
        for start, end in segments:
            canvas.line(_xy(np.stack([start, end]) * side), fill=255, width=max(1, round(width_px * SUPERSAMPLE)))

    return rasterize(size, draw)


def composite(canvas: np.ndarray, mask: np.ndarray, paint: np.ndarray) -> np.ndarray:
    """Paint ``paint`` (an RGB colour or an image) over ``canvas`` with coverage ``mask``."""
    m = mask[..., None]
    return canvas * (1.0 - m) + paint * m


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) as image fractions, each [size, size]."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(c, c)


def ramp(size: int, angle_deg: float) -> np.ndarray:
    """Linear ramp [size, size] from 0 to 1 along direction ``angle_deg``."""
    x, y = grid(size)
    a = np.deg2rad(angle_deg)
    t = (x - 0.5) * np.cos(a) + (y - 0.5) * np.sin(a)
    return (t - t.min()) / (t.max() - t.min())


def plain(size: int, colour: RGB) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, np.float32), (size, size, 3)).copy()


def gradient(size: int, start: RGB, end: RGB, angle_deg: float) -> np.ndarray:
    t = ramp(size, angle_deg)[..., None]
    return (1.0 - t) * np.asarray(start, np.float32) + t * np.asarray(end, np.float32)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise [size, size], zero mean and about unit spread: a cells x cells grid, upsampled."""
    coarse = rng.normal(0.0, 1.0, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))


def textured(rng: np.random.Generator, size: int, colour: RGB, amplitude: float, cells: int) -> np.ndarray:
    """A surface of ``colour`` whose brightness varies smoothly (cloth, grass, a wall)."""
    shade = 1.0 + amplitude * smooth_noise(rng, size, cells)
    return np.asarray(colour, np.float32) * shade[..., None]


def pattern(
    size: int, kind: str, first: RGB, second: RGB, period_px: float, angle_deg: float, duty: float = 0.5
) -> np.ndarray:
    """Two-colour periodic background: ``stripes``, ``checkers`` or ``dots``.

    ``duty`` is the fraction of each stripe period painted in ``second`` (stripes only).
    """
    x, y = grid(size)
    a = np.deg2rad(angle_deg)
    u = ((x - 0.5) * np.cos(a) + (y - 0.5) * np.sin(a)) * size / period_px
    v = (-(x - 0.5) * np.sin(a) + (y - 0.5) * np.cos(a)) * size / period_px
    if kind == "stripes":
        second_mask = (u % 1.0) < duty
    elif kind == "checkers":
        second_mask = (np.floor(u) + np.floor(v)) % 2 == 0
    elif kind == "dots":
        second_mask = (u % 1.0 - 0.5) ** 2 + (v % 1.0 - 0.5) ** 2 < 0.09
    else:
        raise ValueError(f"unknown pattern {kind!r}")
    return np.where(second_mask[..., None], np.asarray(second, np.float32), np.asarray(first, np.float32))


def hsv(h: float, s: float, v: float) -> RGB:
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def add_noise(rng: np.random.Generator, image: np.ndarray, sigma: float, grey: bool = False) -> np.ndarray:
    """Gaussian pixel noise; ``grey`` adds the same noise to all channels (keeps a grey image grey)."""
    shape = image.shape[:2] + ((1,) if grey else (3,))
    return image + rng.normal(0.0, sigma, shape).astype(np.float32)


def blur(image: np.ndarray, radius: float) -> np.ndarray:
    pil = to_png_image(image).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(pil, dtype=np.float32) / 255.0


def to_png_image(image: np.ndarray) -> Image.Image:
    """Quantise a float image to an 8-bit RGB PIL image."""
    return Image.fromarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
