"""One schema: every setting is a field of the spec dataclasses, and the CLI, study files and the help
read it. A setting added to a dataclass, and nothing else, is listed, settable and checked everywhere."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

import pytest
from support import REPO, cli, store_args

from bench import tracking
from bench.config import studyfile
from bench.config.spec import RunSpec, schema
from bench.core.errors import BenchError


def test_every_field_of_every_section_is_a_setting_with_help():
    keys = schema().keys
    for name, section in schema().sections.items():
        for f in dataclasses.fields(section):
            assert f"{name}.{f.name}" in keys and f.metadata["help"].strip(), f.name
    assert {"preprocessing", "splits"} <= set(keys) and not {"dataset", "model", "seed", "split_seed"} & set(keys)


def test_set_parses_each_type_and_the_last_assignment_wins():
    values = schema().parse(
        ["train.lr=3e-4", "model.d_model=64", "train.restore_best=off", "gradflow.split=val", "preprocessing=notebook", "train.lr=1e-2"]
    )
    assert values == {"train.lr": 0.01, "model.d_model": 64, "train.restore_best": False, "gradflow.split": "val", "preprocessing": "notebook"}
    spec = RunSpec.from_settings(values, "digits", "gradattn-rope", seed=3)
    assert (spec.train.lr, spec.model_config.d_model, spec.restore_best, spec.gradflow_split, spec.seed) == (0.01, 64, False, "val", 3)


@pytest.mark.parametrize(
    "assignment, fragment",
    [
        ("train.lr=fast", "train.lr (command line: --set train.lr=fast) must be a number, got 'fast'."),
        ("train.batch_size=12.5", "train.batch_size (command line: --set train.batch_size=12.5) must be an integer"),
        ("train.compile=maybe", "must be true or false"),
        ("train.plateau_factor=1", "train.plateau_factor (command line: --set train.plateau_factor=1) must be below 1, got 1."),
        ("train.lr=inf", "must be a finite number"),
        ("gradflow.mode=sideways", "must be one of train, eval"),
        ("train.learning_rate=1", "Unknown setting train.learning_rate (command line: --set train.learning_rate=1): use one that `bench run --help` lists"),
        ("model.dmodel=64", "such as model.d_model"),
        ("train.lr", "--set takes KEY=VALUE"),
        ("train.lr=", "--set takes KEY=VALUE"),
    ],
)
def test_a_bad_assignment_is_one_sentence_naming_the_key_and_the_command_line(assignment, fragment):
    with pytest.raises(BenchError) as raised:
        schema().parse([assignment])
    assert fragment in str(raised.value) and "\n" not in str(raised.value)


def test_a_study_file_and_set_give_the_same_runs(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('preprocessing = "notebook"\n[train]\nlr = 3e-4\nrestore_best = true\n[model]\nd_model = 64\n'
                    '[[grid]]\ndatasets = ["digits"]\nmodels = ["gradattn-lpe"]\n')
    from_file = studyfile.load(path).specs()
    given = schema().parse(["preprocessing=notebook", "train.lr=3e-4", "train.restore_best=true", "model.d_model=64"])
    from_cli = studyfile.Grid(pairs=[("digits", "gradattn-lpe")], settings=given).specs()
    assert from_file == from_cli and from_file[0].config_hash() == from_cli[0].config_hash()
    # the command line overrides the file, key by key
    (overridden,) = studyfile.load(path).overridden(settings=schema().parse(["train.lr=1e-2"])).specs()
    assert (overridden.train.lr, overridden.model_config.d_model, overridden.preprocessing) == (1e-2, 64, "notebook")


def test_unset_settings_resolve_per_mode_and_spelled_out_mode_defaults_keep_the_hash():
    protocol = RunSpec.from_settings({}, "cifar10", "gradattn-nope")
    notebook = RunSpec.from_settings({"preprocessing": "notebook"}, "cifar10", "gradattn-nope")
    assert (protocol.restore_best, protocol.resolved().model_config.init) == (True, "uniform")
    assert (notebook.restore_best, notebook.resolved().model_config.d_model) == (False, 32)
    spelled = schema().parse(["train.restore_best=true", "model.init=uniform", "model.encoder=shared", "gradflow.split=train"])
    assert RunSpec.from_settings(spelled, "cifar10", "gradattn-nope").config_hash() == protocol.config_hash()


def test_run_help_lists_every_setting_with_its_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = cli(capsys, "run", "--help")
    assert code == 0
    for name, key in schema().keys.items():
        assert name in out and key.field.metadata["help"] in out, name
    assert "Adam learning rate. Default: 0.001. Protocol 3.1." in out
    assert "Default: the mode's (protocol true, notebook false)" in out  # read from MODE_DEFAULTS
    for gone in ("--lr ", "--d-model", "--gradflow-batches", "--preprocessing"):
        assert gone not in out


# -- a setting added to the spec, and nothing else -----------------------------------------------------

NEW_SETTING = '    warmup_epochs: int = setting(0, "Epochs of linear learning-rate warm-up.", minimum=0)\n'
ANCHOR = '    compile: bool = setting(False, "torch.compile the model.")\n'


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    """A copy of the package with one line added to TrainConfig in bench/config/spec.py, and a runner for it."""
    root = tmp_path_factory.mktemp("extended")
    shutil.copytree(REPO / "bench", root / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    spec_file = root / "bench" / "config" / "spec.py"
    source = spec_file.read_text()
    assert source.count(ANCHOR) == 1
    spec_file.write_text(source.replace(ANCHOR, ANCHOR + NEW_SETTING))

    def bench(*args: str) -> subprocess.CompletedProcess:
        env = os.environ | {"PYTHONPATH": str(root), "COLUMNS": "250", "PYTHONUNBUFFERED": "1"}
        return subprocess.run([sys.executable, "-m", "bench", *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)

    probe = bench("--version")
    assert probe.returncode == 0, probe.stderr
    return root, bench


def test_an_added_setting_is_listed_by_run_help(extended):
    _, bench = extended
    result = bench("run", "--help")
    assert result.returncode == 0, result.stderr
    assert "train.warmup_epochs" in result.stdout and "Epochs of linear learning-rate warm-up. Default: 0." in result.stdout


@pytest.mark.parametrize(
    "source, value, message",
    [
        ("set", "abc", "train.warmup_epochs (command line: --set train.warmup_epochs=abc) must be an integer, got 'abc'."),
        ("set", "-1", "train.warmup_epochs (command line: --set train.warmup_epochs=-1) must be at least 0, got -1."),
        ("file", '"two"', "train.warmup_epochs (study file {path}, table [train]) must be an integer, got 'two'."),
    ],
)
def test_an_added_setting_is_checked_from_the_command_line_and_a_study_file(extended, store, source, value, message):
    root, bench = extended
    path = root / f"bad-{source}.toml"
    path.write_text(f'[train]\nwarmup_epochs = {value}\n[[grid]]\ndatasets = ["synthetic"]\nmodels = ["resnet18"]\n')
    given = ["--set", f"train.warmup_epochs={value}"] if source == "set" else ["--study", str(path)]
    result = bench("run", "--datasets", "synthetic", "--models", "resnet18", *given, *store_args(store))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == f"error: {message.format(path=path)}\n"
    assert not (store["root"] / "mlflow.db").exists()


@pytest.mark.parametrize("source", ["set", "file"])
def test_an_added_setting_is_accepted_by_set_and_by_a_study_file(extended, store, source):
    # cifar10's files are not there: the command gets past every setting and stops at the data
    root, bench = extended
    path = root / "accepted.toml"
    path.write_text('[train]\nwarmup_epochs = 2\n[[grid]]\ndatasets = ["cifar10"]\nmodels = ["resnet18"]\n')
    given = ["--set", "train.warmup_epochs=2"] if source == "set" else ["--study", str(path)]
    result = bench("run", "--datasets", "cifar10", "--models", "resnet18", *given, *store_args(store))
    assert result.returncode == 2 and "1 requested dataset(s) are not in" in result.stderr, result.stderr


@pytest.mark.slow
def test_an_added_setting_is_taken_from_a_study_file_and_from_set_as_one_configuration(extended, store):
    root, bench = extended
    path = root / "warmup.toml"
    path.write_text('[train]\nwarmup_epochs = 2\nmax_epochs = 1\n[gradflow]\nnum_batches = 1\n'
                    '[[grid]]\ndatasets = ["synthetic"]\nmodels = ["resnet18"]\n')
    trained = bench("run", "--study", str(path), *store_args(store))
    assert trained.returncode == 0, trained.stdout + trained.stderr
    (run,) = tracking.runs_of(store["uri"], tracking.experiment_id(store["uri"], "test"))
    assert run.params["train.warmup_epochs"] == "2" and run.status == tracking.FINISHED
    same = ["--datasets", "synthetic", "--models", "resnet18", "--max-epochs", "1", "--set", "gradflow.num_batches=1"]
    again = bench("run", *same, "--set", "train.warmup_epochs=2", *store_args(store))
    assert again.returncode == 0 and "0 run(s) to do, 1 already finished" in again.stdout, again.stdout + again.stderr
