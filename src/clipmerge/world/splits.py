"""The splits of the demo world: what each one mirrors, its style and its classes.

Shifted sets keep a sorted subset of the classes, as ImageNet-R and ImageNet-A keep 200 of 1000
classes and ObjectNet 113: an evaluator keeps the subset's logit columns (ImageFolder labels follow
the sorted folder names, and the subsets are sorted in head order).
"""

from __future__ import annotations

from dataclasses import dataclass

from clipmerge.world.shapes import CLASSES

# Pre-training covers every style, like CLIP's web data covers photos, art, sketches and odd views.
PRETRAIN_MIX: dict[str, float] = {"photo": 0.4, "rendition": 0.15, "sketch": 0.15, "pose": 0.15, "clutter": 0.15}

R_CLASSES = ("arrow", "circle", "heart", "square", "star", "triangle")
OBJECTNET_CLASSES = ("arrow", "cross", "diamond", "heart", "hexagon", "square", "triangle")
A_CLASSES = ("circle", "cross", "diamond", "hexagon", "ring", "star")


@dataclass(frozen=True)
class Split:
    """One split of the world.

    Attributes:
        name: folder name under the world root.
        stream: the split's random-stream id. Fixed forever: it makes every image depend only on
            (seed, split, class, index), never on the sizes of other splits.
        role: ``pretrain``, ``train``, ``test`` (in-distribution) or ``shift``.
        style: a key of ``styles.STYLES``, or ``mixed`` (pre-training, see PRETRAIN_MIX).
        classes: the classes with a folder in this split (sorted).
        mirrors: the real dataset this split stands in for.
        description: what differs from the test set.
    """

    name: str
    stream: int
    role: str
    style: str
    classes: tuple[str, ...]
    mirrors: str
    description: str


SPLITS: tuple[Split, ...] = (
    Split(
        name="pretrain",
        stream=0,
        role="pretrain",
        style="mixed",
        classes=CLASSES,
        mirrors="CLIP's web pre-training data",
        description="Captioned images for contrastive pre-training in every style (photo 40 %; rendition, sketch, "
        "pose, clutter 15 % each), several caption phrasings per style.",
    ),
    Split(
        name="train",
        stream=1,
        role="train",
        style="photo",
        classes=CLASSES,
        mirrors="ImageNet train",
        description="Fine-tuning set: photos only, balanced; half of the objects have their class's typical colour.",
    ),
    Split(
        name="test",
        stream=2,
        role="test",
        style="photo",
        classes=CLASSES,
        mirrors="ImageNet val",
        description="In-distribution test set: a fresh sample of the training distribution.",
    ),
    Split(
        name="v2",
        stream=3,
        role="shift",
        style="photo_drift",
        classes=CLASSES,
        mirrors="ImageNet-V2",
        description="The photo process re-collected with mild drift: smaller, lower-contrast, noisier, sometimes "
        "blurred objects; typical colour 35 % of the time instead of 50 %.",
    ),
    Split(
        name="r",
        stream=4,
        role="shift",
        style="rendition",
        classes=R_CLASSES,
        mirrors="ImageNet-R",
        description="Renditions: flat fill with a dark outline in a cartoon palette photos never use, flat pastel or "
        "white backgrounds, no noise.",
    ),
    Split(
        name="sketch",
        stream=5,
        role="shift",
        style="sketch",
        classes=CLASSES,
        mirrors="ImageNet-Sketch",
        description="Grey hand-drawn outlines, sometimes doubled or hatched, on white paper; no colour at all.",
    ),
    Split(
        name="objectnet",
        stream=6,
        role="shift",
        style="pose",
        classes=OBJECTNET_CLASSES,
        mirrors="ObjectNet",
        description="Rotated at least 45 degrees from the canonical pose, squashed side-on, on loud striped, "
        "checkered or dotted backgrounds; colour independent of the class.",
    ),
    Split(
        name="a",
        stream=7,
        role="shift",
        style="clutter",
        classes=A_CLASSES,
        mirrors="ImageNet-A",
        description="Hard cases: small objects among distractor blobs and lines, partly hidden behind a bar, "
        "coloured like another class (the spurious colour cue points the wrong way).",
    ),
)
