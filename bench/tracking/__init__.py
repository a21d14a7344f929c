"""The MLflow adapter: the only package that imports MLflow.

Runs are addressed by explicit run ids, so the parent process can create the store, the experiment
and the runs once, and worker processes (or machines) attach to them. A run is found again by its
`config_hash` tag: that is how a finished configuration is skipped and an interrupted one resumed
in the same MLflow run.

A tracking server that goes away mid-run does not stop training: `RunLogger` queues what it could not
send in an on-disk outbox and replays it, in order, when the server answers again (see `Outbox`).

- `store`: URIs, creating (or migrating) the store and the experiment
- `views`: the MLflow UI's links and the grouped view of an experiment
- `claims`: which process trains a run, and its heartbeat
- `outbox`, `logger`: `RunLogger` and the queue behind it
- `queries`: what the rest of the project reads from the store
- `report_run`: the run `bench report --log` writes the report to
"""

from bench.config.options import DEFAULT_EXPERIMENT
from bench.tracking.claims import (
    CLAIM_HEARTBEAT,
    CLAIM_HEARTBEAT_S,
    CLAIM_OWNER,
    CLAIM_SETTLE_S,
    CLAIM_STALE_S,
    Heartbeat,
    claim,
    claim_of,
    claim_owner,
    claim_tags,
    never_started,
    new_owner,
    owner_gone,
    release,
    start_clock,
)
from bench.tracking.logger import (
    DEFAULT_FINAL_WAIT_S,
    RunLogger,
    TrackingUnavailable,
    system_metrics,
)
from bench.tracking.outbox import ENTRY_KINDS, Outbox, outbox_root
from bench.tracking.queries import (
    create_run,
    delete_run,
    download_artifact,
    experiment_id,
    find_run,
    get_run,
    grid_runs,
    list_artifacts,
    logged_models,
    metric_history,
    run_status,
    runs_of,
    set_status,
    study_runs,
)
from bench.tracking.records import (
    CONFIG_HASH_TAG,
    FAILED,
    FINISHED,
    KILLED,
    PARENT_RUN_TAG,
    REPORT_TAG,
    RUN_ID_FIELD,
    RUNNING,
    STUDY_KIND_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    LoggedModel,
    Run,
    is_grid_run,
    model_name,
)
from bench.tracking.report_run import log_report
from bench.tracking.store import (
    SCHEMES,
    answering,
    prepare,
    resolve_uri,
    shown_uri,
    sqlite_path,
    sqlite_uri,
    ui_hint,
)
from bench.tracking.views import (
    CONFIGURATION_TAG,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    LOCAL_UI,
    UI_VIEW,
    configurations_url,
    experiment_url,
    run_url,
)

__all__ = [
    "CLAIM_HEARTBEAT", "CLAIM_HEARTBEAT_S", "CLAIM_OWNER", "CLAIM_SETTLE_S", "CLAIM_STALE_S", "CONFIGURATION_TAG", "CONFIG_HASH_TAG", "DEFAULT_EXPERIMENT", "DEFAULT_FINAL_WAIT_S",
    "ENTRY_KINDS", "EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "FAILED", "FINISHED", "Heartbeat", "KILLED",
    "LOCAL_UI", "LoggedModel", "Outbox", "PARENT_RUN_TAG", "REPORT_TAG", "RUNNING", "RUN_ID_FIELD", "Run", "RunLogger",
    "SCHEMES", "STUDY_KIND_TAG", "STUDY_TAG", "TRIAL_TAG", "TrackingUnavailable",
    "UI_VIEW", "answering", "claim", "claim_of", "claim_owner", "claim_tags", "configurations_url", "create_run", "delete_run",
    "never_started", "start_clock",
    "download_artifact", "experiment_id", "experiment_url", "find_run", "get_run", "grid_runs",
    "is_grid_run", "list_artifacts", "log_report", "logged_models", "metric_history", "model_name", "new_owner",
    "outbox_root", "owner_gone", "prepare", "release", "resolve_uri", "run_status", "run_url", "runs_of",
    "set_status", "shown_uri", "sqlite_path", "sqlite_uri", "study_runs", "system_metrics", "ui_hint",
]
