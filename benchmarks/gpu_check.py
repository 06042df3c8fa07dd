"""The GPU check (`make gpu-check`): what can only be verified on a CUDA machine, in one short run.

Uses the machine's own torch and needs no network: clipmerge runs from this checkout (``src`` on the
path, a ``clipmerge`` shim for the workflow's jobs). Under 10 minutes on one GPU. Parts:

1. the tiny workflow (tests/workflow/tiny.yaml) end to end on CUDA, with Snakemake;
2. a few fine-tuning steps on CUDA in fp32 (training's bf16 autocast and TF32 off) against the CPU;
3. top-1 of the tiny workflow's models evaluated with bf16 autocast against fp32, on CUDA;
4. ViT-B/32 at 224 px, training and evaluation images/s with the DataLoader (JPEGs decoded and
   augmented by workers) and without it (synthetic tensors already on the GPU);
5. DDP at world size 1 under torchrun (nccl on CUDA; gloo on a CPU-only machine).

Without CUDA, parts 1-4 print "SKIPPED (no CUDA)" and part 5 runs on gloo: CI runs it so as a smoke test.

    make gpu-check                       # or: PYTHONPATH=src python3 benchmarks/gpu_check.py
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]  # clipmerge and the test fixtures, uninstalled

# Part 2: ||w_cuda - w_cpu|| / ||w_cpu - w_init|| after FP32_STEPS steps. Both run fp32 arithmetic in
# different kernels; Adam turns that rounding into at most lr-sized differences where a gradient entry is
# near 0, so the budget is relative to how far training moved the weights: 1 %.
FP32_STEPS, FP32_RELATIVE_TOLERANCE = 3, 1e-2
THROUGHPUT_STEPS, WARMUP_STEPS = 8, 2


def heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


def skipped(what: str) -> None:
    print(f"SKIPPED (no CUDA): {what}", flush=True)


def shim_env(tmp: Path) -> dict:
    """PATH with a ``clipmerge`` that runs this checkout's package with this interpreter."""
    shim = tmp / "bin" / "clipmerge"
    shim.parent.mkdir(parents=True, exist_ok=True)
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m clipmerge "$@"\n')
    shim.chmod(0o755)
    return {**os.environ, "PATH": f"{shim.parent}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
            f"{os.environ['PATH']}", "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def environment() -> bool:
    import torch

    heading("environment")
    cuda = torch.cuda.is_available()
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"cuda available: {cuda}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    if cuda:
        print(f"GPU: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, "
              f"bf16 supported: {torch.cuda.is_bf16_supported()}")
    for module in ("open_clip", "safetensors", "snakemake", "mlflow", "pandas", "matplotlib"):
        print(f"  {module}: {'present' if importlib.util.find_spec(module) else 'MISSING'}")
    return cuda


def tiny_workflow(tmp: Path, cuda: bool) -> Path | None:
    heading("1. the tiny workflow on CUDA")
    if not cuda:
        skipped("the tiny workflow")
        return None
    if not importlib.util.find_spec("snakemake"):
        print("NOT RUN: snakemake is not installed in this Python")
        return None
    workdir = tmp / "workflow"
    workdir.mkdir()
    began = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile",
                           str(REPO / "tests/workflow/tiny.yaml"), "--cores", str(min(8, os.cpu_count())),
                           "--resources", "gpu=1"],
                          cwd=workdir, env=shim_env(tmp), capture_output=True, text=True)
    print(f"snakemake exit {proc.returncode} in {time.monotonic() - began:.0f} s")
    if proc.returncode:
        print(proc.stderr[-4000:])
        return None
    print((workdir / "results/tiny/tables/comparison.md").read_text())
    return workdir / "results/tiny"


