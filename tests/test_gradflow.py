"""bench.gradflow: hooks, statistics, state preservation, scores and reports (protocol 5, 7.5-7.7)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import bench.gradflow as gradflow
from bench.gradflow import GradFlowReport, GradFlowThresholds, analyze, plot, score, text_report
from bench.gradflow.stats import flow_patterns, layer_statistics


@pytest.fixture(autouse=True)
def one_thread():
    # the machine is shared: keep this file to one intra-op thread, then put the setting back
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------
# small hand-made models


class TokenNet(nn.Module):
    """Conv stem, an nn.TransformerEncoderLayer (out_proj never called as a module), an in-place
    ReLU on a 3-D Linear output (view + in-place, as in the published RoPE layer), a module called
    twice per forward (as CBAM's shared MLP), and modules registered out of forward order."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.head = nn.Linear(16, 3)  # registered first, runs last
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.to_tokens = nn.Linear(8, 4 * 16)
        self.encoder = nn.TransformerEncoderLayer(16, 2, 32, dropout=dropout, batch_first=True)
        self.ffn_in = nn.Linear(16, 24)
        self.relu = nn.ReLU(inplace=True)
        self.ffn_out = nn.Linear(24, 16)
        self.shared = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        tokens = self.to_tokens(h).view(-1, 4, 16)
        tokens = self.encoder(tokens)
        tokens = tokens + self.ffn_out(self.relu(self.ffn_in(tokens)))
        pooled = tokens.mean(dim=1)
        mixed = torch.sigmoid(self.shared(pooled)) * self.shared(pooled.flip(0))
        return self.head(mixed)


TOKEN_NET_ORDER = [
    "conv",
    "to_tokens",
    "encoder.self_attn.out_proj",
    "encoder.linear1",
    "encoder.linear2",
    "encoder",
    "ffn_in",
    "ffn_out",
    "shared",
    "head",
]


def grad_gain(t: torch.Tensor, gain: float) -> torch.Tensor:
    """Zero in the forward, `gain` times the upstream gradient in the backward."""
    return t * gain - (t * gain).detach()


class Crafted(nn.Module):
    """Known verdicts: `dead` vanishing (gain 0), `loud` exploding (gain 1e6), `unused` never runs,
    `attn.out_proj` observed here but never by the original hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.dead = nn.Linear(8, 16)
        self.loud = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 3)
        self.unused = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.inp(x)) + grad_gain(self.dead(x), 0.0) + grad_gain(self.loud(x), 1e6)
        tokens = h.view(h.shape[0], 2, 8).repeat(1, 1, 2)
        return self.head(self.attn(tokens, tokens, tokens)[0].mean(dim=1))


def image_batches(n: int = 2, batch: int = 4, size: int = 8, classes: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, 3, size, size, generator=gen), torch.randint(0, classes, (batch,), generator=gen))
        for _ in range(n)
    ]


def vector_batches(n: int = 2, batch: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 8, generator=gen), torch.randint(0, 3, (batch,), generator=gen)) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# an independent reference: d loss / d output through an added zero leaf, no tensor hooks at all


def reference_gradients(model: nn.Module, batches, mode: str = "train"):
    """Per batch: {name: concatenated output gradient} and {name: parameter-gradient norm}.

    A forward hook adds a zero leaf to each analysed output (to MultiheadAttention's output for
    its out_proj); the leaf's gradient is the loss gradient w.r.t. the output before anything
    downstream, including an in-place ReLU, touches it.
    """
    targets = {}
    for name, module in model.named_modules():
        if gradflow.is_analysed(module):
            targets[module] = name
    for module in list(model.modules()):
        if isinstance(module, nn.MultiheadAttention) and module.out_proj in targets:
            targets[module] = targets.pop(module.out_proj)
    model.train(mode == "train")
    results = []
    for inputs, labels in batches:
        leaves: dict[str, list[torch.Tensor]] = {}

        def add_leaf(module, args, output):
            first = output[0] if isinstance(output, tuple) else output
            leaf = torch.zeros_like(first, requires_grad=True)
            leaves.setdefault(targets[module], []).append(leaf)
            return (first + leaf, *output[1:]) if isinstance(output, tuple) else first + leaf

        handles = [module.register_forward_hook(add_leaf) for module in targets]
        try:
            loss = F.cross_entropy(model(inputs), labels)
        finally:
            for handle in handles:
                handle.remove()
        names = list(leaves)
        modules = dict(model.named_modules())
        unique = {id(p): p for name in names for p in modules[name].parameters()}
        grads = torch.autograd.grad(
            loss, [leaf for name in names for leaf in leaves[name]] + list(unique.values()), allow_unused=True
        )
        leaf_grads, param_by_id = iter(grads[: len(grads) - len(unique)]), dict(zip(unique, grads[-len(unique) :]))
        output_grads = {name: torch.cat([next(leaf_grads).flatten() for _ in leaves[name]]) for name in names}
        param_grads = {}
        for name in names:
            found = [param_by_id[id(p)] for p in modules[name].parameters() if param_by_id[id(p)] is not None]
            param_grads[name] = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in found])))
        results.append((output_grads, param_grads))
    return results


def assert_matches_reference(report: GradFlowReport, reference) -> None:
    assert set(report.records) == set(reference[0][0])
    for name in report.records:
        per_batch = [out[name] for out, _ in reference]
        expected = {
            "norms": [float(g.norm()) for g in per_batch],
            "mean_gradient": np.mean([float(g.abs().mean()) for g in per_batch]),
            "std_gradient": np.mean([float(g.std()) for g in per_batch]),
            "max_gradient": np.mean([float(g.abs().max()) for g in per_batch]),
        }
        assert report.records[name] == pytest.approx(expected["norms"], rel=1e-5, abs=1e-12), name
        layer = report.layer(name)
        for key in ("mean_gradient", "std_gradient", "max_gradient"):
            assert getattr(layer, key) == pytest.approx(expected[key], rel=1e-5, abs=1e-12), (name, key)
        expected_params = [params[name] for _, params in reference]
        assert report.param_grad_norms[name] == pytest.approx(expected_params, rel=1e-5, abs=1e-12), name


# ---------------------------------------------------------------------------------------------
# hooks and recorded values


def test_recorded_gradients_equal_autograd_reference_incl_out_proj_inplace_relu_and_shared_module():
    torch.manual_seed(0)
    model = TokenNet()
    batches = image_batches()
    report = analyze(model, batches)
    assert [layer.name for layer in report.layers] == TOKEN_NET_ORDER
    assert report.not_observed == []
    assert report.layer("shared").calls_per_batch == 2
    assert report.layer("encoder").kind == "TransformerEncoderLayer"
    assert report.layer("encoder.self_attn.out_proj").kind == "NonDynamicallyQuantizableLinear"
    assert_matches_reference(report, reference_gradients(model, batches))
    # the in-place ReLU case really is a view modified in place, which the original could not observe
    assert "ffn_in" in report.notebook.unobservable and "encoder.self_attn.out_proj" in report.notebook.unobservable


def test_train_mode_with_dropout_matches_reference_on_published_rope_and_nope():
    # analyze restores the RNG, so the reference forward draws the same dropout masks
    from bench.models import build

    batches = image_batches(size=32, classes=10)
    for name in ("gradattn-rope", "gradattn-nope"):
        torch.manual_seed(1)
        model = build(name, 10, 3)
        report = analyze(model, batches)
        assert_matches_reference(report, reference_gradients(model, batches))


def test_hook_on_view_modified_in_place_never_fires_in_this_torch():
    # the trap the analyzer works around: keep this, so a torch upgrade that changes it is noticed
    linear = nn.Linear(4, 6)
    fired = []
    out = linear(torch.randn(2, 3, 4))
    assert out._base is not None
    out.register_hook(lambda g: fired.append(g))
    F.relu(out, inplace=True).sum().backward()
    assert fired == []


EXPECTED_LAYERS = {
    # analysed modules = layers with data; (hooks the original registered, of which it could not observe)
    "resnet18": (21, 21, 0),  # 17 convs + 3 downsample convs + fc
    "senet18": (37, 37, 0),  # 20 convs + 16 SE FCs + fc
    "cbam18": (45, 45, 0),  # 20 convs + 24 attention convs + fc
    "gradattn-nope": (35, 35, 3),  # 17 convs + 5 projections + 3 x [layer, out_proj, linear1, linear2] + classifier
    "gradattn-lpe": (35, 35, 3),
    "gradattn-rope": (44, 41, 3),  # 17 + 5 + 3 x [w_q, w_k, w_v, w_o, linear1, linear2, layer] + classifier
}
# encoder="shared": every variant uses the same layer (w_q/w_k/w_v/w_o, no in-place ReLU)
EXPECTED_SHARED = (44, 41, 0)


@pytest.mark.parametrize(
    "name, config, expected",
    [(name, {}, counts) for name, counts in EXPECTED_LAYERS.items()]
    + [(name, {"encoder": "shared"}, EXPECTED_SHARED) for name in ("gradattn-nope", "gradattn-lpe", "gradattn-rope")],
)
def test_hooks_fire_for_every_analysed_layer_of_the_real_models(name, config, expected):
    from bench.models import build

    torch.manual_seed(0)
    model = build(name, 10, 3, **config)
    analysed = [n for n, m in model.named_modules() if gradflow.is_analysed(m)]
    report = analyze(model, image_batches(size=32, classes=10))
    layers, hooked, unobservable = expected
    assert report.not_observed == []
    assert report.hooks_registered == len(analysed) == layers
    assert sorted(report.records) == sorted(analysed)
    assert all(len(norms) == 2 for norms in report.records.values())
    assert all(layer.records == 2 for layer in report.layers)
    assert len(report.notebook.hooked) == hooked
    assert len(report.notebook.unobservable) == unobservable
    twice = [layer.name for layer in report.layers if layer.calls_per_batch == 2]
    assert len(twice) == (16 if name == "cbam18" else 0)  # CBAM's shared MLP runs on the avg- and max-pooled maps
    assert all("shared_mlp" in n for n in twice)
    # the notebook ceiling: every observable layer healthy gives 32/35 (No PE, LPE) or 38/41 (RoPE)
    all_healthy = {n: [1.0] for n in report.records}
    expected_ceiling = (hooked - unobservable) / hooked
    assert score(all_healthy, report.thresholds, report.notebook)["health_score_notebook"] == expected_ceiling


def test_notebook_unobservable_are_out_proj_and_rope_linear1():
    from bench.models import build

    batches = image_batches(size=32, classes=10, n=1)
    nope = analyze(build("gradattn-nope", 10, 3), batches)
    assert all(n.endswith("self_attn.out_proj") for n in nope.notebook.unobservable)
    rope = analyze(build("gradattn-rope", 10, 3), batches)
    assert all(n.endswith(".linear1") for n in rope.notebook.unobservable)


# ---------------------------------------------------------------------------------------------
# one host sync per batch


SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")


def test_one_host_copy_per_batch_from_the_analyzer(monkeypatch):
    package_dir = str(Path(gradflow.__file__).parent)
    calls: list[str] = []

    def counting(method_name, original):
        def wrapper(self, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename.startswith(package_dir):
                calls.append(method_name)
            return original(self, *args, **kwargs)

        return wrapper

    for method_name in SYNC_METHODS:
        monkeypatch.setattr(torch.Tensor, method_name, counting(method_name, getattr(torch.Tensor, method_name)))
    report = analyze(TokenNet(), image_batches(n=3))
    monkeypatch.undo()
    assert calls == ["tolist"] * 3
    assert report.host_syncs == 3 and report.batches == 3


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_one_cuda_synchronisation_per_batch():
    import warnings

    model = TokenNet().cuda()
    batches = [(x.cuda(), y.cuda()) for x, y in image_batches(n=3)]
    analyze(model, batches[:1])  # warm-up: lazy CUDA initialisation may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            analyze(model, batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) == 3


# ---------------------------------------------------------------------------------------------
# state preservation


def _snapshot(model: nn.Module):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [(p.grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),
    }


def _assert_same(model: nn.Module, before) -> None:
    after = model.state_dict()
    assert before["state"].keys() == after.keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after[key]), key
    for parameter, (grad, copy) in zip(model.parameters(), before["grads"]):
        assert parameter.grad is grad
        assert grad is None or torch.equal(grad, copy)
    assert [m.training for m in model.modules()] == before["training"]
    assert torch.equal(torch.get_rng_state(), before["torch_rng"])
    assert random.getstate() == before["python_rng"]
    numpy_after = np.random.get_state()
    assert numpy_after[0] == before["numpy_rng"][0] and np.array_equal(numpy_after[1], before["numpy_rng"][1])
    assert numpy_after[2:] == before["numpy_rng"][2:]


def _assert_no_hooks(model: nn.Module) -> None:
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks


@pytest.mark.parametrize("name, has_dropout", [("cbam18", False), ("gradattn-lpe", True)])
def test_state_is_preserved_bit_for_bit_on_a_real_model(name, has_dropout):
    from bench.models import build

    torch.manual_seed(0)
    model = build(name, 10, 3)
    model.train()
    list(model.children())[-1].eval()  # a mixed train/eval model must come back mixed
    for i, parameter in enumerate(model.parameters()):
        if i % 2:
            parameter.grad = torch.randn_like(parameter)  # some grads set, some None
    random.seed(5)
    np.random.seed(5)
    batches = image_batches(size=32, classes=10)
    before = _snapshot(model)
    report = analyze(model, batches, mode="train", preserve_state=True)
    assert report.layers
    _assert_same(model, before)
    _assert_no_hooks(model)

    # the same analysis without preservation does disturb what the assertions above check
    analyze(model, batches, mode="train", preserve_state=False)
    running = [k for k in before["state"] if k.endswith("running_mean") or k.endswith("num_batches_tracked")]
    assert any(not torch.equal(before["state"][k], model.state_dict()[k]) for k in running)
    # dropout draws random numbers; a model without dropout leaves the generator where it was
    assert torch.equal(torch.get_rng_state(), before["torch_rng"]) is not has_dropout
    assert all(m.training for m in model.modules())
    _assert_no_hooks(model)


def test_eval_mode_runs_in_eval_and_hooks_go_even_when_the_forward_fails():
    model = TokenNet(dropout=0.5)
    seen = []
    model.encoder.register_forward_pre_hook(lambda m, args: seen.append(m.training))
    analyze(model, image_batches(n=1), mode="eval")
    assert seen == [False] and model.training
    model.encoder._forward_pre_hooks.clear()
    with pytest.raises(RuntimeError):
        analyze(model, [(torch.randn(2, 5, 8, 8), torch.tensor([0, 1]))])  # wrong channel count
    _assert_no_hooks(model)
    from bench.core.errors import BenchError

    with pytest.raises(BenchError):
        analyze(model, [])
    with pytest.raises(BenchError):
        analyze(model, image_batches(n=1), mode="test")


def test_max_batches_limits_the_batches_read():
    consumed = []

    def stream():
        for batch in image_batches(n=5):
            consumed.append(1)
            yield batch

    report = analyze(TokenNet(), stream(), max_batches=2)
    assert report.batches == 2 and len(consumed) == 2


def test_the_report_records_how_many_batches_of_what_size_it_analysed():
    batches = image_batches(n=2, batch=4) + image_batches(n=1, batch=3, seed=1)
    report = analyze(TokenNet(), iter(batches))
    assert (report.batches, report.batch_size) == (3, 4)
    assert "3 batches of up to 4, train mode" in text_report(report)
    assert GradFlowReport.from_json(report.to_json()).batch_size == 4


# ---------------------------------------------------------------------------------------------
# verdicts, scores, flow patterns


def test_health_scores_on_crafted_model_with_dead_and_exploding_layers():
    torch.manual_seed(0)
    model = Crafted()
    report = analyze(model, vector_batches())
    assert report.not_observed == ["unused"]
    assert [layer.name for layer in report.layers] == ["inp", "dead", "loud", "attn.out_proj", "head"]
    verdicts = {layer.name: (layer.verdict, layer.severity) for layer in report.layers}
    assert verdicts == {
        "inp": ("healthy", None),
        "dead": ("vanishing", "high"),
        "loud": ("exploding", "high"),
        "attn.out_proj": ("healthy", None),
        "head": ("healthy", None),
    }
    assert report.layer("dead").mean_norm == 0.0
    assert report.health_score == pytest.approx(3 / 5)
    # the original hooked 6 modules; out_proj never fired and `unused` never ran: healthy = inp, head
    assert report.notebook.hooked == ("inp", "dead", "loud", "attn.out_proj", "head", "unused")
    assert set(report.notebook.unobservable) == {"attn.out_proj", "unused"}
    assert report.health_score_notebook == pytest.approx(2 / 6)
    assert (report.n_vanishing, report.n_exploding, report.n_healthy) == (1, 1, 3)
    # the raw records alone reproduce the report exactly at its own thresholds...
    again = score(report.records, report.thresholds, report.notebook)
    assert again["health_score"] == report.health_score
    assert again["health_score_notebook"] == report.health_score_notebook
    assert (again["n_vanishing"], again["n_exploding"]) == (report.n_vanishing, report.n_exploding)
    # ...and a fresh analysis at other thresholds gives what the stored records give
    for other in (GradFlowThresholds(1e-6, 1e9), GradFlowThresholds(1e-30, 1e9), GradFlowThresholds(0.05, 1e9)):
        fresh = analyze(model, vector_batches(), thresholds=other)
        recomputed = report.score(other)
        assert recomputed["health_score"] == fresh.health_score
        assert recomputed["health_score_notebook"] == fresh.health_score_notebook
        assert (recomputed["n_vanishing"], recomputed["n_exploding"]) == (fresh.n_vanishing, fresh.n_exploding)
    assert report.score(GradFlowThresholds(1e-6, 1e9))["health_score"] == pytest.approx(4 / 5)  # loud now healthy


def test_layer_statistics_and_severity_bands():
    t = GradFlowThresholds()
    layer = layer_statistics("a", "Linear", 0, 1, [1.0, 3.0], [0.1, 0.3], [0.2, 0.4], [1.0, 2.0], [], t)
    assert (layer.mean_norm, layer.std_norm, layer.min_norm, layer.max_norm) == (2.0, 1.0, 1.0, 3.0)
    assert layer.norm_ratio == pytest.approx(3.0 / (1.0 + 1e-8))
    assert (layer.mean_gradient, layer.std_gradient, layer.max_gradient) == pytest.approx((0.2, 0.3, 1.5))
    assert layer.mean_param_grad_norm is None
    bands = {
        5e-9: ("vanishing", "high"),
        5e-7: ("vanishing", "medium"),
        1e-6: ("healthy", None),  # exactly at the threshold
        50.0: ("exploding", "medium"),
        500.0: ("exploding", "high"),
        float("nan"): ("exploding", "high"),
    }
    for norm, expected in bands.items():
        stats = layer_statistics("a", "Linear", 0, 1, [norm], [0.0], [0.0], [0.0], [1.0], t)
        assert (stats.verdict, stats.severity) == expected, norm


def test_flow_patterns_pair_names_with_their_own_values():
    names = [f"l{i}" for i in range(10)]
    norms = [1.0] * 9 + [1e-3]
    flow = flow_patterns(names, norms, notebook_norms=[1.0, 2.0, 0.0, 4.0])
    assert flow.bottlenecks == [{"name": "l9", "mean_norm": 1e-3, "position": 0.9}]
    assert flow.decay_rates == [1.0] * 8 + [1000.0]
    assert flow.decay_rate_median == 1.0
    # consecutive ratios telescope: their geometric mean is (first / last) ** (1 / (n - 1))
    assert flow.decay_rate_geomean == pytest.approx(1000.0 ** (1 / 9))
    # the original's mean: ratios 0.5 and 0 / 4; the zero denominator (2.0 / 0.0) is skipped
    assert flow.decay_rate_mean_notebook == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------------
# outputs


def test_json_round_trip_text_report_and_plot(tmp_path):
    torch.manual_seed(0)
    report = analyze(Crafted(), vector_batches())
    restored = GradFlowReport.from_json(report.to_json())
    assert restored == report
    assert restored.score(GradFlowThresholds(1e-6, 1e9)) == report.score(GradFlowThresholds(1e-6, 1e9))

    text = text_report(report)
    loud = report.layer("loud").mean_norm
    for line in (
        "Overall Gradient Health Score: 60.00% (healthy / layers with data: 3/5)",
        "Notebook formula (healthy / hooks the original registered): 33.33% (2/6)",
        "Verdict: Moderate gradient flow issues detected",
        "Vanishing Gradient Layers (1):",
        "  dead: 0.00e+00 [HIGH]",
        "Exploding Gradient Layers (1):",
        f"  loud: {loud:.2e} [HIGH]",
        "  Total layers analyzed: 5",
        "Not observed (analysed modules that produced no gradient): unused",
    ):
        assert line in text.splitlines(), line
    assert "Average gradient decay rate: " in text

    png = plot(report, tmp_path / "flow.png", dpi=40)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    paths = gradflow.save(report, tmp_path / "out", dpi=40)
    assert GradFlowReport.from_json(paths["json"].read_text()) == report
    assert paths["txt"].read_text() == text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gradflow.json", "gradflow.png", "gradflow.txt"]
