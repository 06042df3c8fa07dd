"""Automatic device selection and the matching precision context.

Training: CUDA gets bf16 autocast; CPU runs fp32, because bf16 autocast is 2.5-6x *slower* on CPUs
without avx512_bf16/AMX (measured on this project's CPUs: AMD EPYC without AMX). Evaluation runs in
the configured precision (fp32 unless eval.precision says amp_bf16), its head always in fp32.
"""

from __future__ import annotations

import contextlib

import torch

from clipmerge.errors import ClipmergeError


def pick_device(requested: str = "auto") -> torch.device:
    """Return the device to run on: ``auto`` prefers CUDA, else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ClipmergeError(f"device {requested!r} was requested but CUDA is not available")
    return device


def autocast(device: torch.device):
    """Training's precision: bf16 autocast on CUDA, a no-op elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# Evaluation precisions (config eval.precision). fp32 is the faithful default: the published numbers
# are fp32 (CLIP_benchmark's and model-soups' evaluations), and a bf16 tower moves top-1 by tenths of
# a point, the size of the gaps between merges. amp_bf16 runs the image tower under bf16 autocast on
# any device (the head stays fp32: ImageClassifier.classify); it is the fast choice on a GPU.
EVAL_PRECISIONS = ("fp32", "amp_bf16")


def eval_autocast(device: torch.device, precision: str):
    """The context the image tower runs in during evaluation."""
    if precision not in EVAL_PRECISIONS:
        raise ClipmergeError(f"evaluation precision {precision!r} is none of {', '.join(EVAL_PRECISIONS)}")
    if precision == "amp_bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def loader_kwargs(device: torch.device, workers: int) -> dict:
    """DataLoader settings that keep an accelerator fed; workers persist across epochs."""
    return {
        "num_workers": workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": workers > 0,
    }
