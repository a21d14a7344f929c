"""`bench models` run as a real process, and the lazy-import promise of the CLI package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench import models

COUNTS_3CH_10 = {
    "resnet18": "11,181,642",
    "senet18": "11,268,682",
    "cbam18": "11,269,466",
    "gradattn-nope": "12,849,994",
    "gradattn-lpe": "12,851,274",
    "gradattn-rope": "12,847,690",
}


def run(*command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "bench", *args)


def rows(stdout: str) -> dict[str, list[str]]:
    """Table rows keyed by model name (first cell), cells stripped of the box characters."""
    table = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.replace("┃", "│").split("│")[1:-1]]
        if cells and cells[0]:
            table[cells[0]] = cells[1:]
    return table


def test_models_lists_the_six_models_with_reference_counts():
    result = bench("models")
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    for name, count in COUNTS_3CH_10.items():
        family = "gradattn" if name.startswith("gradattn") else "resnet"
        assert table[name][:2] == [family, count]
        assert float(table[name][3]) > 0  # forward GMACs at 32 px
        assert table[name][4]  # a description
    assert [name for name in table if name in COUNTS_3CH_10] == list(COUNTS_3CH_10)
    # as protocol mode builds them: the shared encoder layer gives RoPE No PE's count (only the PE differs)
    protocol = {name: cells[2] for name, cells in table.items() if name in COUNTS_3CH_10}
    assert protocol == COUNTS_3CH_10 | {"gradattn-rope": COUNTS_3CH_10["gradattn-nope"]}
    assert [name for name in table if name in models.names()] == models.names()  # every registered model, in order


def test_models_for_fashionmnist_shape_and_a_wildcard():
    result = bench("models", "--in-channels", "1", "--num-classes", "10", "--models", "gradattn-*")
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert {name: cells[1] for name, cells in table.items() if name in COUNTS_3CH_10} == {
        "gradattn-nope": "12,843,722",
        "gradattn-lpe": "12,845,002",
        "gradattn-rope": "12,841,418",
    }


def test_resnet18_at_224_px_costs_what_torchvision_documents():
    # torchvision's ResNet-18 weights page: 1.814 GFLOPS (multiply-adds) at 224 px; ours differs in the head only
    result = bench("models", "--models", "resnet18", "--image-size", "224")
    assert result.returncode == 0, result.stderr
    assert abs(float(rows(result.stdout)["resnet18"][3]) - 1.814) <= 0.01 * 1.814


def test_models_for_a_dataset_take_its_shape():
    from bench import data

    result = bench("models", "--dataset", "digits", "--models", "resnet18,gradattn-rope")
    assert result.returncode == 0, result.stderr
    digits = data.get("digits")
    assert f"{digits.in_channels}-channel {digits.image_size} px images and {digits.num_classes} classes (digits)" in result.stdout
    table = rows(result.stdout)
    assert table["gradattn-rope"][2] == "12,843,722"  # 1 channel: what a digits run's `parameters` tag says
    assert float(table["resnet18"][3]) < float(table["gradattn-rope"][3])
    unknown = bench("models", "--dataset", "nope")
    assert unknown.returncode == 2 and "Unknown dataset 'nope'" in unknown.stderr


def test_models_rejects_a_bad_class_count_in_one_line():
    result = bench("models", "--num-classes", "0")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "num_classes must be a positive integer" in result.stderr


def test_console_script_prints_the_table():
    # the installed console script beside this interpreter (pip install -e . puts it there)
    script = Path(sys.executable).with_name("bench")
    assert script.exists(), f"no bench console script at {script}: install the project (pip install -e .)"
    result = run(str(script), "models", "--num-classes", "8")
    assert result.returncode == 0, result.stderr
    assert rows(result.stdout)["gradattn-rope"][1] == "12,847,176"  # BloodMNIST, protocol 1.10


def test_importing_the_cli_does_not_import_torch():
    result = run(sys.executable, "-c", "import bench.cli, sys; assert 'torch' not in sys.modules")
    assert result.returncode == 0, result.stderr


def test_counting_parameters_on_the_meta_device_imports_no_compiler():
    # a second of torch._dynamo's import saved wherever parameters are counted (FLOP counting, which
    # dispatches through it, pays it once per process)
    code = (
        "import sys, torch\nfrom bench import models\nwith torch.device('meta'):\n"
        "    [models.count_parameters(models.build(name, 10, 3, init='per-model')) for name in models.names()]\n"
        "assert 'torch._dynamo' not in sys.modules"
    )
    result = run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
