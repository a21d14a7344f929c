"""Run specs: protocol defaults, a stable config hash, study files and their overrides."""

import dataclasses

import pytest

from bench import studyfile
from bench.errors import BenchError
from bench.spec import GradFlowConfig, ModelConfig, RunSpec, TrainConfig


def test_protocol_defaults():
    spec = RunSpec("digits", "resnet18")
    assert (spec.train.lr, spec.train.weight_decay, spec.train.max_epochs) == (1e-3, 1e-4, 100)
    assert (spec.train.plateau_factor, spec.train.plateau_patience, spec.train.min_lr) == (0.2, 3, 1e-7)
    assert spec.train.early_stopping_patience == 7
    assert (spec.gradflow.vanishing, spec.gradflow.exploding) == (1e-6, 10.0)
    assert spec.restore_best is True and spec.gradflow_split == "val"


def test_notebook_mode_evaluates_last_epoch_on_original_gradflow_split():
    spec = RunSpec("digits", "resnet18", preprocessing="notebook")
    assert spec.restore_best is False and spec.gradflow_split == "test"


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
        dataclasses.replace(spec, gradflow=GradFlowConfig(vanishing=1e-7)),
        dataclasses.replace(spec, preprocessing="notebook"),
    ]
    assert len({s.config_hash() for s in changed} | {spec.config_hash()}) == len(changed) + 1


def test_round_trip_through_dict():
    spec = RunSpec("digits", "cbam18", seed=3, train=TrainConfig(max_epochs=2), model_config=ModelConfig(init="uniform"))
    assert RunSpec.from_dict(spec.to_dict()) == spec


def test_flat_params_cover_every_setting():
    params = RunSpec("digits", "resnet18").flat_params()
    assert params["train.lr"] == 1e-3 and params["gradflow.split"] == "val" and params["model"] == "resnet18"


@pytest.mark.parametrize(
    "spec, fragment",
    [
        (RunSpec("nope", "resnet18"), "Unknown dataset"),
        (RunSpec("digits", "resnet99"), "Unknown model"),
        (RunSpec("digits", "resnet18", preprocessing="fancy"), "--preprocessing"),
        (RunSpec("digits", "resnet18", train=TrainConfig(max_epochs=0)), "--max-epochs"),
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
    grid = studyfile.override(grid, seeds=[7], **{"train.max_epochs": 2, "train.lr": None})
    specs = grid.specs()
    assert len(specs) == 4 and {s.seed for s in specs} == {7}
    assert all(s.train.max_epochs == 2 and s.train.lr == 1e-3 for s in specs)


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
        ("bogus=1\n[[grid]]\ndatasets=['digits']\nmodels=['all']\n", "unknown keys"),
        ("[train]\nlr_typo=1\n[[grid]]\ndatasets=['digits']\nmodels=['all']\n", "unknown keys"),
        ("[[grid]\n", "not valid TOML"),
    ],
)
def test_bad_study_files(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(BenchError, match=fragment):
        studyfile.load(path)
