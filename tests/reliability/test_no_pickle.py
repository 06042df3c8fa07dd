"""Loading never unpickles untrusted data: a static scan of src/ and a pickle given where a checkpoint is expected.

The scan resolves import aliases (``import torch as t``, ``from torch import load``) and flags:
pickle-family imports, ``torch.load``/open_clip loaders without an explicit ``weights_only=True``,
``torch.jit.load``, ``numpy.load(allow_pickle=True)`` and ``read_pickle``.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

from clipmerge.cli import main

SRC = Path(__file__).resolve().parents[2] / "src" / "clipmerge"
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
# Loaders that unpickle unless told weights_only=True (open_clip forwards it to torch.load).
NEEDS_WEIGHTS_ONLY = {
    "torch.load", "torch.serialization.load", "open_clip.load_checkpoint", "open_clip.factory.load_checkpoint",
    "open_clip.load_state_dict", "open_clip.factory.load_state_dict",
}
FORBIDDEN_CALLS = {"torch.jit.load", "pandas.read_pickle", "numpy.lib.format.read_array"}


def _aliases(tree: ast.AST) -> dict[str, str]:
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id), *reversed(parts)])


def _keyword_is(call: ast.Call, name: str, value) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords)


def unsafe_loads(source: str, filename: str = "<src>") -> tuple[list[str], int]:
    """(problems as 'file:line: what', number of checked loader calls) for one module's source."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    problems, checked = [], 0
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                if module.split(".")[0] in PICKLE_MODULES:
                    problems.append(f"{filename}:{node.lineno}: imports {module}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        if name in NEEDS_WEIGHTS_ONLY:
            checked += 1
            if not _keyword_is(node, "weights_only", True):
                problems.append(f"{filename}:{node.lineno}: {name} without weights_only=True")
        elif name in FORBIDDEN_CALLS or (name or "").endswith(".read_pickle"):
            problems.append(f"{filename}:{node.lineno}: {name}")
        elif name in {"numpy.load", "np.load"}:
            checked += 1
            if not _keyword_is(node, "allow_pickle", False) and any(k.arg == "allow_pickle" for k in node.keywords):
                problems.append(f"{filename}:{node.lineno}: {name} with allow_pickle")
    return problems, checked


def test_src_never_unpickles():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 40  # the whole package, not an empty glob
    problems, checked = [], 0
    for path in files:
        found, n = unsafe_loads(path.read_text(), str(path.relative_to(SRC.parent)))
        problems += found
        checked += n
    assert problems == []
    assert checked >= 1  # models.create_clip's open_clip.load_checkpoint(..., weights_only=True) was seen


@pytest.mark.parametrize(
    "source",
    [
        "import torch\ntorch.load(f)",
        "import torch\ntorch.load(f, weights_only=False)",
        "import torch as t\nt.load(f, map_location='cpu')",
        "from torch import load\nload(f)",
        "import torch\ntorch.load(f, **opts)",
        "import open_clip\nopen_clip.load_checkpoint(m, p)",
        "import torch\ntorch.jit.load(f)",
        "import pickle\n",
        "from joblib import load\n",
        "import numpy as np\nnp.load(f, allow_pickle=True)",
        "import pandas as pd\npd.read_pickle(f)",
    ],
)
def test_scan_flags_unsafe_loading(source):
    """The scan is not vacuous: each of these would unpickle (or allows it) and is reported."""
    assert unsafe_loads(source)[0]


@pytest.mark.parametrize(
    "source",
    ["import torch\ntorch.load(f, weights_only=True)", "import numpy as np\nnp.load(f)",
     "from safetensors.torch import load_file\nload_file(f)"],
)
def test_scan_accepts_safe_loading(source):
    assert unsafe_loads(source)[0] == []


class _Payload:
    """Unpickling this runs ``touch <marker>``: the file appearing would prove code execution."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(params=["model.pt", "model.safetensors"])
def malicious_pt(tmp_path, request):
    """A torch.save pickle carrying a payload, as a .pt file or renamed to look like a checkpoint."""
    marker = tmp_path / "EXECUTED"
    path = tmp_path / "evil" / request.param
    path.parent.mkdir()
    torch.save({"state_dict": _Payload(marker)}, path)
    # zeroshot reads the meta.json beside its input first; give it one so the weights are reached.
    (path.parent / "meta.json").write_text('{"model": "pretrained", "arch": "clipmerge-tiny", "pretrained": "x"}')
    return path, marker


def _commands(evil: Path, tmp: Path) -> dict[str, list[str]]:
    (tmp / "imgs" / "a").mkdir(parents=True)
    (tmp / "classes.txt").write_text("a\n")
    (tmp / "heldout.txt").write_text("")
    return {
        "merge": ["merge", "--method", "uniform_soup", "--inputs", str(evil), str(evil),
                  "--out", str(tmp / "m" / "model.safetensors")],
        "evaluate": ["evaluate", "--model", str(evil), "--model-id", "x", "--set", "t", "imagefolder",
                     str(tmp / "imgs"), str(tmp / "e.json"), "--classnames", str(tmp / "classes.txt"),
                     "--workers", "0"],
        "finetune": ["finetune", "--init", str(evil), "--train-root", str(tmp / "imgs"), "--heldout",
                     str(tmp / "heldout.txt"), "--seed", "0", "--workers", "0",
                     "--out", str(tmp / "f" / "model.safetensors")],
        "greedy-soup": ["greedy-soup", "--inputs", str(evil), "--train-root", str(tmp / "imgs"), "--heldout",
                        str(tmp / "heldout.txt"), "--workers", "0", "--out", str(tmp / "g" / "model.safetensors")],
        # The two commands that accept open_clip .pt files do so through torch.load(weights_only=True).
        "fetch-pretrained": ["fetch-pretrained", "--arch", "clipmerge-tiny", "--pretrained", str(evil),
                             "--out", str(tmp / "p" / "model.safetensors")],
        "zeroshot": ["zeroshot", "--pretrained", str(evil), "--classnames", str(tmp / "classes.txt"),
                     "--templates", "a {}", "--out", str(tmp / "z" / "model.safetensors")],
    }


@pytest.mark.parametrize("command", ["merge", "evaluate", "finetune", "greedy-soup", "fetch-pretrained", "zeroshot"])
def test_a_pickle_where_a_checkpoint_is_expected_is_refused_not_run(malicious_pt, tmp_path, capsys, command):
    evil, marker = malicious_pt
    argv = _commands(evil, tmp_path / "work")[command]
    assert main(argv) == 2  # a ClipmergeError, not a traceback
    err = capsys.readouterr().err
    assert f"clipmerge {command}: error: {evil}" in err, err
    assert not marker.exists(), "unpickling ran the payload"
    out = Path(argv[argv.index("--out") + 1] if "--out" in argv else argv[argv.index("--set") + 4])
    assert not out.exists()


def test_a_plain_tensor_pt_still_loads_in_fetch_pretrained(tmp_path, tiny_clip_file):
    """weights_only=True refuses code, not weights: an open_clip-style .pt state dict is accepted."""
    from clipmerge.weights.checkpoint import load_weights

    state = load_weights(tiny_clip_file)
    pt = tmp_path / "clip.pt"
    torch.save({"state_dict": state}, pt)
    out = tmp_path / "fetched" / "model.safetensors"
    assert main(["fetch-pretrained", "--arch", "clipmerge-tiny", "--pretrained", str(pt), "--out", str(out)]) == 0
    fetched = load_weights(out)
    assert all(torch.equal(fetched[k], v) for k, v in state.items())


def test_payload_would_run_if_unpickled_unsafely(malicious_pt):
    """Guards the test above: the payload really executes under a plain unpickler."""
    evil, marker = malicious_pt
    with open(evil, "rb") as fh:  # a file object: torch.load would hand a *.safetensors path to safetensors
        torch.load(fh, weights_only=False)  # the unsafe call the scan forbids in src/
    assert marker.exists()
