"""Run specs: protocol defaults, a stable config hash, study files and their overrides."""

import dataclasses
import re

import pytest

from bench.config import studyfile
from bench.config.spec import GradFlowConfig, ModelConfig, RunSpec, TrainConfig
from bench.core.errors import BenchError


def test_protocol_defaults():
    spec = RunSpec("digits", "resnet18")
    assert (spec.train.lr, spec.train.weight_decay, spec.train.max_epochs) == (1e-3, 1e-4, 100)
    assert (spec.train.plateau_factor, spec.train.plateau_patience, spec.train.min_lr) == (0.2, 3, 1e-7)
    assert spec.train.early_stopping_patience == 7
    assert (spec.gradflow.vanishing, spec.gradflow.exploding) == (1e-6, 10.0)
    assert spec.restore_best is True and spec.gradflow_split == "train"
    assert spec.split_seed == 42 and spec.run_name == "digits/resnet18/42"


def test_notebook_mode_evaluates_last_epoch_on_original_gradflow_split():
    spec = RunSpec("digits", "resnet18", preprocessing="notebook")
    assert spec.restore_best is False and spec.gradflow_split == "test"


@pytest.mark.parametrize("model", ["resnet18", "senet18", "cbam18", "gradattn-nope", "gradattn-lpe", "gradattn-rope"])
def test_protocol_mode_resolves_one_init_policy_and_the_shared_encoder(model):
    protocol = RunSpec("cifar10", model).resolved().model_config
    notebook = RunSpec("cifar10", model, preprocessing="notebook").resolved().model_config
    assert (protocol.init, notebook.init) == ("uniform", "per-model")
    if model.startswith("gradattn"):
        assert (protocol.encoder, notebook.encoder) == ("shared", "published")
    else:
        assert protocol.encoder is None and protocol.d_model is None  # a ResNet has neither


def test_the_notebook_no_pe_size_per_dataset_is_the_published_cells():
    from bench.core import published

    nope = [c for c in published.cells() if c.model == "gradattn-nope"]
    assert len(nope) == 8
    for cell in nope:
        config = RunSpec(cell.dataset, "gradattn-nope", preprocessing="notebook").resolved().model_config
        assert f"{config.d_model}/{config.nhead}/{config.dim_feedforward}" == cell.transformer, cell
        lpe = RunSpec(cell.dataset, "gradattn-lpe", preprocessing="notebook").resolved().model_config
        assert (lpe.d_model, lpe.nhead, lpe.dim_feedforward) == (256, 8, 512)
        protocol = RunSpec(cell.dataset, "gradattn-nope").resolved().model_config
        assert (protocol.d_model, protocol.nhead, protocol.dim_feedforward) == (256, 8, 512)


def test_a_preset_applies_only_to_the_models_it_names():
    small = ModelConfig(preset="nope-small")
    nope = RunSpec("digits", "gradattn-nope", model_config=small).resolved().model_config
    lpe = RunSpec("digits", "gradattn-lpe", model_config=small).resolved().model_config
    assert (nope.d_model, nope.nhead, nope.dim_feedforward) == (32, 16, 2)
    assert (lpe.d_model, lpe.nhead, lpe.dim_feedforward, lpe.preset) == (256, 8, 512, "none")
    # "none" keeps the published size where notebook mode would shrink No PE
    spelled = RunSpec("cifar10", "gradattn-nope", preprocessing="notebook", model_config=ModelConfig(preset="none"))
    assert spelled.resolved().model_config.d_model == 256


def test_writing_a_default_out_keeps_the_hash_and_analysis_settings_do_not_change_it():
    spec = RunSpec("cifar10", "gradattn-nope")
    same = [
        dataclasses.replace(spec, model_config=ModelConfig(d_model=256, nhead=8, init="uniform", encoder="shared")),
        dataclasses.replace(spec, train=TrainConfig(batch_size=128, restore_best=True)),
        dataclasses.replace(spec, gradflow=GradFlowConfig(split="train", vanishing=1e-8, exploding=100.0)),
        dataclasses.replace(spec, split_seed=42),
    ]
    assert {s.config_hash() for s in same} == {spec.config_hash()}
    notebook = RunSpec("cifar10", "gradattn-nope", preprocessing="notebook")
    explicit = dataclasses.replace(notebook, model_config=ModelConfig(d_model=32, nhead=16, dim_feedforward=2))
    assert explicit.config_hash() == notebook.config_hash()  # the preset is the sizes it resolves to


