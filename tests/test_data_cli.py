"""`bench data list|check|download` and `bench perf data` through the real command line (in
process where only the output matters, in a fresh process where the exit status does)."""

from __future__ import annotations

import re

from data_fixtures import run_bench, write_cifar10
from typer.testing import CliRunner

from bench.cli import app


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "BENCH_DATA_DIR": ""})
    assert result.exit_code == 0, result.output
    return result


EIGHT = ("cifar10", "fashionmnist", "svhn", "bloodmnist", "tissuemnist", "pcam", "pad-ufes-20", "tiny-imagenet")


def row(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if re.search(rf"\b{re.escape(name)}\s", line))


def test_list_on_an_empty_data_dir_shows_the_embedded_sets_present_and_hints_for_the_rest(tmp_path):
    result = invoke("data", "list", "--data-dir", str(tmp_path))
    for name in ("digits", "synthetic"):
        assert "present" in row(result.stdout, name)
    assert "1,257" in row(result.stdout, "digits")
    for name in EIGHT:
        assert "missing" in row(result.stdout, name)
    hints = [line for line in result.stdout.splitlines() if " needs " in line or "is missing" in line]
    assert len(hints) == 8
    assert sum("bench data download" in h for h in hints) == 7 and any("Kaggle" in h for h in hints)


def test_list_and_check_a_present_dataset(tmp_path):
    write_cifar10(tmp_path)
    listed = invoke("data", "list", "--data-dir", str(tmp_path))
    line = row(listed.stdout, "cifar10")
    assert "present" in line and re.search(r"28\s.*6\s.*6\s", line) and "KB" in line
    checked = invoke("data", "check", "cifar10,digits", "--data-dir", str(tmp_path))
    assert "cifar10: ok" in checked.stdout and "digits: ok" in checked.stdout
    assert "differ from the protocol's 42000/9000/9000" in checked.stdout


def test_download_of_pad_explains_the_manual_route_and_exits_2(tmp_path):
    result = run_bench("data", "download", "digits,pad-ufes-20", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "digits: present" in result.stdout
    assert "error: pad-ufes-20 is missing metadata.csv" in result.stderr and "Mendeley" in result.stderr


def test_perf_data_runs_tiny_and_prints_the_ratio():
    result = invoke(
        "perf",
        "data",
        "--images",
        "512",
        "--batches",
        "2",
        "--repeats",
        "1",
        "--warmup",
        "1",
        "--batch-size",
        "64",
        "--source",
        "synthetic",
    )
    assert "torchvision PIL DataLoader (2 workers)" in result.stdout
    assert re.search(r"ratio: \d+\.\dx \(target >= 5x\)", result.stdout)
