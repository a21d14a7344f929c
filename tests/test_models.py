"""The model registry and the six models against the facts of protocol section 1."""

from __future__ import annotations

import csv
import math
from importlib import resources

import pytest
import torch
import torch.nn as nn

import bench.models as models
from bench.core.errors import BenchError
from bench.models.rope import RotaryEmbedding

NAMES = models.names()  # every registered model
GRADATTN = models.names("gradattn-*")
NUM_CLASSES = 7


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The models are tiny per batch; extra threads only contend with other test processes."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def meta_count(name: str, num_classes: int = 10, in_channels: int = 3, **config) -> int:
    """Parameter count without allocating or initialising anything."""
    with torch.device("meta"):
        return models.count_parameters(models.build(name, num_classes, in_channels, **config))


def seeded(
    name: str, seed: int = 0, num_classes: int = NUM_CLASSES, in_channels: int = 3, **config
) -> nn.Module:
    torch.manual_seed(seed)
    return models.build(name, num_classes, in_channels, **config)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- catalogue -----------------------------------------------------------------------------------


def test_names_in_registration_order_and_wildcards():
    assert models.names() == ["resnet18", "senet18", "cbam18", "gradattn-nope", "gradattn-lpe", "gradattn-rope"]
    assert models.names("gradattn-*") == ["gradattn-nope", "gradattn-lpe", "gradattn-rope"]
    assert models.expand("all") == models.names()
    assert models.expand("cbam18, gradattn-*,resnet18") == ["cbam18", "gradattn-nope", "gradattn-lpe", "gradattn-rope", "resnet18"]


def test_info_describes_each_model():
    for name in NAMES:
        info = models.info(name)
        assert info.name == name and info.description and info.reference_params
        assert info.family == ("gradattn" if name.startswith("gradattn") else "resnet")
    assert models.info("resnet18").options == ("init",)
    assert set(models.info("gradattn-rope").options) == {
        "num_layers", "d_model", "nhead", "dim_feedforward", "dropout", "init", "encoder", "preset"
    }
    assert {n: models.info(n).protocol_section for n in NAMES} == {
        "resnet18": "1.2", "senet18": "1.3", "cbam18": "1.4", "gradattn-nope": "1.6", "gradattn-lpe": "1.7", "gradattn-rope": "1.8"
    }


@pytest.mark.parametrize("spec", ["resnet50", "gradattn-*,vit", ""])
def test_unknown_names_are_user_errors(spec):
    with pytest.raises(BenchError):
        models.expand(spec)
    with pytest.raises(BenchError, match="Unknown model"):
        models.build("resnet50", 10, 3)


# --- parameter counts (protocol 1.10) ------------------------------------------------------------

REFERENCES = [
    (name, in_channels, num_classes, count)
    for name in NAMES
    for (in_channels, num_classes), count in models.info(name).reference_params.items()
]


# The notebooks' names, and their datasets' (in_channels, num_classes), for their printed results.
NOTEBOOK_MODEL = {"ResNet-18": "resnet18", "SE-ResNet-18": "senet18", "CBAM-ResNet-18": "cbam18",
                  "GradAttn-NoPE": "gradattn-nope", "GradAttn-LPE": "gradattn-lpe", "GradAttn-RoPE": "gradattn-rope"}
NOTEBOOK_SHAPE = {"CIFAR-10": (3, 10), "FashionMNIST": (1, 10), "SVHN": (3, 10), "BloodMNIST": (3, 8),
                  "TissueMNIST": (3, 8), "PCam": (3, 2), "PAD-UFES-20": (3, 6), "Tiny-ImageNet": (3, 200)}


def printed_counts() -> list[tuple[str, int, int, int]]:
    """(model, in_channels, num_classes, total parameters) of the notebooks' printed results
    (bench/resources/notebook_results.csv) at the published default sizes (no 32/16/2 No PE)."""
    with resources.files("bench").joinpath("resources/notebook_results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return [
        (NOTEBOOK_MODEL[row["model"]], *NOTEBOOK_SHAPE[row["dataset"]], int(row["params"]))
        for row in rows
        if row["transformer_d_h_ff"] in ("", "256/8/512")
    ]


