"""Greedy soup's cost per candidate: held-out evaluation from the uint8 image cache vs decoding every time.

Greedy soup over N fine-tunes evaluates 2N - 1 models (each ingredient, then each candidate soup) on
the same held-out images. One evaluation is what ``clipmerge greedy-soup`` does per candidate:
``model.load_state_dict(state)`` + ``predict`` + top-1, over one of these batch sources:

- ``decode_fresh`` (baseline 1): a new ``DataLoader`` over the held-out ``Subset`` with the full eval
  transform for every evaluation, as a loop calling the evaluate path per candidate would do; it pays
  the workers' start-up each time.
- ``decode`` (baseline 2, the best decoding can do): the same ``DataLoader`` created once with
  persistent workers (``loader_kwargs``), so worker start-up is paid once, not per evaluation.
- ``cache_memory``: ``clipmerge.data.cache.load_or_build(None, ...)``, `greedy-soup` without ``--cache``.
- ``cache_file``: ``load_or_build(path, ...)``, the ``--cache`` file the greedy_soup rule passes (read
  batch by batch, page cache hot).

Each source is also timed alone (``pipeline``: iterate the batches, no model) to show the input cost.
The held-out split is drawn by ``clipmerge.data.splits`` from a generated training folder (10 classes),
as in the workflow. Held-out sets, models random-init:

- the demo's: 20 32-px PNGs per class, ``clipmerge-tiny``;
- ImageNet-sized 500x375 JPEGs with ``clipmerge-tiny`` (resized to 32 px) and with ``ViT-B-32``
  (224 px): the setting of the timings in docs/datasets.md (x6-7 whole pass, x17-20 input pipeline).

Building a cache is a one-off cost, reported with the number of passes after which it has paid for
itself (from the ``pipeline`` times against ``decode``). Arms are interleaved; times are medians,
ratios medians of the per-repetition ratios (see bench_eval.py).

    .venv/bin/python benchmarks/bench_greedy_cache.py           # tiny (32 px) and ViT-B-32 (224 px)
    .venv/bin/python benchmarks/bench_greedy_cache.py --quick   # tiny only
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import torch
from bench_eval import interleave, machine, make_images, paired_ratio

SOURCES = ("decode_fresh", "decode", "cache_memory", "cache_file")


def heldout_sources(name: str, root: Path, per_class: int, arch: str, args: argparse.Namespace, workdir: Path,
                    stack: ExitStack):
    """The batch sources over the same held-out images, built as greedy_cli builds them, and the
    seconds each took to build; the caches are closed with ``stack``."""
    from torch.utils.data import DataLoader

    from clipmerge.data.cache import load_or_build
    from clipmerge.data.splits import choose_heldout, heldout_set, image_folder, relative_paths, write_split
    from clipmerge.models.clip import eval_transform, preprocess_cfg
    from clipmerge.models.device import loader_kwargs

    split = workdir / f"{name}-heldout.txt"
    write_split(choose_heldout(image_folder(root), per_class, seed=0), split)
    transform = eval_transform(preprocess_cfg(arch))
    device = torch.device("cpu")

    def make_cache(path):
        heldout = heldout_set(root, split)
        folder, rel = heldout.dataset, relative_paths(heldout.dataset)

        def with_transform(pre_transform):
            folder.transform = pre_transform
            return heldout

        start = time.perf_counter()
        cache = load_or_build(path, with_transform, [rel[i] for i in heldout.indices],
                              [folder.samples[i][1] for i in heldout.indices], transform,
                              batch_size=args.batch_size, workers=args.workers)
        return stack.enter_context(cache), time.perf_counter() - start

    memory, memory_build = make_cache(None)
    on_disk, file_build = make_cache(workdir / f"{name}-cache.safetensors")
    decoded = heldout_set(root, split, transform)
    loader = DataLoader(decoded, batch_size=args.batch_size, **loader_kwargs(device, args.workers))
    sources = {
        "decode_fresh": lambda: iter(DataLoader(decoded, batch_size=args.batch_size, num_workers=args.workers)),
        "decode": lambda: iter(loader),
        "cache_memory": lambda: memory.batches(args.batch_size, device),
        "cache_file": lambda: on_disk.batches(args.batch_size, device),
    }
    builds = {"decode_fresh": 0.0, "decode": 0.0, "cache_memory": memory_build, "cache_file": file_build}
    return sources, builds, len(memory)


def bench_set(label: str, arch: str, num_classes: int, per_class: int, size: tuple[int, int], ext: str,
              args: argparse.Namespace, workdir: Path, stack: ExitStack) -> list[dict]:
    from clipmerge.evaluation.predict import predict, topk_accuracy
    from clipmerge.models.classifier import new_classifier

    root = workdir / f"train-{ext}-{size[0]}x{size[1]}"  # shared by the models evaluated on it
    if not root.exists():
        # One image more per class than held out: choose_heldout leaves at least one to train on.
        make_images(root, [f"class{i:02d}" for i in range(num_classes)], per_class + 1, size, ext)
    name = f"{arch}-{ext}"
    sources, builds, n = heldout_sources(name, root, per_class, arch, args, workdir, stack)
    torch.manual_seed(0)
    model = new_classifier(arch, num_classes).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    device = torch.device("cpu")

    def candidate(source):  # greedy_cli's evaluate(state)
        model.load_state_dict(state, strict=True)
        logits, labels = predict(model, sources[source](), device, desc="greedy soup")
        return topk_accuracy(logits, labels, ks=(1,))[1]

    def pipeline(source):
        for _ in sources[source]():
            pass

    arms = {f"{what}/{s}": (lambda s=s, run=run: run(s))
            for what, run in (("candidate", candidate), ("pipeline", pipeline)) for s in SOURCES}
    accuracies = {s: candidate(s) for s in SOURCES}  # also warms up workers and the page cache
    if len(set(accuracies.values())) != 1:
        raise SystemExit(f"{name}: decoded and cached images give different accuracies {accuracies}")
    times = interleave(arms, args.repeats, name)
    rows = []
    for arm, t in times.items():
        what, source = arm.split("/")
        # The input time a cache saves per pass, measured without the (noisier) forward pass.
        saved = statistics.median(times["pipeline/decode"]) - statistics.median(times[f"pipeline/{source}"])
        rows.append({
            "set": label, "what": what, "source": source, "n": n, "seconds": statistics.median(t),
            "vs_fresh": paired_ratio(times, f"{what}/decode_fresh", arm),
            "vs_decode": paired_ratio(times, f"{what}/decode", arm), "build": builds[source],
            "break_even": builds[source] / saved if what == "pipeline" and saved > 0 else None,
        })
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the demo's held-out set only, 3 repetitions")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a cache is not faster than decoding per candidate evaluation")
    parser.add_argument("--jpeg-per-class", type=int, default=10, help="held-out JPEGs per class (10 classes)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256, help="greedy-soup's default")
    # The greedy_soup rule runs with threads: 1, i.e. one DataLoader worker and OMP_NUM_THREADS=1.
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 3
    torch.set_num_threads(args.threads)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` deletes the images and caches
    print(f"machine: {machine()}", flush=True)
    print(f"torch threads {args.threads}, DataLoader workers {args.workers}, batch {args.batch_size}, "
          f"median of {args.repeats} interleaved repetitions", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench_greedy_cache."))
    try:
        with ExitStack() as stack:
            rows = bench_set("demo: clipmerge-tiny, 32 px PNG", "clipmerge-tiny", 10, 20, (32, 32), "png",
                             args, workdir, stack)
            if not args.quick:
                for label, arch in (("clipmerge-tiny, 500x375 JPEG -> 32 px", "clipmerge-tiny"),
                                    ("ViT-B-32, 500x375 JPEG -> 224 px", "ViT-B-32")):
                    rows += bench_set(label, arch, 10, args.jpeg_per_class, (500, 375), "jpg", args, workdir, stack)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nmachine at the end: load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("| held-out set | timed | batches from | images | s per pass | decode_fresh / this | decode / this | "
          "cache build s | build paid back after |")
    print("|---|---|---|---|---|---|---|---|---|")
    slower = []
    for row in rows:
        paid = f"{row['break_even']:.1f} passes" if row["break_even"] is not None else "-"
        print(f"| {row['set']} | {row['what']} | {row['source']} | {row['n']} | {row['seconds']:.3f} | "
              f"{row['vs_fresh']:.1f} | {row['vs_decode']:.1f} | {row['build']:.2f} | {paid} |")
        if row["what"] == "candidate" and row["source"].startswith("cache") and row["vs_decode"] < 1:
            slower.append(row)
    return 1 if args.check and slower else 0


if __name__ == "__main__":
    sys.exit(main())