def test_mlflow_params_show_resolved_values():
    params = RunSpec("cifar10", "gradattn-rope").flat_params()
    assert params["model_config.d_model"] == 256 and params["train.batch_size"] == 128
    assert params["model_config.init"] == "uniform" and params["split_seed"] == 42
    assert None not in params.values()
    assert "model_config.d_model" not in RunSpec("cifar10", "resnet18").flat_params()


def test_notebook_deviations_name_what_differs_from_the_published_cell():
    faithful = RunSpec("cifar10", "gradattn-nope", seed=7, preprocessing="notebook")
    assert faithful.notebook_deviations() == []
    short = dataclasses.replace(faithful, train=TrainConfig(max_epochs=2))
    assert short.notebook_deviations() == ["train.max_epochs=2"]


def test_config_hash_is_stable_and_sensitive():
    spec = RunSpec("digits", "gradattn-rope", seed=1)
    assert spec.config_hash() == RunSpec("digits", "gradattn-rope", seed=1).config_hash()
    assert len(spec.config_hash()) == 16
    # spelling a default out gives the same identity
    explicit = dataclasses.replace(spec, train=TrainConfig(restore_best=True))
    assert explicit.config_hash() == spec.config_hash()
    changed = [
        dataclasses.replace(spec, seed=2),
        dataclasses.replace(spec, model="gradattn-lpe"),
        dataclasses.replace(spec, train=TrainConfig(lr=1e-4)),
        dataclasses.replace(spec, model_config=ModelConfig(d_model=128)),
        dataclasses.replace(spec, preprocessing="notebook"),
        dataclasses.replace(spec, split_seed=43),
    ]
    assert len({s.config_hash() for s in changed} | {spec.config_hash()}) == len(changed) + 1
    # analysis-only settings are recorded but change no training, so no identity
    analysis = [
        dataclasses.replace(spec, gradflow=GradFlowConfig(num_batches=3, every=2, split="val", mode="eval", vanishing=1e-7)),
        dataclasses.replace(spec, train=TrainConfig(restore_best=False)),
    ]
    assert {s.config_hash() for s in analysis} == {spec.config_hash()}
    assert analysis[0].flat_params()["gradflow.num_batches"] == 3


def test_round_trip_through_dict():
    spec = RunSpec("digits", "cbam18", seed=3, train=TrainConfig(max_epochs=2), model_config=ModelConfig(init="uniform"), split_seed=5)
    assert RunSpec.from_dict(spec.to_dict()) == spec


def test_flat_params_cover_every_setting():
    params = RunSpec("digits", "resnet18").flat_params()
    assert params["train.lr"] == 1e-3 and params["gradflow.split"] == "train" and params["model"] == "resnet18"


@pytest.mark.parametrize(
    "spec, fragment",
    [
        (RunSpec("nope", "resnet18"), "Unknown dataset"),
        (RunSpec("digits", "resnet99"), "Unknown model"),
        (RunSpec("digits", "resnet18", preprocessing="fancy"), "preprocessing must be one of protocol, notebook, got 'fancy'"),
        (RunSpec("digits", "resnet18", train=TrainConfig(max_epochs=0)), "train.max_epochs must be at least 1, got 0"),
        (RunSpec("digits", "resnet18", train=TrainConfig(lr=float("nan"))), "train.lr must be a finite number"),
        (RunSpec("digits", "resnet18", splits="official"), "digits has no 'official' splits"),
        (RunSpec("digits", "resnet18", gradflow=GradFlowConfig(vanishing=10, exploding=1)), "thresholds"),
    ],
)
def test_bad_specs_are_clear_errors(spec, fragment):
    with pytest.raises(BenchError, match=fragment):
        spec.validate()


