"""The report as a run of its own: `bench report --log` puts its tables and figures in the experiment.

One run per experiment, named `report` and tagged `REPORT_TAG`, which no query of training runs counts
(`records.is_grid_run`) and which has no configuration, so the grouped runs view leaves it out. Each
`--log` replaces its files.
"""

from __future__ import annotations

from pathlib import Path

from bench.tracking.queries import create_run, runs_of
from bench.tracking.records import FINISHED, REPORT_TAG
from bench.tracking.store import client

REPORT_RUN_NAME = "report"


def log_report(uri: str, experiment_id: str, files: list[Path], note: str) -> str:
    """The files as the artifacts of the experiment's report run (created the first time), `note` as
    its description; returns the run's id."""
    found = runs_of(uri, experiment_id, {REPORT_TAG: "true"})
    run_id = found[0].run_id if found else create_run(uri, experiment_id, REPORT_RUN_NAME, {REPORT_TAG: "true"})
    c = client(uri)
    c.set_tag(run_id, "mlflow.note.content", note)
    for path in files:
        c.log_artifact(run_id, str(path))
    c.set_terminated(run_id, FINISHED)
    return run_id