def test_stored_reference_counts_are_the_printed_ones():
    printed = printed_counts()
    stored = {(name, c, k): count for name, c, k, count in REFERENCES}
    assert len(printed) >= 25
    assert [row for row in printed if stored.get(row[:3]) != row[3]] == []
    assert set(stored) == {row[:3] for row in printed}  # and nothing stored that was not printed
    # every model has the two shapes of the three-dataset comparison (CIFAR-10 / SVHN and FashionMNIST)
    assert all({(3, 10), (1, 10)} <= set(models.info(name).reference_params) for name in NAMES)


@pytest.mark.parametrize(("name", "in_channels", "num_classes", "count"), REFERENCES)
def test_parameter_count_matches_the_notebooks(name, in_channels, num_classes, count):
    assert meta_count(name, num_classes, in_channels) == count


@pytest.mark.parametrize(
    ("in_channels", "num_classes", "count"),
    [(3, 10, 11_049_488), (1, 10, 11_043_216), (3, 8, 11_049_422), (3, 2, 11_049_224), (3, 6, 11_049_356),
     (3, 200, 11_055_758)],
)
def test_nope_small_preset_matches_the_published_no_pe_runs(in_channels, num_classes, count):
    assert meta_count("gradattn-nope", num_classes, in_channels, preset="nope-small") == count


def test_real_build_counts_like_the_meta_build():
    model = seeded("gradattn-rope", num_classes=10)
    assert models.count_parameters(model) == 12_847_690
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in model.parameters())


def test_explicit_keys_override_the_preset():
    model = models.build("gradattn-nope", 10, 3, preset="nope-small", d_model=64)
    config = model.transformer_config
    assert (config.d_model, config.nhead, config.dim_feedforward) == (64, 16, 2)


def test_none_means_default():
    assert meta_count("gradattn-lpe", d_model=None, nhead=None, preset=None, encoder=None) == 12_851_274
    assert meta_count("senet18", init=None) == 11_268_682


# --- shapes: forward at every input size, backward once per model --------------------------------


