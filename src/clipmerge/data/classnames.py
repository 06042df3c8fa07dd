"""Class names of the classification head: open_clip's ImageNet list or the demo world's."""

from __future__ import annotations

import json
from pathlib import Path

from clipmerge.errors import ClipmergeError


def load_classnames(spec: str) -> list[str]:
    """``imagenet`` (open_clip.IMAGENET_CLASSNAMES), a world.json manifest, or a text file (one per line)."""
    if spec == "imagenet":
        from open_clip import IMAGENET_CLASSNAMES

        return list(IMAGENET_CLASSNAMES)
    path = Path(spec)
    if not path.is_file():
        raise ClipmergeError(f"classnames {spec!r}: neither 'imagenet' nor an existing file")
    if path.suffix == ".json":
        manifest = json.loads(path.read_text())
        if "classes" not in manifest:
            raise ClipmergeError(f"{path}: no 'classes' key")
        return list(manifest["classes"])
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ClipmergeError(f"{path}: no class names")
    return names


def load_templates(spec: str) -> list:
    """``openai_imagenet`` (80 templates), ``simple_imagenet`` (7), or a text file with one '{}' template
    per line."""
    import open_clip

    named = {
        "openai_imagenet": open_clip.OPENAI_IMAGENET_TEMPLATES,
        "simple_imagenet": open_clip.SIMPLE_IMAGENET_TEMPLATES,
    }
    if spec in named:
        return list(named[spec])
    path = Path(spec)
    if not path.is_file():
        raise ClipmergeError(f"templates {spec!r}: neither one of {sorted(named)} nor an existing file")
    templates = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    bad = [t for t in templates if "{}" not in t]
    if bad or not templates:
        raise ClipmergeError(f"{path}: every template needs a '{{}}' placeholder (bad: {bad[:2]})")
    return templates


def resolve_templates(values: list[str]) -> list:
    """One name/file (see load_templates) or literal templates containing '{}'."""
    if len(values) == 1 and "{}" not in values[0]:
        return load_templates(values[0])
    bad = [v for v in values if "{}" not in v]
    if bad:
        raise ClipmergeError(f"templates must contain '{{}}': {bad}")
    return values
