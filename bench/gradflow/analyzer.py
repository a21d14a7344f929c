"""Gradient-flow analysis: capture the loss gradient w.r.t. every analysed layer's output.

The original analyzer (protocol 5.2) used the deprecated non-full backward hook, which never fired
for ``out_proj`` and for RoPE's ``linear1``. Here a forward hook attaches a tensor hook to each
output as it is produced, with two traps handled:

- ``nn.MultiheadAttention`` applies ``out_proj``'s weights itself and never calls the module; its
  output *is* ``out_proj``'s output (transposed), so that gradient is attributed to ``out_proj``.
- A hook on a view that is later modified in place (RoPE's ``linear1`` output, 3-D so a view of the
  matmul result, followed by an in-place ReLU) never fires in this torch version: the in-place op
  re-bases the view's history and orphans the node. The hook therefore goes on the view's base,
  which receives the gradient w.r.t. the pre-ReLU output (hooks registered before an in-place op
  see the value before it).

Per batch, every statistic stays on the device until one stacked table is copied to the host.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.core.errors import BenchError
from bench.gradflow import stats
from bench.gradflow.report import GradFlowReport
from bench.gradflow.stats import GradFlowThresholds, NotebookScope
from bench.train import checkpoint

MODES = ("train", "eval")
# protocol 5.2: the module types the original hooked
NOTEBOOK_TYPES = (nn.Conv2d, nn.Linear, nn.TransformerEncoderLayer)
# any module with nn.TransformerEncoderLayer's parts is an encoder layer (the RoPE and shared ones)
ENCODER_LAYER_PARTS = ("self_attn", "linear1", "linear2")
# columns of the per-batch table copied to the host
NORM, ABS_MEAN, STD, ABS_MAX, PARAM_NORM = range(5)


def is_analysed(module: nn.Module) -> bool:
    return isinstance(module, NOTEBOOK_TYPES) or all(hasattr(module, part) for part in ENCODER_LAYER_PARTS)


def notebook_hooked(model: nn.Module) -> list[str]:
    """The modules the original registered hooks on, in its (``named_modules``) order."""
    return [name for name, module in model.named_modules() if isinstance(module, NOTEBOOK_TYPES)]


def _first_tensor(output: Any) -> torch.Tensor | None:
    while not isinstance(output, torch.Tensor):
        if isinstance(output, (tuple, list)) and output:
            output = output[0]
        else:
            return None
    return output


def _hook_target(tensor: torch.Tensor) -> torch.Tensor:
    # a view covering its whole (non-leaf) base carries the same gradient values as the base, and
    # the base's hook survives an in-place op on the view (module docstring)
    base = tensor._base
    if base is not None and base.grad_fn is not None and base.numel() == tensor.numel():
        return base
    return tensor


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    """A 1-D view of a dense tensor in its memory order (no copy for channels-last or any permuted layout).

    Whole-tensor statistics do not depend on the order of the values, and torch's CPU reductions over a
    permuted layout (a channels-last gradient) walk it by strides: min and max 15 times slower.
    """
    if tensor.is_contiguous():
        return tensor.view(-1)
    order = sorted(range(tensor.dim()), key=lambda dim: (tensor.stride(dim), tensor.size(dim)), reverse=True)
    return tensor.permute(order).reshape(-1)


def _gradient_sums(grad: torch.Tensor) -> torch.Tensor:
    """[sum g, sum g^2, sum |g|, max |g|] of one gradient, float64 on its device, no large temporaries.

    Sums, so the calls of a module called twice (CBAM's shared MLP) add up; the statistics follow on
    the host (`_layer_statistics`). Each by the fastest kernel that is accurate enough: on the CPU
    ``var_mean`` is several times slower, the infinity norm over a channels-last layout 15 times slower
    than ``max(max, -min)`` over a flat view, and float32 ``vector_norm`` errs by 1e-4 where the BLAS dot
    product errs by 1e-5 (``bench perf``'s gradient-flow ratio, docs/performance.md).
    """
    g = _flat(grad.detach().float())
    return torch.stack([g.sum(), torch.dot(g, g), torch.linalg.vector_norm(g, ord=1), torch.maximum(g.max(), g.min().neg())]).double()


def _layer_statistics(count: int, sums: list[float]) -> list[float]:
    """Norm, mean |g|, std (unbiased) and max |g| of ``count`` gradient values from their sums.

    The variance is E[g^2] - E[g]^2 in float64: on the gradients of ResNet-18, CBAM-ResNet-18 and
    GradAttn (whose mean is small against their spread) within 1e-5 of the two-pass value.
    """
    total, squares, absolute, largest = sums
    mean = total / count
    variance = max(squares / count - mean * mean, 0.0)
    std = math.sqrt(variance * count / max(count - 1, 1))
    return [math.sqrt(squares), absolute / count, std, largest]


def _summed(calls: list[torch.Tensor]) -> torch.Tensor:
    if len(calls) == 1:
        return calls[0]
    stacked = torch.stack(calls)
    return torch.cat([stacked[:, :3].sum(0), stacked[:, 3].amax().view(1)])


def _parameter_grad_norms(modules: list[nn.Module], like: torch.Tensor) -> torch.Tensor:
    """Per module, the L2 norm of all its parameters' gradients (NaN where none has one), on like's device.

    One fused norm over every gradient (as ``clip_grad_norm_``), not one call per parameter.
    """
    grads = [[p.grad for p in module.parameters() if p.grad is not None] for module in modules]
    flat = [grad for module_grads in grads for grad in module_grads]
    norms = torch.stack([norm.to(like.device, torch.float64) for norm in torch._foreach_norm(flat)]) if flat else None
    totals, start = [], 0
    for module_grads in grads:
        end = start + len(module_grads)
        totals.append(torch.linalg.vector_norm(norms[start:end]) if end > start else like.new_full((), float("nan")))
        start = end
    return torch.stack(totals)


class _Recorder:
    """The hooks of one analysis and what they record; removed by ``remove``."""

    def __init__(self, model: nn.Module) -> None:
        self.modules = {name: module for name, module in model.named_modules() if is_analysed(module)}
        self.order: list[str] = []  # analysed outputs in the order they were first produced
        self.notebook_seen: set[str] = set()
        self.calls_per_batch: dict[str, int] = {}
        self.columns: dict[str, list[list[float]]] = {}  # name -> one row per batch
        self.host_syncs = 0
        self._calls: dict[str, int] = {}
        self._calls_before: dict[str, int] = {}
        self._grads: dict[str, list[tuple[int, torch.Tensor]]] = {}
        self._handles: list[Any] = []
        self._graph_handles: list[Any] = []
        names = {module: name for name, module in self.modules.items()}
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(partial(self._on_output, name)))
        for module in model.modules():
            if isinstance(module, nn.MultiheadAttention) and module.out_proj in names:
                out_name = names[module.out_proj]
                self._handles.append(module.register_forward_pre_hook(partial(self._before_attention, out_name)))
                self._handles.append(module.register_forward_hook(partial(self._after_attention, out_name)))

    @property
    def hooks_registered(self) -> int:
        return len(self.modules)

    def _on_output(self, name: str, module: nn.Module, args: Any, output: Any) -> None:
        self._capture(name, output, called=True)

    def _before_attention(self, out_name: str, module: nn.Module, args: Any) -> None:
        self._calls_before[out_name] = self._calls.get(out_name, 0)

    def _after_attention(self, out_name: str, module: nn.Module, args: Any, output: Any) -> None:
        # protocol 5.2: MultiheadAttention computes out_proj without calling it; should a torch
        # version ever call it, its own hook has fired and nothing is attributed twice
        if self._calls.get(out_name, 0) == self._calls_before.pop(out_name, 0):
            self._capture(out_name, output, called=False)

    def _capture(self, name: str, output: Any, called: bool) -> None:
        tensor = _first_tensor(output)
        if tensor is None:
            return
        if name not in self.calls_per_batch:
            self.calls_per_batch[name] = 0
            self.order.append(name)
        self._calls[name] = self._calls.get(name, 0) + 1
        if not tensor.requires_grad or tensor.numel() == 0:
            return
        if called and tensor.grad_fn is not None:
            # the original's hook sat on this node; if the node never runs, the original saw nothing
            self._graph_handles.append(tensor.grad_fn.register_hook(partial(self._notebook_fired, name)))
        self._graph_handles.append(_hook_target(tensor).register_hook(partial(self._on_grad, name)))

    def _notebook_fired(self, name: str, grad_inputs: Any, grad_outputs: Any) -> None:
        self.notebook_seen.add(name)

    def _on_grad(self, name: str, grad: torch.Tensor) -> None:
        self._grads.setdefault(name, []).append((grad.numel(), _gradient_sums(grad)))

    def finish_batch(self) -> None:
        """Fold this batch's gradients into one table and copy it to the host once."""
        names = [name for name in self.order if name in self._grads]
        if names:
            device = self._grads[names[0]][0][1].device
            # one row of sums per layer: a module called several times adds its calls' sums
            sums = torch.stack([_summed([raw for _, raw in self._grads[name]]).to(device) for name in names])
            parameter_norms = _parameter_grad_norms([self.modules[name] for name in names], sums)
            table = self._to_host(torch.cat([sums, parameter_norms.unsqueeze(1)], dim=1))
            for name, row in zip(names, table):
                count = sum(n for n, _ in self._grads[name])
                self.columns.setdefault(name, []).append([*_layer_statistics(count, row[:4]), row[4]])
                self.calls_per_batch[name] = max(self.calls_per_batch[name], len(self._grads[name]))
        self._grads.clear()
        self._calls.clear()
        for handle in self._graph_handles:
            handle.remove()
        self._graph_handles.clear()

    def _to_host(self, table: torch.Tensor) -> list[list[float]]:
        # the only device -> host copy of an analysis: one per batch
        self.host_syncs += 1
        return table.tolist()

    def remove(self) -> None:
        for handle in itertools.chain(self._handles, self._graph_handles):
            handle.remove()
        self._handles.clear()
        self._graph_handles.clear()


@dataclass
class _SavedState:
    """Everything an analysis may disturb: train/eval flags, buffers, .grad and the RNG streams."""

    training: list[tuple[nn.Module, bool]]
    buffers: list[tuple[nn.Module, str, torch.Tensor, torch.Tensor]]
    grads: list[tuple[nn.Parameter, torch.Tensor | None]]
    rng: dict[str, Any]

    @classmethod
    def capture(cls, model: nn.Module) -> "_SavedState":
        return cls(
            training=[(module, module.training) for module in model.modules()],
            buffers=[
                (module, name, buffer, buffer.detach().clone())
                for module in model.modules()
                for name, buffer in module._buffers.items()
                if buffer is not None
            ],
            grads=[(parameter, parameter.grad) for parameter in model.parameters()],
            rng=checkpoint.rng_state(),
        )

    def restore(self) -> None:
        for module, training in self.training:
            module.training = training
        with torch.no_grad():
            for module, name, buffer, copy in self.buffers:
                buffer.copy_(copy)  # BatchNorm running statistics and num_batches_tracked
                module._buffers[name] = buffer
        for parameter, grad in self.grads:
            parameter.grad = grad
        checkpoint.set_rng_state(self.rng)


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def analyze(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    thresholds: GradFlowThresholds = GradFlowThresholds(),
    mode: str = "train",
    preserve_state: bool = True,
    max_batches: int | None = None,
) -> GradFlowReport:
    """Gradient flow of ``model`` over ``batches``: per batch, forward, mean cross-entropy, backward.

    ``mode="train"`` runs the forward in train mode (dropout on, BatchNorm batch statistics), as
    the original did (protocol 5.1); ``"eval"`` in eval mode. There is never an optimiser step. With
    ``preserve_state`` (the default) the model's train/eval flags, buffers (BatchNorm running
    statistics), ``.grad`` and the Python, NumPy and torch RNG states are restored afterwards, so an
    analysis during training changes nothing; without it, the model is left as the original left
    it (analysis mode, last batch's gradients, updated BatchNorm statistics). Hooks are always removed.
    """
    if mode not in MODES:
        raise BenchError(f"Unknown gradient-flow mode {mode!r}; use train or eval.")
    device = _device_of(model)
    saved = _SavedState.capture(model) if preserve_state else None
    recorder = _Recorder(model)
    batch_count = batch_size = 0
    try:
        model.train(mode == "train")
        with torch.enable_grad():
            for inputs, labels in itertools.islice(batches, max_batches):
                model.zero_grad(set_to_none=True)
                logits = model(inputs.to(device, non_blocking=True))
                F.cross_entropy(logits, labels.to(device, non_blocking=True)).backward()
                recorder.finish_batch()
                batch_count += 1
                batch_size = max(batch_size, int(labels.shape[0]))
    finally:
        recorder.remove()
        if saved is not None:
            saved.restore()
    if batch_count == 0:
        raise BenchError("Gradient-flow analysis got no batches; give it a split with at least one batch.")
    return _report(recorder, model, thresholds, mode, batch_count, batch_size)


def _report(
    recorder: _Recorder, model: nn.Module, thresholds: GradFlowThresholds, mode: str, batch_count: int, batch_size: int
) -> GradFlowReport:
    observed = [name for name in recorder.order if name in recorder.columns]
    layers, records, param_norms = [], {}, {}
    for index, name in enumerate(observed):
        rows = recorder.columns[name]
        column = lambda i: [row[i] for row in rows]  # noqa: E731
        params = [value for value in column(PARAM_NORM) if not math.isnan(value)]  # NaN: no parameter grad
        records[name] = column(NORM)
        if params:
            param_norms[name] = params
        layers.append(
            stats.layer_statistics(
                name,
                type(recorder.modules[name]).__name__,
                index,
                recorder.calls_per_batch[name],
                column(NORM),
                column(ABS_MEAN),
                column(STD),
                column(ABS_MAX),
                params,
                thresholds,
            )
        )
    hooked = notebook_hooked(model)
    notebook = NotebookScope(
        hooked=tuple(hooked), unobservable=tuple(name for name in hooked if name not in recorder.notebook_seen)
    )
    scores = stats.score(records, thresholds, notebook)
    notebook_norms = [
        stats.mean_norm(records[name]) for name in hooked if name in records and name not in notebook.unobservable
    ]
    return GradFlowReport(
        layers=layers,
        not_observed=[name for name in recorder.modules if name not in records],
        records=records,
        param_grad_norms=param_norms,
        hooks_registered=recorder.hooks_registered,
        thresholds=thresholds,
        health_score=scores["health_score"],
        health_score_notebook=scores["health_score_notebook"],
        n_vanishing=scores["n_vanishing"],
        n_exploding=scores["n_exploding"],
        flow=stats.flow_patterns(observed, [layer.mean_norm for layer in layers], notebook_norms),
        notebook=notebook,
        mode=mode,
        batches=batch_count,
        batch_size=batch_size,
        host_syncs=recorder.host_syncs,
    )