def test_study_file_and_overrides(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        'seeds = [1, 2]\n[train]\nmax_epochs = 5\n[[grid]]\ndatasets = ["digits"]\nmodels = ["resnet18", "gradattn-*"]\n'
    )
    grid = studyfile.load(path)
    assert grid.pairs == [("digits", m) for m in ("resnet18", "gradattn-nope", "gradattn-lpe", "gradattn-rope")]
    grid = grid.overridden(seeds=[7], settings={"train.max_epochs": 2})
    specs = grid.specs()
    assert len(specs) == 4 and {s.seed for s in specs} == {7}
    assert all(s.train.max_epochs == 2 and s.train.lr == 1e-3 for s in specs)
    assert {s.split_seed for s in specs} == {42}
    crossed = grid.overridden(seeds=[1, 2], split_seeds=[42, 43]).specs()
    assert sorted({(s.seed, s.split_seed) for s in crossed}) == [(1, 42), (1, 43), (2, 42), (2, 43)]


def test_shipped_study_files_parse():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "studies"
    paper = studyfile.load(root / "paper.toml")
    assert len(paper.datasets) == 8 and len(paper.pairs) == 2 * 6 + 6 * 4
    smoke = studyfile.load(root / "smoke.toml")
    assert smoke.pairs == [("digits", m) for m in ("resnet18", "senet18", "cbam18", "gradattn-nope", "gradattn-lpe", "gradattn-rope")]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[[grid]]\ndatasets=['digits']\n", "needs both"),
        ("seeds=[1]\n", "no \\[\\[grid\\]\\]"),
        ("bogus=1\n[[grid]]\ndatasets=['digits']\nmodels=['all']\n", "Unknown key bogus \\(study file .*bad.toml\\)"),
        ("[train]\nlr_typo=1\n[[grid]]\ndatasets=['digits']\nmodels=['all']\n", "Unknown setting train.lr_typo \\(study file .*bad.toml, table \\[train\\]\\): .* such as train.lr"),
        ("[train]\nlr='fast'\n[[grid]]\ndatasets=['digits']\nmodels=['all']\n", "train.lr \\(study file .*bad.toml, table \\[train\\]\\) must be a number, got 'fast'"),
        ("[train]\nmax_epochs=2.5\n[[grid]]\ndatasets=['digits']\nmodels=['all']\n", "train.max_epochs .* must be an integer"),
        ("train=3\n[[grid]]\ndatasets=['digits']\nmodels=['all']\n", "must be a table of settings"),
        ("seeds=['a']\n[[grid]]\ndatasets=['digits']\nmodels=['all']\n", "seeds .* must be a list of integers"),
        ("[[grid]\n", "not valid TOML"),
    ],
)
def test_bad_study_files(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(BenchError, match=fragment):
        studyfile.load(path)


@pytest.mark.parametrize(
    "vanishing, exploding, fragment",
    [
        (10.0, 10.0, "0 < vanishing < exploding, got 10 and 10; set gradflow.vanishing and gradflow.exploding"),
        (20.0, 10.0, "0 < vanishing < exploding, got 20 and 10; set gradflow.vanishing and gradflow.exploding"),
        (1e-6, float("inf"), "gradflow.exploding must be a finite number"),  # the schema's own check, first
    ],
)
def test_a_threshold_pair_that_cannot_classify_is_refused(vanishing, exploding, fragment):
    spec = RunSpec("digits", "resnet18", gradflow=GradFlowConfig(vanishing=vanishing, exploding=exploding))
    with pytest.raises(BenchError, match=re.escape(fragment)):
        spec.validate()


def test_the_configuration_names_what_its_seeds_share_and_what_sets_it_apart():
    from bench.config.spec import schema

    assert RunSpec("digits", "resnet18", seed=43).configuration() == RunSpec("digits", "resnet18", seed=42).configuration() == "digits/resnet18"
    assert RunSpec("digits", "resnet18", preprocessing="notebook").configuration() == "digits/resnet18 notebook"
    assert RunSpec("digits", "resnet18", split_seed=43).configuration() == "digits/resnet18 split_seed=43"
    tuned = RunSpec.from_settings(schema().parse(["train.lr=3e-4", "gradflow.num_batches=1"]), "digits", "resnet18")
    assert tuned.configuration() == "digits/resnet18 train.lr=0.0003"  # analysis-only settings aside, as the report groups
