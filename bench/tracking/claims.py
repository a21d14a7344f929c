"""Claims: which process trains a run, kept on the run itself."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Iterable

from bench.tracking.outbox import Outbox, outbox_root
from bench.tracking.queries import get_run
from bench.tracking.records import RUNNING, Run
from bench.tracking.store import client

# Tags work alike on every store (sqlite, an MLflow server, PostgreSQL) and from every backend, so a
# claim needs no shared file system and no extra service. MLflow has no compare-and-set, so a claim
# is confirmed by reading it back after a pause longer than any store write takes (`claim_settle_s`).
CLAIM_OWNER, CLAIM_HEARTBEAT = "claim_owner", "claim_heartbeat"


def _seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


# A claim lives while its heartbeat is fresh: stamped every CLAIM_HEARTBEAT_S by the planning process
# (queued runs) and by the worker (the run it trains), presumed dead after CLAIM_STALE_S without one.
# CLAIM_SETTLE_S is the pause before a new claim is read back: longer than any one store write.
CLAIM_HEARTBEAT_S = _seconds("BENCH_CLAIM_HEARTBEAT_S", 15.0)
CLAIM_STALE_S = _seconds("BENCH_CLAIM_STALE_S", 120.0)
CLAIM_SETTLE_S = _seconds("BENCH_CLAIM_SETTLE_S", 2.0)



def new_owner() -> str:
    """A claimant's identity: host, process and a random part (pids repeat across machines)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim_of(run: Run) -> tuple[str | None, float]:
    """(owner, last heartbeat as Unix time) of a run; (None, 0) when it was never claimed."""
    tags = run.tags
    try:
        beat = float(tags.get(CLAIM_HEARTBEAT, 0))
    except ValueError:
        beat = 0.0
    return tags.get(CLAIM_OWNER), beat


def owner_gone(owner: str) -> bool:
    """True when the owner was a process on this host that no longer exists (killed, crashed):
    its claim is dead at once, without waiting for its heartbeat to age."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def claim_tags(owner: str) -> dict[str, str]:
    return {CLAIM_OWNER: owner, CLAIM_HEARTBEAT: f"{time.time():.3f}"}


def claim(uri: str, run_id: str, owner: str) -> None:
    """Take a run over: owner and heartbeat tags, status RUNNING."""
    from mlflow.entities import RunTag

    c = client(uri)
    c.log_batch(run_id, tags=[RunTag(k, v) for k, v in claim_tags(owner).items()])
    c.update_run(run_id, status=RUNNING)


def claim_owner(uri: str, run_id: str) -> str | None:
    return claim_of(get_run(uri, run_id))[0]


def never_started(run: Run) -> bool:
    """Nothing was logged to the run yet: a claim made when its grid was planned, still waiting."""
    return not run.params and not run.metrics


def start_clock(uri: str, run_id: str, begun: bool = False) -> str:
    """The run to train now: ``run_id`` itself once training has begun in it; else a new run with its
    name and tags (the claim included), created now, and the waiting one deleted.

    Training has begun where the store holds something of it, where its logging waits in this
    machine's outbox (the store was away), or where the caller says so (``begun``: a checkpoint of it).

    MLflow shows a run's start and duration from its creation and can change neither afterwards, so a
    run claimed when the grid was planned would count its wait in the queue as its own time. The new
    run is created before the old one is deleted: a planner looking in between sees two runs held by
    one live owner and leaves both alone (planning deletes a never-started extra a kill left behind).
    """
    run = get_run(uri, run_id)
    if begun or not never_started(run) or len(Outbox(outbox_root() / run_id)):
        return run_id
    c = client(uri)
    tags = {key: value for key, value in run.tags.items() if key != "mlflow.runName"} | claim_tags(claim_of(run)[0] or "")
    new = c.create_run(run.experiment_id, run_name=run.name, tags=tags)
    c.delete_run(run_id)
    return new.info.run_id


def release(uri: str, run_id: str, owner: str, status: str | None = None) -> None:
    """Give a claim up (heartbeat 0), and end the run with `status` if given, when it is still ours
    and RUNNING: the next planner need not wait for the claim to age."""
    try:
        run = get_run(uri, run_id)
        if claim_of(run)[0] == owner and run.status == RUNNING:
            client(uri).set_tag(run_id, CLAIM_HEARTBEAT, "0")
            if status:
                client(uri).set_terminated(run_id, status)
    except Exception:  # the store is away: the claim simply ages out
        pass


class Heartbeat:
    """Stamps the heartbeat tag of every run `owner` holds, every `every_s` seconds, in a thread.

    A run whose owner tag names someone else (it was taken over after our heartbeat stopped, e.g.
    during a long store outage) is given up and listed in `lost`; a store that does not answer is
    simply tried again at the next beat.
    """

    def __init__(self, uri: str, owner: str, run_ids: Iterable[str], every_s: float) -> None:
        self.uri, self.owner, self.every_s = uri, owner, every_s
        self.run_ids = set(run_ids)
        self.lost: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="claim-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def drop(self, run_id: str) -> None:
        self.run_ids.discard(run_id)

    def _loop(self) -> None:
        while True:  # a first beat at once: planning a long grid may have taken a while
            self._beat()
            if self._stop.wait(self.every_s):
                return

    def _beat(self) -> None:
        for run_id in list(self.run_ids):
            try:
                if claim_owner(self.uri, run_id) != self.owner:
                    self.lost.add(run_id)
                    self.run_ids.discard(run_id)
                    continue
                client(self.uri).set_tag(run_id, CLAIM_HEARTBEAT, f"{time.time():.3f}")
            except Exception:  # unreachable for now; the next beat tries again
                pass
