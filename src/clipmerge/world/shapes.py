"""The ten object classes of the demo world, as polygons in a unit frame.

Each shape spans about the unit disc (equal visual weight), y pointing up, in its canonical pose (arrow pointing right,
triangle and heart upright). A shape is a list of polygons drawn in order; a polygon marked as a hole
is cut out of what came before (the ring). Shapes were chosen to stay distinguishable at 32 px:
the diamond is a narrow rhombus so that a rotated square is not a diamond, and the ring's hole is
wide enough to survive downsampling.
"""

from __future__ import annotations

import numpy as np

Polygon = tuple[np.ndarray, bool]  # (vertices [N, 2], is_hole)


def _regular(n: int, radius: float = 1.0, phase_deg: float = 90.0) -> np.ndarray:
    angles = np.deg2rad(phase_deg) + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    outer = _regular(2 * points)
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return outer * radii[:, None]


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    points = np.stack([x, y + 2.5], axis=1)  # +2.5 centres the curve's bounding box vertically
    return points / np.abs(points).max()


def _cross(arm: float = 0.3) -> np.ndarray:
    """A plus sign with arms ``arm`` half-wide: one arm's three corners, turned four times."""
    quarter = np.array([(-arm, 1.0), (arm, 1.0), (arm, arm)])
    clockwise = np.array([[0.0, -1.0], [1.0, 0.0]])  # row vector (x, y) -> (y, -x)
    return np.vstack([quarter @ np.linalg.matrix_power(clockwise, k) for k in range(4)])


def _from_list(points: list[tuple[float, float]]) -> np.ndarray:
    return np.asarray(points, dtype=np.float64)


SHAPES: dict[str, list[Polygon]] = {
    "arrow": [
        (
            _from_list([(-1, 0.22), (0.15, 0.22), (0.15, 0.62), (1, 0), (0.15, -0.62), (0.15, -0.22), (-1, -0.22)]),
            False,
        )
    ],
    "circle": [(_regular(64), False)],
    "cross": [(_cross(), False)],
    "diamond": [(_from_list([(0, 1), (0.58, 0), (0, -1), (-0.58, 0)]), False)],
    "heart": [(_heart(), False)],
    "hexagon": [(_regular(6, radius=0.95, phase_deg=0.0), False)],
    "ring": [(_regular(64), False), (_regular(64, radius=0.55), True)],
    "square": [(_regular(4, radius=0.8 * np.sqrt(2), phase_deg=45.0), False)],
    "star": [(_star(), False)],
    "triangle": [(_regular(3), False)],
}

CLASSES: tuple[str, ...] = tuple(sorted(SHAPES))
