"""Reproducibility switches of torch: deterministic kernels where they exist (protocol 3.4)."""

from __future__ import annotations

import os

import torch


def configure_determinism(deterministic: bool, strict: bool = False) -> None:
    """Deterministic cuDNN kernels by default (deterministic algorithms where PyTorch has them, a
    warning where not); ``strict`` also fixes cuBLAS's workspace and makes a nondeterministic op an
    error. cuBLAS reads CUBLAS_WORKSPACE_CONFIG when it creates its handle, before the first matmul."""
    if strict:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    deterministic = deterministic or strict
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic  # autotuning picks kernels nondeterministically
    torch.use_deterministic_algorithms(deterministic, warn_only=not strict)
