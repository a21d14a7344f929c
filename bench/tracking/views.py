"""Links into the MLflow UI: an experiment's runs table, its seeds grouped by configuration, a run's page.

MLflow 3's UI opens an experiment in its GenAI view (traces) unless the URL asks for the
model-training one (runs table, models) with `?workflowType=machine_learning`; every link here does.
UIs from before that switch read the experiment tag `mlflow.experimentKind`.

The grouped runs table is a saved view of the runs page, as the UI's "Views" menu saves one: an
experiment tag `mlflow.sharedViewState.<key>` holding its name and state, listed in that menu and
opened by `?viewStateShareKey=<key>`: one row per `configuration` tag, the metrics averaged over
its seeds (the "Group by" menu also offers min and max).
"""

from __future__ import annotations

import json
from urllib.parse import urlparse

EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
UI_VIEW = "?workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store
CONFIGURATION_TAG = "configuration"  # a run's configuration (RunSpec.configuration): what its seeds share
SHARED_VIEW_TAG = "mlflow.sharedViewState."
BY_CONFIGURATION = "bench-by-configuration"

# The UI's own names: a column is `<metrics|params|tags|attributes>.`<key>``.
_COLUMNS = ["metrics.`test_top1`", "metrics.`test_balanced_accuracy`", "metrics.`gradient_health`"]
BY_CONFIGURATION_STATE = {
    "searchFilter": f"tags.`{CONFIGURATION_TAG}` LIKE '%'",  # training runs only: a report or study run has no configuration
    "orderByKey": "attributes.start_time",
    "orderByAsc": False,
    "selectedColumns": _COLUMNS,
    "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": CONFIGURATION_TAG}]},
    "groupsExpanded": {},
    "runsExpanded": {},
    "useGroupedValuesInCharts": True,
}


BY_CONFIGURATION_NAME = "By configuration (mean over seeds)"


def view_tags() -> dict[str, str]:
    """The experiment tags that make the model-training view and the grouped view available. The
    view's times are fixed, so preparing the experiment again rewrites nothing."""
    saved = {"name": BY_CONFIGURATION_NAME, "createdAt": 0, "updatedAt": 0, "state": json.dumps(BY_CONFIGURATION_STATE)}
    return {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, SHARED_VIEW_TAG + BY_CONFIGURATION: json.dumps(saved)}


def ui_base(uri: str) -> str:
    """Where the MLflow UI of a store is: the tracking server itself, else `mlflow ui` on this machine."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return LOCAL_UI
    return f"{parsed.scheme}://{parsed.hostname}{f':{parsed.port}' if parsed.port else ''}{parsed.path}".rstrip("/")


def experiment_url(uri: str, experiment_id: str) -> str:
    """The link of an experiment's runs table, in the model-training view."""
    return f"{ui_base(uri)}/#/experiments/{experiment_id}{UI_VIEW}"


def configurations_url(uri: str, experiment_id: str) -> str:
    """The link of an experiment's runs table grouped by configuration, its metrics averaged over seeds."""
    return f"{ui_base(uri)}/#/experiments/{experiment_id}/runs{UI_VIEW}&viewStateShareKey={BY_CONFIGURATION}"


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """The link of a run's page, in the model-training view."""
    return f"{ui_base(uri)}/#/experiments/{experiment_id}/runs/{run_id}{UI_VIEW}"
