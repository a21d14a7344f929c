"""What the soak demands of a grid once every command on it has ended: each configuration FINISHED
once, every metric once per step, one logged model that reproduces the run's test top-1, nothing
RUNNING, nothing left in the checkpoint and outbox folders, and the final metrics of an
uninterrupted run."""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path

from bench import data, tracking
from bench.core.errors import BenchError

# Metrics that measure time or the machine's speed: the only ones an interrupted run may log differently.
TIMED = ("cost/", "train/epoch_time_s", "train/images_per_s", "train/time_s", "system/")
CURVES = ("train/loss", "train/acc", "val/loss", "val/acc")  # compared epoch by epoch


def grid_runs(url: str, experiment: str) -> list[tracking.Run]:
    try:
        return tracking.runs_of(url, tracking.experiment_id(url, experiment))
    except BenchError:  # no experiment yet
        return []


def grid_done(url: str, experiment: str, names: list[str]) -> bool:
    finished = [r.name for r in grid_runs(url, experiment) if r.status == tracking.FINISHED]
    return sorted(finished) == sorted(names)


def final_metrics(url: str, run: tracking.Run) -> dict:
    """The run's results and its curves: what an uninterrupted run of the configuration must equal."""
    found = {key: value for key, value in run.metrics.items() if not key.startswith(TIMED)}
    for key in CURVES:
        found[f"{key} by epoch"] = tracking.metric_history(url, run.run_id, key)
    return found


def check_grid(url: str, experiment: str, names: list[str], reference: dict[str, dict], place: Path) -> list[str]:
    """Every violation of the grid `experiment` (run names `names`), one sentence each."""
    runs = grid_runs(url, experiment)
    found = []
    by_name = Counter(r.name for r in runs)
    for name in names:
        if by_name[name] != 1:
            found.append(f"{name}: {by_name[name]} runs, not one ({[(r.run_id[:8], r.status) for r in runs if r.name == name]})")
    found += [f"{r.name}: an extra run {r.run_id[:8]} ({r.status})" for r in runs if r.name not in names]
    for run in runs:
        if run.status != tracking.FINISHED:
            found.append(f"{run.name}: run {run.run_id[:8]} is {run.status} after every command ended")
            continue
        found += _metrics_once(url, run)
        found += _one_model(url, run)
        if run.name in reference:
            found += _same_as(final_metrics(url, run), reference[run.name], run.name)
    found += _left_behind(place)
    return found


def _metrics_once(url: str, run: tracking.Run) -> list[str]:
    found = []
    for key in run.metrics:
        twice = [step for step, n in Counter(step for step, _ in tracking.metric_history(url, run.run_id, key)).items() if n > 1]
        if twice:
            found.append(f"{run.name}: {key} logged more than once at step(s) {twice}")
    return found


def _one_model(url: str, run: tracking.Run) -> list[str]:
    models = tracking.logged_models(url, run.run_id)
    if len(models) != 1 or not str(models[0].status).endswith("READY"):
        return [f"{run.name}: {len(models)} logged model(s), not one READY ({[str(m.status) for m in models]})"]
    accuracy = _test_accuracy(url, models[0].model_id, run)
    logged = run.metrics.get("test/top1")
    if logged is None or abs(accuracy - logged) > 1e-6:
        return [f"{run.name}: its logged model scores {accuracy:.6f} on the test split, the run logged test/top1 {logged}"]
    return []


def _test_accuracy(url: str, model_id: str, run: tracking.Run) -> float:
    import mlflow
    import mlflow.pytorch
    import torch

    mlflow.set_tracking_uri(url)
    model = mlflow.pytorch.load_model(f"models:/{model_id}")
    images, labels = _test_split(run.tags["dataset"], run.tags["preprocessing"], run.tags["splits"], int(run.tags["split_seed"]))
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    return float((predicted == labels).float().mean())


@lru_cache(maxsize=8)
def _test_split(dataset: str, preprocessing: str, splits: str, split_seed: int):
    bundle = data.get(dataset).load(None, preprocessing=preprocessing, splits=splits, seed=split_seed)
    return bundle.test.materialize(), bundle.test.labels


def _same_as(got: dict, expected: dict, name: str) -> list[str]:
    differ = sorted(key for key in expected.keys() | got.keys() if got.get(key) != expected.get(key))
    if not differ:
        return []
    shown = "; ".join(f"{key}: {got.get(key)} != {expected.get(key)}" for key in differ[:3])
    return [f"{name}: {len(differ)} final metric(s) differ from an uninterrupted run ({shown})"]


def _left_behind(place: Path) -> list[str]:
    """Checkpoint folders, mailboxes and lock files under the grid's checkpoint folder; outbox entries."""
    found = []
    checkpoints = place / "checkpoints"
    if checkpoints.exists():
        found.append(f"the checkpoint folder {checkpoints} is left with {sorted(str(p.relative_to(checkpoints)) for p in checkpoints.rglob('*'))[:6]}")
    outbox = place / "outbox"
    if outbox.exists() and any(outbox.rglob("*")):
        found.append(f"outbox entries are left in {outbox}: {sorted(str(p.relative_to(outbox)) for p in outbox.rglob('*'))[:6]}")
    return found
