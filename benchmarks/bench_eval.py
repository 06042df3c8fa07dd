"""Evaluation throughput (images/s) of `clipmerge evaluate` vs a plain PyTorch loop, same model and data,
and the per-model cost of evaluating from the preprocessed-image cache vs decoding.

Arms run interleaved: every repetition runs each arm once, in alternating order. images/s comes from
an arm's median time; its ratio to the baseline is the median over repetitions of the paired ratio
(baseline time / arm time in the same repetition), which cancels most of the drift of a shared machine.
The same paired ratio of the main process's CPU time (``time.process_time``: the model and the loop,
not the DataLoader worker, whose work is the same in every arm) is printed as a cross-check that is
much less sensitive to other users' load: a real overhead of the evaluate code shows up in both.

- ``plain`` (the baseline): ``ImageFolder(root, eval_transform(preprocess_cfg(arch)))`` + ``DataLoader(batch_size,
  num_workers)`` + ``model(images)`` under ``torch.inference_mode``, logits concatenated.
- ``evaluate``: ``clipmerge.evaluation.evaluate.predict_set`` (the decode path) + ``topk_accuracy``:
  ``build_eval_set`` (imagefolder adapter, head class names), ``DataLoader(**loader_kwargs(device,
  workers))``, ``predict`` with the adapter's projection. The target (>= 0.95x plain) is on this arm: it
  is the same work as the baseline, so any gap is overhead of the evaluate code.
- ``run``: ``clipmerge.commands.evaluate.run(args)`` in this process: ``evaluate`` plus reading the
  checkpoint into a fresh model and writing the result JSON, i.e. the CLI minus interpreter start-up and
  imports (which are the same for every subcommand). Its ratio shows what each job pays on top.

The cache section (``--cache-images``; skipped by ``--quick``): the tiny model on ImageNet-sized JPEGs
(500x375, resized and cropped to its 32 px), ``decode`` (``predict_set`` without a cache, the baseline)
against ``cached`` (``predict_set`` reading the cache file ``cache-eval-set`` builds, verifying every
chunk's digest). Its ratio is decode / cached per model, the target >= 5x; the one-time build is
printed beside it, and the two arms' logits must be bit-identical.

Both loops time everything from creating the DataLoader (including worker start-up) to the last
batch. Data: generated images in ImageFolder layout whose class folders are a subset of the head's
classes, as in the demo's shifted sets: JPEGs of 500x375 for ViT-B-32 (resized and cropped to 224 px
like ImageNet), 32 px PNGs for the tiny model. The models are random-init classifiers; after timing,
the script checks that both loops produced the same (projected) logits.

    .venv/bin/python benchmarks/bench_eval.py            # ViT-B-32 (256 JPEGs) and tiny (2048 PNGs)
    .venv/bin/python benchmarks/bench_eval.py --quick    # tiny only, fewer images: a smoke test
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

TARGET = 0.95  # evaluate / plain images/s on CPU
CACHE_TARGET = 5.0  # decode / cached seconds per model, tiny model, ImageNet-sized JPEGs


def machine() -> str:
    """One line naming the CPU, core count, load average and torch build (the load inflates times)."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, load average {load}, torch {torch.__version__}"


