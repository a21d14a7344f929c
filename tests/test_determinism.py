"""The determinism settings a run applies before it builds anything."""

import os

import torch

from bench.train.reproducibility import configure_determinism


def test_strict_determinism_sets_what_cuda_needs_and_refuses_nondeterministic_ops(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        configure_determinism(True, strict=True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        configure_determinism(True)  # the default: deterministic where PyTorch can be, a warning where not
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        configure_determinism(False)  # --fast
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    finally:
        configure_determinism(False)
        torch.backends.cudnn.benchmark = False