@pytest.fixture(scope="module", params=[1, 3], ids=["1ch", "3ch"])
def built(request):
    in_channels = request.param
    return in_channels, {name: seeded(name, in_channels=in_channels) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes_at_every_input_size(built, name):
    in_channels, zoo = built
    model = zoo[name].train()
    for size in (28, 32, 64, 96):
        out = model(torch.randn(2, in_channels, size, size))
        assert out.shape == (2, NUM_CLASSES) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(built, name):
    in_channels, zoo = built
    model = zoo[name].train()
    model.zero_grad(set_to_none=True)
    size = 28 if in_channels == 1 else 32
    logits = model(torch.randn(2, in_channels, size, size))
    nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("name", GRADATTN)
def test_gradattn_tokens_are_five_depth_levels(name):
    model = seeded(name, d_model=32, nhead=4, dim_feedforward=16).eval()
    assert model.token_names == ("stem", "layer1", "layer2", "layer3", "layer4")
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        tokens = model.tokens(x)
        assert tokens.shape == (2, 5, 32)
        manual = model.classifier(model.encode(tokens).mean(dim=1))
        torch.testing.assert_close(model(x), manual)


# --- position schemes ----------------------------------------------------------------------------

PERMUTATION = [4, 2, 0, 3, 1]


def encode_with_permuted_tokens(name: str, encoder: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    model = seeded(name, d_model=64, nhead=4, dim_feedforward=128, encoder=encoder).eval()
    with torch.no_grad():
        tokens = model.tokens(torch.randn(2, 3, 32, 32))
        return model.encode(tokens), model.encode(tokens[:, PERMUTATION]), tokens


@pytest.mark.parametrize("encoder", ["published", "shared"])
def test_no_pe_encoder_is_permutation_equivariant(encoder):
    encoded, permuted, _ = encode_with_permuted_tokens("gradattn-nope", encoder)
    torch.testing.assert_close(permuted, encoded[:, PERMUTATION], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(permuted.mean(dim=1), encoded.mean(dim=1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("encoder", ["published", "shared"])
@pytest.mark.parametrize("name", ["gradattn-rope", "gradattn-lpe"])
def test_positional_variants_depend_on_token_order(name, encoder):
    encoded, permuted, _ = encode_with_permuted_tokens(name, encoder)
    assert (permuted.mean(dim=1) - encoded.mean(dim=1)).abs().max() > 1e-3


def test_rotary_scores_depend_only_on_relative_position():
    rotary = RotaryEmbedding(head_dim=8)
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    # The same vectors at positions (t, s) for t, s in 0..5; rotation keeps norms.
    qs, ks = rotary(q.expand(1, 6, 1, 8).contiguous(), k.expand(1, 6, 1, 8).contiguous())
    torch.testing.assert_close(qs.norm(dim=-1), q.norm(dim=-1).expand(1, 6, 1))
    score = lambda t, s: (qs[0, t, 0] * ks[0, s, 0]).sum()  # noqa: E731
    torch.testing.assert_close(score(1, 3), score(2, 4))
    torch.testing.assert_close(score(0, 0), (q * k).sum())
    assert not torch.allclose(score(1, 3), score(3, 1))


@pytest.mark.parametrize("encoder", ["published", "shared"])
@pytest.mark.parametrize("d_model", [256, 64])
def test_learned_embedding_adds_five_d_model_parameters(encoder, d_model):
    nope = meta_count("gradattn-nope", d_model=d_model, encoder=encoder)
    assert meta_count("gradattn-lpe", d_model=d_model, encoder=encoder) - nope == 5 * d_model
    small = meta_count("gradattn-nope", preset="nope-small")
    assert meta_count("gradattn-lpe", d_model=32, nhead=16, dim_feedforward=2) - small == 5 * 32


def test_a_preset_names_its_models_and_refuses_the_others():
    with pytest.raises(BenchError, match="applies to gradattn-nope only"):
        models.build("gradattn-lpe", 10, 3, preset="nope-small")
    assert meta_count("gradattn-lpe", preset="none") == 12_851_274


def test_no_pe_and_lpe_share_every_other_initial_weight_under_one_seed():
    nope, lpe = seeded("gradattn-nope"), seeded("gradattn-lpe")
    lpe_weights = {k: v for k, v in lpe.state_dict().items() if k != "pos_embedding"}
    assert lpe_weights.keys() == nope.state_dict().keys()
    assert all(torch.equal(v, nope.state_dict()[k]) for k, v in lpe_weights.items())
    table = lpe.pos_embedding
    assert table.shape == (1, 5, 256) and 0.9 < table.std().item() < 1.1  # N(0, 1), protocol 1.7


# --- published encoders (protocol 1.6-1.8) -------------------------------------------------------


def test_published_no_pe_layers_start_identical():
    layers = seeded("gradattn-nope").transformer_encoder.layers
    assert len(layers) == 3 and all(isinstance(layer, nn.TransformerEncoderLayer) for layer in layers)
    assert same_weights(layers[0], layers[1]) and same_weights(layers[0], layers[2])
    assert layers[0].self_attn.batch_first and not layers[0].norm_first


def test_published_rope_layers_differ_and_lack_qkv_bias():
    layers = seeded("gradattn-rope").transformer_layers
    assert len(layers) == 3 and not same_weights(layers[0], layers[1])
    attention = layers[0].self_attn
    assert attention.w_q.bias is None and attention.w_k.bias is None and attention.w_v.bias is None
    assert attention.w_o.bias is not None
    assert layers[0].activation.inplace  # the published in-place ReLU after linear1 (protocol 1.8)


def test_num_layers_sets_the_depth():
    assert len(seeded("gradattn-nope", num_layers=2, d_model=32, nhead=4).transformer_encoder.layers) == 2
    assert len(seeded("gradattn-rope", num_layers=5, d_model=32, nhead=4).transformer_layers) == 5


# --- shared encoder --------------------------------------------------------------------------------


def test_shared_encoder_counts_equal_the_published_no_pe():
    published_nope = meta_count("gradattn-nope")
    assert meta_count("gradattn-nope", encoder="shared") == published_nope
    assert meta_count("gradattn-rope", encoder="shared") == published_nope
    assert meta_count("gradattn-lpe", encoder="shared") == published_nope + 5 * 256
    d, f = 64, 96  # per layer 4d^2 + 2df + f + 9d
    per_layer = 4 * d * d + 2 * d * f + f + 9 * d
    two = meta_count("gradattn-rope", encoder="shared", num_layers=2, d_model=d, nhead=4, dim_feedforward=f)
    three = meta_count("gradattn-rope", encoder="shared", num_layers=3, d_model=d, nhead=4, dim_feedforward=f)
    assert three - two == per_layer


def test_shared_variants_differ_only_by_position_scheme():
    nope, lpe, rope = (seeded(name, encoder="shared") for name in GRADATTN)
    # No RNG is spent on the position scheme itself, so one seed gives identical weights.
    assert same_weights(nope, rope)
    assert {k: v.shape for k, v in lpe.state_dict().items() if k != "pos_embedding"} == {
        k: v.shape for k, v in nope.state_dict().items()
    }
    assert nope.transformer_layers[0].self_attn.rotary is None
    assert rope.transformer_layers[0].self_attn.rotary is not None
    layers = nope.transformer_layers
    assert not same_weights(layers[0], layers[1])  # independent layers
    assert not layers[0].activation.inplace


def test_shared_attention_is_initialised_like_multihead_attention():
    attention = seeded("gradattn-nope", encoder="shared").transformer_layers[0].self_attn
    reference = nn.MultiheadAttention(256, 8)
    bound = math.sqrt(6 / (256 + 3 * 256))
    for projection in (attention.w_q, attention.w_k, attention.w_v):
        assert projection.weight.abs().max() <= bound
        expected_std = reference.in_proj_weight.std().item()
        assert projection.weight.std().item() == pytest.approx(expected_std, rel=0.05)
        assert torch.count_nonzero(projection.bias) == 0
    assert torch.count_nonzero(attention.w_o.bias) == 0


# --- initialisation policies (protocol 1.9, 7.12) ------------------------------------------------


@pytest.mark.parametrize("name", ["senet18", "cbam18"])
def test_se_and_cbam_protocol_init(name):
    model = seeded(name)
    assert model.fc.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert torch.count_nonzero(model.fc.bias) == 0
    conv = model.layer1[0].conv1  # kaiming normal, fan_out = 64 * 3 * 3
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.1)


def test_se_excitation_protocol_init():
    excitation = seeded("senet18").layer4[0].se.excitation
    assert isinstance(excitation[0], nn.Flatten)
    assert excitation[1].weight.std().item() == pytest.approx(0.01, rel=0.15)


@pytest.mark.parametrize("name", ["senet18", "cbam18"])
def test_uniform_init_keeps_pytorch_defaults(name):
    model = seeded(name, init="uniform")
    bound = 1 / math.sqrt(512)  # nn.Linear's default kaiming-uniform(a=sqrt(5)) bound
    assert model.fc.weight.abs().max() <= bound
    assert model.fc.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    assert torch.count_nonzero(model.fc.bias) > 0
    # The same architecture under the two policies starts from different weights.
    assert not same_weights(model, seeded(name, init="per-model"))


@pytest.mark.parametrize("name", ["resnet18", "gradattn-nope", "gradattn-lpe", "gradattn-rope"])
def test_uniform_equals_per_model_for_models_that_keep_defaults(name):
    config = {} if name == "resnet18" else {"d_model": 32, "nhead": 4}
    assert same_weights(seeded(name, init="per-model", **config), seeded(name, init="uniform", **config))


# --- module names the gradient-flow analyzer relies on (protocol 5.2, 6.4) ------------------------


def hook_names(model: nn.Module) -> list[str]:
    hooked = (nn.Conv2d, nn.Linear, nn.TransformerEncoderLayer)
    return [
        f"{name}_{type(module).__name__}_{index}"
        for index, (name, module) in enumerate(
            (n, m) for n, m in model.named_modules() if isinstance(m, hooked)
        )
    ]


@pytest.mark.parametrize(
    ("name", "count", "printed"),
    [
        ("resnet18", 21, ["layer4.1.conv1_Conv2d_18", "layer4.1.conv2_Conv2d_19"]),
        ("senet18", 37, ["layer2.0.se.excitation.1_Linear_11", "layer3.1.se.excitation.1_Linear_25",
                         "layer4.1.conv1_Conv2d_32", "layer4.1.se.excitation.1_Linear_34"]),
        ("cbam18", 45, ["layer3.1.cbam.channel_attention.shared_mlp.0_Conv2d_30",
                        "layer4.1.conv1_Conv2d_39",
                        "layer4.1.cbam.channel_attention.shared_mlp.0_Conv2d_41"]),
        ("gradattn-nope", 35, ["layer4.1.conv2_Conv2d_16"]),
        ("gradattn-rope", 41, ["transformer_layers.0.self_attn.w_q_Linear_22",
                               "transformer_layers.1.self_attn.w_k_Linear_29"]),
    ],
)
def test_hook_names_match_the_printed_reports(name, count, printed):
    with torch.device("meta"):
        names = hook_names(models.build(name, 10, 3))
    assert len(names) == count
    assert set(printed) <= set(names)


# --- user errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "config", "message"),
    [
        ("gradattn-nope", {"depth": 3}, "Unknown model option 'depth'"),
        ("resnet18", {"d_model": 64}, "does not apply to resnet18"),
        ("senet18", {"encoder": "shared"}, "does not apply"),
        ("gradattn-nope", {"d_model": 250}, "divisible by nhead"),
        ("gradattn-rope", {"d_model": 24}, "even head dimension"),
        ("gradattn-rope", {"d_model": 24, "encoder": "shared"}, "even head dimension"),
        ("gradattn-nope", {"num_layers": 0}, "num_layers must be a positive integer"),
        ("gradattn-lpe", {"d_model": -8}, "d_model must be a positive integer"),
        ("gradattn-nope", {"nhead": 0}, "nhead must be a positive integer"),
        ("gradattn-nope", {"dim_feedforward": 0}, "dim_feedforward must be a positive integer"),
        ("gradattn-nope", {"d_model": 64.0}, "d_model must be a positive integer"),
        ("gradattn-nope", {"num_layers": True}, "num_layers must be a positive integer"),
        ("gradattn-nope", {"dropout": 1.0}, r"dropout must be a number in \[0, 1\)"),
        ("gradattn-nope", {"dropout": -0.1}, "dropout must be a number"),
        ("gradattn-nope", {"dropout": "0.1"}, "dropout must be a number"),
        ("gradattn-nope", {"preset": "tiny"}, "Unknown preset 'tiny'"),
        ("gradattn-rope", {"encoder": "torch"}, "Unknown encoder 'torch'"),
        ("cbam18", {"init": "xavier"}, "Unknown init 'xavier'"),
        ("gradattn-lpe", {"init": "kaiming"}, "Unknown init 'kaiming'"),
    ],
)
def test_invalid_options_raise_bench_errors(name, config, message):
    with pytest.raises(BenchError, match=message):
        meta_count(name, **config)


@pytest.mark.parametrize(("num_classes", "in_channels"), [(0, 3), (10, 0), (10, -1), (2.0, 3), (10, True)])
def test_invalid_task_shape_raises_bench_error(num_classes, in_channels):
    with pytest.raises(BenchError, match="must be a positive integer"):
        models.build("resnet18", num_classes, in_channels)


def test_odd_head_dimension_is_fine_without_rotary():
    assert meta_count("gradattn-nope", d_model=24, nhead=8) > 0
    assert meta_count("gradattn-lpe", d_model=24, nhead=8, encoder="shared") > 0