def interleave(arms: dict, repeats: int, label: str) -> dict[str, list[float]]:
    """Seconds of each arm (a callable) per repetition; the order alternates between repetitions so a
    load change during one repetition does not always hit the same arm."""
    times: dict[str, list[float]] = {name: [] for name in arms}
    for rep in range(repeats):
        for name in list(arms) if rep % 2 == 0 else list(arms)[::-1]:
            start = time.perf_counter()
            arms[name]()
            times[name].append(time.perf_counter() - start)
        print(f"{label} rep {rep}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()), file=sys.stderr)
    return times


def paired_ratio(times: dict[str, list[float]], over: str, under: str) -> float:
    """Median over repetitions of ``over``'s seconds / ``under``'s seconds in the same repetition."""
    return statistics.median(o / u for o, u in zip(times[over], times[under], strict=True))


def make_images(root: Path, classes: list[str], per_class: int, size: tuple[int, int], ext: str) -> None:
    """An ImageFolder tree of smooth random images with mild noise: compressible like photos, so JPEG
    and PNG decoding cost about what real images of that size cost (pure noise would decode slower)."""
    rng = np.random.default_rng(0)
    width, height = size
    options = {"quality": 90} if ext == "jpg" else {}
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            coarse = Image.fromarray(rng.integers(0, 256, (max(height // 24, 2), max(width // 24, 2), 3), np.uint8))
            pixels = np.asarray(coarse.resize(size, Image.BICUBIC), np.float32)
            pixels += rng.normal(0, 6, pixels.shape)
            image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
            image.save(root / name / f"{i:05d}.{ext}", **options)


def plain_loop(model, root, transform, batch_size: int, workers: int):
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    loader = DataLoader(ImageFolder(str(root), transform=transform), batch_size=batch_size, num_workers=workers)
    logits, labels = [], []
    with torch.inference_mode():
        for images, batch_labels in loader:
            logits.append(model(images))
            labels.append(batch_labels)
    return torch.cat(logits), torch.cat(labels)


def evaluate_path(model, root, transform, classnames, batch_size: int, workers: int):
    """clipmerge evaluate's decode path after load_classifier, on the same in-memory model."""
    from clipmerge.data.eval_sets import build_eval_set
    from clipmerge.evaluation.evaluate import SetSource, predict_set
    from clipmerge.evaluation.predict import topk_accuracy

    logits, labels = predict_set(model, transform, SetSource("imagefolder", str(root)), classnames,
                                 batch_size=batch_size, workers=workers, device=torch.device("cpu"))
    topk_accuracy(logits, labels)
    return logits, labels, build_eval_set("imagefolder", root, transform, classnames).project


def bench_cache(args: argparse.Namespace, workdir: Path) -> dict:
    """Per-model seconds of the decode path vs the cache path, tiny model, ImageNet-sized JPEGs."""
    from clipmerge.evaluation.evaluate import SetSource, build_cache, predict_set
    from clipmerge.models.classifier import new_classifier
    from clipmerge.models.clip import TINY_ARCH, eval_transform, preprocess_cfg

    classnames = [f"class{i:04d}" for i in range(10)]
    root = workdir / "cache-images"
    make_images(root, classnames[:8], args.cache_images // 8, (500, 375), "jpg")
    torch.manual_seed(0)
    model = new_classifier(TINY_ARCH, len(classnames)).eval()
    transform = eval_transform(preprocess_cfg(TINY_ARCH))
    file = workdir / "cache.safetensors"
    began = time.perf_counter()
    build_cache(SetSource("imagefolder", str(root), str(file)), transform, classnames,
                batch_size=args.batch_size, workers=args.workers)
    build_s = time.perf_counter() - began

    def arm(cache):
        return lambda: predict_set(model, transform, SetSource("imagefolder", str(root), cache), classnames,
                                   batch_size=args.batch_size, workers=args.workers, device=torch.device("cpu"))

    arms = {"decode": arm(None), "cached": arm(str(file))}
    times = interleave(arms, args.repeats, "cache")
    (decoded, labels), (cached, cached_labels) = arms["decode"](), arms["cached"]()
    if not (torch.equal(decoded, cached) and torch.equal(labels, cached_labels)):
        raise SystemExit("the cache path's logits differ from the decode path's")
    return {"n": args.cache_images, "build_s": build_s, "bytes": file.stat().st_size,
            "decode_s": statistics.median(times["decode"]), "cached_s": statistics.median(times["cached"]),
            "ratio": paired_ratio(times, "decode", "cached")}


def bench_model(arch: str, num_classes: int, folders: int, per_class: int, size: tuple[int, int], ext: str,
                args: argparse.Namespace, workdir: Path) -> list[dict]:
    from clipmerge.commands.evaluate import run
    from clipmerge.models.classifier import load_classifier, new_classifier, save_classifier
    from clipmerge.models.clip import eval_transform, preprocess_cfg

    classnames = [f"class{i:04d}" for i in range(num_classes)]
    root = workdir / f"{arch}-images"
    make_images(root, classnames[:folders], per_class, size, ext)
    classnames_file = workdir / f"{arch}-classnames.txt"
    classnames_file.write_text("\n".join(classnames) + "\n")
    checkpoint = workdir / f"{arch}.safetensors"
    torch.manual_seed(0)
    save_classifier(new_classifier(arch, num_classes), checkpoint, arch)
    model = load_classifier(checkpoint).eval()
    transform = eval_transform(preprocess_cfg(arch))
    cli_args = Namespace(model=str(checkpoint), model_id=arch,
                         sets=[["bench", "imagefolder", str(root), str(workdir / f"{arch}.json")]], cache=[],
                         classnames=str(classnames_file), batch_size=args.batch_size, workers=args.workers,
                         device="cpu")
    arms = {
        "plain": lambda: plain_loop(model, root, transform, args.batch_size, args.workers),
        "evaluate": lambda: evaluate_path(model, root, transform, classnames, args.batch_size, args.workers),
        "run": lambda: run(cli_args),
    }
    n = folders * per_class
    cpu: dict[str, list[float]] = {name: [] for name in arms}

    def with_cpu(name):
        def measured():
            start = time.process_time()
            arms[name]()
            cpu[name].append(time.process_time() - start)
        return measured

    plain_loop(model, root, transform, args.batch_size, args.workers)  # warm-up: page cache, lazy inits
    times = interleave({name: with_cpu(name) for name in arms}, args.repeats, arch)

    plain_logits, plain_labels = plain_loop(model, root, transform, args.batch_size, args.workers)
    eval_logits, eval_labels, project = evaluate_path(model, root, transform, classnames, args.batch_size, args.workers)
    if not (torch.equal(plain_labels, eval_labels) and torch.allclose(project(plain_logits), eval_logits, atol=1e-5)):
        raise SystemExit(f"{arch}: the evaluate path and the plain loop disagree: not the same computation")

    return [{"arch": arch, "arm": name, "n": n, "images_per_s": n / statistics.median(t),
             "ratio": paired_ratio(times, "plain", name), "cpu_ratio": paired_ratio(cpu, "plain", name),
             "spread": f"{min(t):.2f}-{max(t):.2f}"}
            for name, t in times.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only, 512 images, 3 repetitions")
    parser.add_argument("--check", action="store_true", help=f"exit 1 if evaluate/plain < {TARGET}")
    parser.add_argument("--vit-images", type=int, default=256, help="ViT-B-32 images (8 class folders)")
    parser.add_argument("--tiny-images", type=int, default=2048, help="tiny-model images (8 class folders)")
    parser.add_argument("--cache-images", type=int, default=512, help="ImageNet-sized JPEGs for the cache arms")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache-only", action="store_true", help="only the cache-vs-decode arms")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers (every arm); default: what the evaluate rule uses with "
                             "--threads cores (plan.loader_workers: 0 for one thread)")
    args = parser.parse_args()
    if args.workers is None:
        from clipmerge.workflow.plan import loader_workers

        args.workers = loader_workers(args.threads)
    if args.quick:
        args.tiny_images, args.repeats = 512, 3
    torch.set_num_threads(args.threads)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` deletes the images
    print(f"machine: {machine()}", flush=True)
    print(f"torch threads {args.threads}, DataLoader workers {args.workers}, batch {args.batch_size}, "
          f"median of {args.repeats} interleaved repetitions", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench_eval."))
    try:
        rows = []
        if not (args.quick or args.cache_only):
            rows += bench_model("ViT-B-32", 1000, 8, args.vit_images // 8, (500, 375), "jpg", args, workdir)
        if not args.cache_only:
            rows += bench_model("clipmerge-tiny", 10, 8, args.tiny_images // 8, (32, 32), "png", args, workdir)
        cache = None if args.quick else bench_cache(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nmachine at the end: load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("| model | arm | images | images/s | / plain | target | s (min-max) | main-process CPU: plain / arm |")
    print("|---|---|---|---|---|---|---|---|")
    missed = []
    for row in rows:
        target = ""
        if row["arm"] == "evaluate":
            met = row["ratio"] >= TARGET
            target = f"≥ {TARGET}: {'met' if met else 'MISSED'}"
            missed += [] if met else [row["arch"]]
        print(f"| {row['arch']} | {row['arm']} | {row['n']} | {row['images_per_s']:.1f} | {row['ratio']:.3f} | "
              f"{target} | {row['spread']} | {row['cpu_ratio']:.3f} |")
    if cache is not None:
        met = cache["ratio"] >= CACHE_TARGET
        missed += [] if met else ["cache"]
        print(f"\n| tiny model, {cache['n']} JPEGs 500x375 | decode s | cached s | decode / cached | target |"
              " cache build s | cache MiB |\n|---|---|---|---|---|---|---|")
        print(f"| per model | {cache['decode_s']:.3f} | {cache['cached_s']:.3f} | {cache['ratio']:.1f} | "
              f"≥ {CACHE_TARGET}: {'met' if met else 'MISSED'} | {cache['build_s']:.2f} | "
              f"{cache['bytes'] / 2**20:.1f} |")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
