"""The determinism settings a run applies before it builds anything."""

import os
import subprocess
import sys

import torch

from bench.runner import configure_determinism


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


_FLAGS_IN_A_FRESH_PROCESS = """
import sys
import torch
from bench.runner import configure_determinism
configure_determinism(True, compiled=sys.argv[1] == "compiled")
inductor = sys.modules.get("torch._inductor.config")
print(torch.are_deterministic_algorithms_enabled(), inductor is not None and inductor.deterministic)
"""


def test_inductor_follows_the_flag_when_the_model_is_compiled_and_is_not_imported_otherwise():
    def flags(mode: str) -> str:
        result = subprocess.run([sys.executable, "-c", _FLAGS_IN_A_FRESH_PROCESS, mode], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert flags("compiled") == ["True", "True"]
    assert flags("eager") == ["True", "False"]  # deterministic, and inductor never imported
