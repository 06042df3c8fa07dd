"""Peak memory and wall time of streaming merges vs a load-everything baseline and a plain read.

Methods: Model Stock, uniform soup, and the task-vector merges (task arithmetic, TIES, DARE, DARE-TIES,
SLERP; SLERP only at N = 2), each with its default options (``--methods`` picks some).

For each N, every measurement runs in a fresh process (`--worker`) after a warm-up read, so all modes
read from the page cache:

- ``read_once``: read every tensor of the N inputs once (safe_open, pread backend), nothing else.
- ``io_floor``: the same reads, plus writing one checkpoint with ``write_streaming`` (atomic, fsync):
  the I/O any merge of N files into one must do, with no arithmetic.
- ``stream``: ``clipmerge.merging.merge_checkpoints`` (the code `clipmerge merge` runs).
- ``naive``: load all N inputs (and the anchor) into memory, merge each key with the same pure
  function, save the result with ``checkpoint.save_weights`` (``save_file``, atomic, fsync).
  Skipped above ``--naive-max-n`` (N full models in RAM).

Memory is the rise of the process's peak RSS over its RSS just before the operation: the worker
resets the high-water mark (``/proc/self/clear_refs`` = 5) after imports, and reads VmHWM after.
Reads use safetensors' pread backend, so no mmapped file pages inflate RSS (findings B4); the rise is
anonymous memory. Inputs: a random-init classifier of ``--arch`` saved with ``save_classifier`` as
the anchor, and ``--distinct`` perturbed copies as fine-tunes; for N above ``--distinct`` the inputs
reuse those files cyclically (same bytes read, less disk and page cache). Temp files are deleted.

    .venv/bin/python benchmarks/bench_merge.py --ns 2,8,32
    .venv/bin/python benchmarks/bench_merge.py --quick      # tiny model, N = 2, 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("model_stock", "uniform_soup", "task_arithmetic", "ties", "dare", "dare_ties", "slerp")


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(spec: dict) -> dict:
    """Run one measured operation in this (fresh) process and return its time and memory."""
    import torch
    from safetensors import safe_open

    from clipmerge.merging.driver import merge_checkpoints
    from clipmerge.merging.registry import get
    from clipmerge.weights.checkpoint import save_weights
    from clipmerge.weights.streaming import read_layout, write_order, write_streaming

    torch.set_num_threads(spec["threads"])
    inputs, anchor, out = spec["inputs"], spec["anchor"], spec["out"]

    def read_once():
        for path in inputs:
            with safe_open(path, "pt", backend="pread") as fh:
                for key in fh.keys():
                    fh.get_tensor(key)

    def io_floor():
        layout = read_layout(inputs[0])
        handles = [safe_open(p, "pt", backend="pread") for p in inputs]

        def last_of_each_key():
            for key in write_order(layout.specs):
                for fh in handles:
                    tensor = fh.get_tensor(key)
                yield key, tensor

        write_streaming(out, layout, last_of_each_key())

    needs_anchor = spec["method"] is not None and get(spec["method"]).needs_anchor

    def stream():
        merge_checkpoints(spec["method"], inputs, out, anchor=anchor if needs_anchor else None)

    def naive():
        def load(path):
            with safe_open(path, "pt", backend="pread") as fh:
                return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()

        states = [load(p)[0] for p in inputs]
        base, metadata = load(anchor)
        merge = get(spec["method"]).merge_tensor
        keyed = get(spec["method"]).needs_key
        merged = {
            k: merge([s[k] for s in states], base[k] if needs_anchor else None, **({"key": k} if keyed else {}))[0]
            for k in base
        }
        save_weights(merged, out, metadata=metadata)  # atomic + fsync, like the streaming writer

    operation = {"read_once": read_once, "io_floor": io_floor, "stream": stream, "naive": naive}[spec["mode"]]
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = rss_kib("VmRSS")
    start = time.perf_counter()
    operation()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rise_bytes": (rss_kib("VmHWM") - before) * 1024}


def run_worker(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_inputs(workdir: Path, arch: str, num_classes: int, distinct: int) -> tuple[str, list[str]]:
    """Anchor = random init; fine-tunes = anchor + small Gaussian moves sharing a direction."""
    import torch

    from clipmerge.models.classifier import new_classifier, save_classifier

    torch.manual_seed(0)
    model = new_classifier(arch, num_classes)
    anchor = workdir / "zeroshot" / "model.safetensors"
    save_classifier(model, anchor, arch)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    shared = {k: torch.randn_like(v) for k, v in base.items()}
    paths = []
    with torch.no_grad():
        for seed in range(distinct):
            g = torch.Generator().manual_seed(seed + 1)
            for key, value in model.state_dict().items():
                noise = torch.randn(value.shape, generator=g)
                value.copy_(base[key] + 1e-3 * (shared[key] + noise))
            path = workdir / f"finetune_seed{seed}" / "model.safetensors"
            save_classifier(model, path, arch)
            paths.append(str(path))
    return str(anchor), paths


def measure(args: argparse.Namespace, anchor: str, files: list[str], n: int, workdir: Path) -> list[dict]:
    inputs = [files[i % len(files)] for i in range(n)]
    base = {"inputs": inputs, "anchor": anchor, "threads": args.threads, "out": str(workdir / "out.safetensors")}
    from clipmerge.merging.registry import get

    methods = [m for m in args.methods.split(",")
               if get(m).min_inputs <= n and (get(m).max_inputs is None or n <= get(m).max_inputs)]
    runs = [("read_once", None), ("io_floor", None)] + [("stream", m) for m in methods]
    if n <= args.naive_max_n:
        runs += [("naive", m) for m in methods]
    run_worker({**base, "mode": "read_once", "method": None})  # warm the page cache
    rows = []
    for mode, method in runs:
        results = [run_worker({**base, "mode": mode, "method": method}) for _ in range(args.repeats)]
        print(f"N={n} {mode} {method or ''}: {[round(r['seconds'], 2) for r in results]} s", file=sys.stderr)
        Path(base["out"]).unlink(missing_ok=True)
        rows.append({
            "n": n, "mode": mode, "method": method or "-",
            "seconds": statistics.median(r["seconds"] for r in results),
            "peak_rise_bytes": max(r["peak_rise_bytes"] for r in results),
        })
    return rows


def print_table(rows: list[dict], checkpoint_bytes: int) -> None:
    print(f"\none checkpoint = {checkpoint_bytes / 2**20:.0f} MiB; time ratios vs read_once / io_floor of the same N")
    print("| N | mode | method | wall s | / read_once | / io_floor | peak RSS rise MiB | peak / checkpoint |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        same_n = {r["mode"]: r for r in rows if r["n"] == row["n"] and r["method"] == "-"}
        read, floor = same_n["read_once"], same_n["io_floor"]
        print(
            f"| {row['n']} | {row['mode']} | {row['method']} | {row['seconds']:.2f} | "
            f"{row['seconds'] / read['seconds']:.2f} | {row['seconds'] / floor['seconds']:.2f} | "
            f"{row['peak_rise_bytes'] / 2**20:.0f} | {row['peak_rise_bytes'] / checkpoint_bytes:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", default="2,8,32", help="comma-separated numbers of input models")
    parser.add_argument("--quick", action="store_true", help="clipmerge-tiny, N = 2,4, one repeat")
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--distinct", type=int, default=8, help="distinct fine-tune files; larger N reuses them")
    parser.add_argument("--naive-max-n", type=int, default=8, help="largest N for the load-everything baseline")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell (median time, max memory)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated merge methods")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (1: the cores are shared)")
    parser.add_argument("--workdir", default=None, help="where temp checkpoints go (default: system temp)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.quick:
        args.ns, args.arch, args.num_classes, args.repeats = "2,4", "clipmerge-tiny", 10, 1
    ns = [int(n) for n in args.ns.split(",")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` deletes the temp checkpoints
    workdir = Path(tempfile.mkdtemp(prefix="bench_merge.", dir=args.workdir))
    try:
        anchor, files = make_inputs(workdir, args.arch, args.num_classes, min(args.distinct, max(ns)))
        checkpoint_bytes = os.path.getsize(anchor)
        print(f"{args.arch}: {len(files)} distinct fine-tune files, torch threads {args.threads}, "
              f"cpus {os.cpu_count()}", flush=True)
        rows = []
        for n in ns:
            rows += measure(args, anchor, files, n, workdir)
        print_table(rows, checkpoint_bytes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