def cuda_fp32_against_cpu(tmp: Path, cuda: bool) -> None:
    heading(f"2. {FP32_STEPS} fine-tuning steps, CUDA fp32 vs CPU")
    if not cuda:
        skipped("CUDA fp32 against CPU")
        return
    import torch

    from clipmerge.models.classifier import load_classifier
    from clipmerge.models.clip import TINY_ARCH, preprocess_cfg
    from clipmerge.training import trainer
    from clipmerge.training.recipe import Recipe
    from clipmerge.training.trainer import SeedRun, TrainData, Trainer, make_deterministic
    from fixtures.training import make_tiny_task

    make_deterministic(torch.device("cuda"))
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    task = make_tiny_task(tmp / "task")
    recipe = Recipe(batch_size=8, warmup_steps=1, lr=1e-3, steps=FP32_STEPS)
    data = TrainData.load(task["train"], task["heldout"], preprocess_cfg(TINY_ARCH), recipe)
    weights = {}
    # fp32 on CUDA: training's bf16 autocast is replaced, so the comparison is of arithmetic, not precision
    trainer.autocast = lambda device: contextlib.nullcontext()
    for name in ("cpu", "cuda"):
        run = SeedRun("seed0", 0, load_classifier(task["init"]), data, torch.device(name), workers=0)
        assert Trainer([run], tmp / f"state_{name}", 0, {}).fit()
        weights[name] = {k: v.detach().cpu().double() for k, v in run.model.state_dict().items()}
    init = {k: v.double() for k, v in load_classifier(task["init"]).state_dict().items()}
    diff = sum(float((weights["cuda"][k] - weights["cpu"][k]).pow(2).sum()) for k in init) ** 0.5
    moved = sum(float((weights["cpu"][k] - init[k]).pow(2).sum()) for k in init) ** 0.5
    largest = max(float((weights["cuda"][k] - weights["cpu"][k]).abs().max()) for k in init)
    verdict = "ok" if diff / moved <= FP32_RELATIVE_TOLERANCE else "FAILED"
    print(f"|w_cuda - w_cpu| / |w_cpu - w_init| = {diff / moved:.2e} (tolerance {FP32_RELATIVE_TOLERANCE:g}); "
          f"largest |difference| {largest:.2e}: {verdict}")


def bf16_evaluation(results: Path | None, cuda: bool) -> None:
    heading("3. evaluation top-1, amp_bf16 vs fp32 on CUDA (tiny workflow's models, its test set)")
    if not cuda:
        skipped("bf16-autocast evaluation against fp32")
        return
    if results is None:
        print("NOT RUN: needs part 1's models")
        return
    import torch
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from clipmerge import layout
    from clipmerge.models.classifier import load_classifier
    from clipmerge.models.clip import checkpoint_preprocess, eval_transform
    from clipmerge.models.device import eval_autocast

    device = torch.device("cuda")
    print("| model | fp32 top-1 | amp_bf16 top-1 | difference (pt) |")
    print("|---|---|---|---|")
    for weights in sorted(results.glob("models/*/model.safetensors")):
        model = load_classifier(weights).to(device).eval()
        dataset = ImageFolder(results.parents[1] / layout.world_split("test", "tiny"),
                              transform=eval_transform(checkpoint_preprocess(weights)))
        hits = {"fp32": 0, "amp_bf16": 0}
        with torch.inference_mode():
            for images, labels in DataLoader(dataset, batch_size=256, num_workers=4):
                images, labels = images.to(device), labels.to(device)
                for precision in hits:
                    with eval_autocast(device, precision):
                        embeddings = model.visual(images)
                    hits[precision] += int((model.classify(embeddings).argmax(1) == labels).sum())
        top1 = {k: 100 * v / len(dataset) for k, v in hits.items()}
        print(f"| {weights.parent.name} | {top1['fp32']:.2f} | {top1['amp_bf16']:.2f} | "
              f"{top1['amp_bf16'] - top1['fp32']:+.2f} |")


