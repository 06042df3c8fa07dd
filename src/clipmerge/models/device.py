"""Automatic device selection and the matching precision context.

CUDA gets bf16 autocast; CPU runs fp32, because bf16 autocast is 2.5-6x *slower* on CPUs
without avx512_bf16/AMX (measured on this project's CPUs: AMD EPYC without AMX).
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
    """bf16 autocast on CUDA, a no-op elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def loader_kwargs(device: torch.device, workers: int) -> dict:
    """DataLoader settings that keep an accelerator fed; workers persist across epochs."""
    return {
        "num_workers": workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": workers > 0,
    }
