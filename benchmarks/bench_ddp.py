"""Data-parallel fine-tuning: images/s of `clipmerge finetune` on 2 ranks x 1 thread against 1 process x 1
thread, in the same run, on a compute-bound config; then what limits the ratio at GPU scale.

Both arms run the real command on the same generated ImageFolder (224 px JPEGs) and recipe (batch 16
in 2 micro-batches, so each rank computes one), gloo on the CPU. Throughput is taken from the history
the trainer writes (global images per second over the steps after the first two, which include
DataLoader start-up), so interpreter start and data loading before training are not counted.

The GPU-scale part counts the gradient all-reduce per optimizer step from the real architectures'
parameter counts (the image tower and a 1000-class head, fp32 gradients: DDP reduces in the parameters'
dtype) and converts it to time at *assumed* bus bandwidths; nothing there is measured on a GPU.

    .venv/bin/python benchmarks/bench_ddp.py             # ViT-S-32 at 224 px, ~5 min on 2 idle cores
    .venv/bin/python benchmarks/bench_ddp.py --quick     # clipmerge-tiny at 32 px: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Assumed all-reduce bus bandwidths (NCCL busbw, GB/s) for the GPU-scale estimate: not measured here.
INTERCONNECTS = {"PCIe 4.0 x16": 20.0, "NVLink (A100, 8 GPUs)": 230.0}
GPU_SCALE = (("ViT-B-32", 512), ("ViT-L-14", 512))  # the papers' fine-tuning batch
WORLD_SIZES = (2, 4, 8)


def make_task(root: Path, arch: str, images: int, size: int) -> dict[str, Path]:
    """``images`` noisy JPEGs in 4 classes, an empty held-out list and a random classifier of ``arch``."""
    import numpy as np
    import torch
    from PIL import Image

    from clipmerge.files import write_json
    from clipmerge.models.classifier import new_classifier, save_classifier

    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / "train" / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    (root / "heldout.txt").write_text("")
    init = root / "zeroshot" / "model.safetensors"
    torch.manual_seed(0)
    save_classifier(new_classifier(arch, 4), init, arch)
    write_json(init.with_name("meta.json"), {"model": "zeroshot", "pretrained": "benchmark"})
    return {"train": root / "train", "heldout": root / "heldout.txt", "init": init}


def images_per_s(task: dict, out: Path, ranks: int, steps: int, batch: int) -> float:
    """Global training throughput of `clipmerge finetune --ranks <ranks>`, one thread per rank."""
    cmd = [sys.executable, "-m", "clipmerge", "finetune", "--init", str(task["init"]), "--train-root",
           str(task["train"]), "--heldout", str(task["heldout"]), "--out", str(out / "model.safetensors"),
           "--seed", "0", "--steps", str(steps), "--batch-size", str(batch), "--accum-steps", "2",
           "--warmup-steps", "1", "--workers", "0", "--device", "cpu", "--checkpoint-every", "0", "--ranks", str(ranks)]
    subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True, capture_output=True)
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    timed = history[2:]
    seconds = timed[-1]["elapsed_s"] - history[1]["elapsed_s"]
    return len(timed) * batch / seconds


def all_reduce_table() -> None:
    from clipmerge.models.classifier import new_classifier

    print("\nGradient all-reduce per optimizer step at GPU scale (ring all-reduce moves 2(W-1)/W x the gradient")
    print("bytes per rank; DDP overlaps it with the backward pass, so it costs time only where it exceeds it):")
    print("| arch | parameters | fp32 gradient MB | W | MB moved per rank | "
          + " | ".join(f"ms at {name} ({bw:.0f} GB/s, assumed)" for name, bw in INTERCONNECTS.items()) + " |")
    print("|---|---|---|---|---|" + "---|" * len(INTERCONNECTS))
    for arch, _ in GPU_SCALE:
        params = sum(p.numel() for p in new_classifier(arch, 1000).parameters())
        grad_mb = params * 4 / 1e6
        for world in WORLD_SIZES:
            moved = grad_mb * 2 * (world - 1) / world
            times = " | ".join(f"{moved / 1e3 / bw * 1e3:.1f}" for bw in INTERCONNECTS.values())
            print(f"| {arch} | {params / 1e6:.1f} M | {grad_mb:.0f} | {world} | {moved:.0f} | {times} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="clipmerge-tiny at 32 px (a smoke test)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2, help="alternating pairs of runs (the best of each arm)")
    args = parser.parse_args()
    arch, size, batch = ("clipmerge-tiny", 32, 64) if args.quick else ("ViT-S-32", 224, 64)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        task = make_task(root, arch, images=batch * 4, size=size)
        load_before = os.getloadavg()[0]
        runs = {1: [], 2: []}
        for repeat in range(args.repeats):  # alternating, so a burst of load elsewhere hits both arms alike
            for ranks in runs:
                runs[ranks].append(images_per_s(task, root / f"r{ranks}_{repeat}", ranks, args.steps, batch))
        load_after = os.getloadavg()[0]
    print(f"{arch} at {size} px, batch {batch} (2 micro-batches), {args.steps} steps, gloo on CPU, "
          f"{os.cpu_count()} cores, load average {load_before:.2f} before / {load_after:.2f} after")
    single = max(runs[1])
    print("| arm | images/s (each run) | best | ratio of bests |")
    print("|---|---|---|---|")
    for ranks, label in ((1, "1 process x 1 thread (baseline)"), (2, "2 ranks x 1 thread")):
        each = ", ".join(f"{r:.2f}" for r in runs[ranks])
        print(f"| {label} | {each} | {max(runs[ranks]):.2f} | {max(runs[ranks]) / single:.2f} |")
    all_reduce_table()


if __name__ == "__main__":
    main()