def throughput(tmp: Path, cuda: bool) -> None:
    heading("4. ViT-B/32 at 224 px: images/s with the DataLoader and without it")
    if not cuda:
        skipped("ViT-B/32 training and evaluation throughput")
        return
    import numpy as np
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from clipmerge.models.classifier import new_classifier
    from clipmerge.models.clip import eval_transform, preprocess_cfg
    from clipmerge.models.device import autocast
    from clipmerge.training.augment import train_transform
    from clipmerge.training.recipe import Recipe

    device, batch, workers = torch.device("cuda"), 256, min(16, os.cpu_count())
    torch.backends.cudnn.benchmark = True
    model = new_classifier("ViT-B-32", 1000).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    cfg = preprocess_cfg("ViT-B-32", model)
    rng = np.random.default_rng(0)
    folder = tmp / "jpegs" / "class0"
    folder.mkdir(parents=True)
    for i in range(batch * 2):
        Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(folder / f"{i}.jpg", quality=90)

    def train_step(images, labels):
        with autocast(device):
            loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def eval_step(images, labels):
        with torch.inference_mode(), autocast(device):
            model(images)

    def rate(step, batches) -> float:
        for i, (images, labels) in enumerate(batches):
            if i == WARMUP_STEPS:
                torch.cuda.synchronize()
                began = time.perf_counter()
            step(images.to(device, non_blocking=True), labels.to(device, non_blocking=True))
        torch.cuda.synchronize()
        return THROUGHPUT_STEPS * batch / (time.perf_counter() - began)

    def synthetic():
        images = torch.randn(batch, 3, 224, 224, device=device)
        labels = torch.randint(0, 1000, (batch,), device=device)
        return [(images, labels)] * (WARMUP_STEPS + THROUGHPUT_STEPS)

    def loader(transform):
        dataset = ImageFolder(tmp / "jpegs", transform=transform)
        batches = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, pin_memory=True,
                             persistent_workers=True)
        return [b for _ in range(3) for b in batches][: WARMUP_STEPS + THROUGHPUT_STEPS]

    print(f"batch {batch}, bf16 autocast, {workers} DataLoader workers, JPEGs 500x375; "
          f"{THROUGHPUT_STEPS} steps after {WARMUP_STEPS}")
    print("| stage | synthetic tensors (images/s) | DataLoader (images/s) | DataLoader share |")
    print("|---|---|---|---|")
    for name, step, transform in (("training", train_step, train_transform(cfg, Recipe())),
                                  ("evaluation", eval_step, eval_transform(cfg))):
        bare = rate(step, synthetic())
        fed = rate(step, iter(loader(transform)))
        print(f"| {name} | {bare:.0f} | {fed:.0f} | {1 - fed / bare:.0%} of the time |")
    print("(the DataLoader column decodes while the GPU computes only as far as the workers keep up; "
          "its share is the time the GPU waits for input)")


def ddp_world_size_one(tmp: Path, cuda: bool) -> None:
    backend = "nccl" if cuda else "gloo"
    heading(f"5. DDP at world size 1 under torchrun ({backend})")
    from fixtures.training import make_tiny_task

    task = make_tiny_task(tmp / "ddp_task")
    out = tmp / "ddp" / "model.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1", "-m", "clipmerge",
           "finetune", "--init", str(task["init"]), "--train-root", str(task["train"]), "--heldout",
           str(task["heldout"]), "--out", str(out), "--seed", "0", "--steps", "3", "--batch-size", "8",
           "--warmup-steps", "1", "--workers", "0", "--device", "cuda" if cuda else "cpu"]
    proc = subprocess.run(cmd, env=shim_env(tmp), capture_output=True, text=True)
    joined = f"rank 0 of 1 ({backend}" in proc.stderr
    print(f"exit {proc.returncode}, joined a {backend} group of 1: {joined}, model written: {out.is_file()}: "
          f"{'ok' if proc.returncode == 0 and joined and out.is_file() else 'FAILED'}")
    if proc.returncode:
        print(proc.stderr[-3000:])


def main() -> None:
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="clipmerge-gpu-check-"))
    try:
        cuda = environment()
        results = tiny_workflow(tmp, cuda)
        cuda_fp32_against_cpu(tmp, cuda)
        bf16_evaluation(results, cuda)
        throughput(tmp, cuda)
        ddp_world_size_one(tmp, cuda)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ngpu check done in {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
