"""Evaluation precision: top-1 and top-class ties of a study's models at fp32 vs bf16.

Three arms per (model, set), on the same decoded images, on the CPU (bf16 autocast runs there too, so
CUDA's numerics are emulated, not its speed):

- ``fp32`` (the baseline, eval.precision: fp32): everything in fp32.
- ``amp_bf16`` (eval.precision: amp_bf16): the image tower under bf16 autocast, the head in fp32 on
  its output (ImageClassifier.classify), as clipmerge evaluates.
- ``bf16_head``: the whole forward under bf16 autocast, head included (what the CUDA path did before
  the head was moved out of autocast): bf16 logits.

Prints, per arm, top-1 (percent), its difference from fp32 in points, and the images whose two
highest logits tie exactly.

    .venv/bin/python benchmarks/bench_precision.py --study demo            # after `make demo`
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="demo")
    parser.add_argument("--models", nargs="*", help="model ids (default: every model with an eval/ folder)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from torch.utils.data import DataLoader

    from clipmerge import layout
    from clipmerge.data.classnames import load_classnames
    from clipmerge.evaluation.evaluate import SetSource, open_eval_set
    from clipmerge.evaluation.predict import topk_accuracy
    from clipmerge.models.classifier import load_classifier
    from clipmerge.models.clip import eval_transform, preprocess_cfg
    from clipmerge.weights.checkpoint import classifier_arch

    torch.set_num_threads(args.threads)
    study = layout.study_dir(args.study)
    models = args.models or sorted(p.name for p in Path(study, "eval").iterdir())
    classnames = load_classnames(layout.world_manifest(args.study))
    print(f"study {args.study}: {len(models)} models, torch threads {args.threads}, load {os.getloadavg()[0]:.2f}")
    totals = {arm: [0, 0, 0] for arm in ("fp32", "amp_bf16", "bf16_head")}  # hits, ties, n
    rows = []
    for model_id in models:
        weights = layout.model_weights(model_id, args.study)
        model = load_classifier(weights).eval()
        transform = eval_transform(preprocess_cfg(classifier_arch(weights)[0], model))
        for result in sorted(Path(study, "eval", model_id).glob("*.json")):
            record = json.loads(result.read_text())
            spec = world_root(args.study, record["eval_set"])
            eval_set = open_eval_set(SetSource(record["adapter"], spec), transform, classnames)
            arms = {arm: [] for arm in totals}
            labels = []
            with torch.inference_mode():
                for images, batch_labels in DataLoader(eval_set.dataset, batch_size=256):
                    labels.append(batch_labels)
                    arms["fp32"].append(model(images))
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        tower = model.visual(images)
                        arms["bf16_head"].append(model.head(torch.nn.functional.normalize(tower, dim=-1)).float())
                    arms["amp_bf16"].append(model.classify(tower))
            labels = torch.cat(labels)
            for arm, logits in arms.items():
                projected = eval_set.project(torch.cat(logits))
                top1 = topk_accuracy(projected, labels, ks=(1,))[1]
                ties = int((projected.topk(2).values.diff(dim=1) == 0).sum())
                totals[arm][0] += round(top1 * len(labels) / 100)
                totals[arm][1] += ties
                totals[arm][2] += len(labels)
                rows.append((model_id, record["eval_set"], arm, top1, ties))
    by_key = {(m, s, a): (t, ties) for m, s, a, t, ties in rows}
    print("| model | set | fp32 top-1 | amp_bf16 (pt) | bf16_head (pt) | ties fp32 / amp_bf16 / bf16_head |")
    print("|---|---|---|---|---|---|")
    for model_id, eval_set in sorted({(m, s) for m, s, _, _, _ in rows}):
        base, *_ = by_key[(model_id, eval_set, "fp32")]
        amp, bf = by_key[(model_id, eval_set, "amp_bf16")], by_key[(model_id, eval_set, "bf16_head")]
        ties = "/".join(str(by_key[(model_id, eval_set, a)][1]) for a in totals)
        print(f"| {model_id} | {eval_set} | {base:.2f} | {amp[0] - base:+.2f} | {bf[0] - base:+.2f} | {ties} |")
    for arm, (hits, ties, n) in totals.items():
        print(f"{arm}: {100 * hits / n:.3f} % top-1 over {n} (model, image) pairs, {ties} exact top-class ties")


def world_root(study: str, eval_set: str) -> str:
    """The root of ``eval_set``: the demo world's split folder (external roots are the config's)."""
    from clipmerge import layout

    root = Path(layout.world_split(eval_set, study))
    if not root.is_dir():
        raise SystemExit(f"{root}: not found; this script reads the demo world's sets (run `make demo`)")
    return str(root)


if __name__ == "__main__":
    main()
