"""The paper's eight datasets at full size: what loading, memory and reads cost as the data grows.

Writes every dataset in its real on-disk format with random content (the test fixtures' writers, at
``--fraction`` of the real sizes) into ``--data-dir``, then measures each in fresh processes:

- load: a worker's loading (decode or open the decoded cache, then the dataset digest a run logs),
  twice (the first may build the cache): seconds, and the process's peak resident memory (VmHWM)
  against the decoded size of the splits it holds;
- run: one epoch of the tests' small model through ``bench run`` (a real worker process): its wall
  time, the worker's peak resident memory, the epoch time and the images/s the training step consumed;
- read: the training loader alone (shuffled batches, the protocol transform) in images/s, from a
  dropped page cache where the machine allows it (root on Linux) and again warm, against that
  consumption;
- share: two processes holding one dataset's training images (``--share``, SVHN by default), their
  summed proportional set size (PSS) against one alone.

    python scripts/scale.py --data-dir /data/scale                 # full size (about 25 GB of files)
    python scripts/scale.py --data-dir /tmp/scale --fraction 0.02  # a quick version
    PYTHONPATH=/path/to/other/checkout python scripts/scale.py ...  # the same measures of other code

The probes import ``bench`` as the environment gives it, so the last line measures another version of
the package on the same files. Prints a table and, with ``--json``, writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the fixtures' writers of each real format

FULL_SIZES = {  # the real datasets' parts (protocol section 2)
    "cifar10": {"per_batch": 10_000, "test": 10_000},
    "svhn": {"sizes": (73_257, 26_032, 531_131)},
    "fashionmnist": {"train": 60_000, "test": 10_000},
    "tiny-imagenet": {"per_class": 500, "val": 10_000},
    "bloodmnist": {"sizes": (11_959, 1_712, 3_421)},
    "tissuemnist": {"sizes": (165_466, 23_640, 47_280)},
    "pcam": {"sizes": (262_144, 32_768, 32_768)},
    "pad-ufes-20": {"patients": 1_149},  # 2,298 images, as the writer gives patients 1 or 3 images
}
DATASETS = tuple(FULL_SIZES)
PAD_SIDES = (256, 1024)  # PNG sides drawn per image; the real photographs vary about as much
TINY_IMAGENET_CLASSES = 200
MIB = 1 << 20


# -- writing ------------------------------------------------------------------------------------


def _scaled(value, fraction: float, least: int):
    if isinstance(value, tuple):
        return tuple(max(least, round(v * fraction)) for v in value)
    return max(least, round(value * fraction))


def write_dataset(name: str, data_dir: Path, fraction: float) -> None:
    import data_fixtures as fx

    sizes = {key: _scaled(value, fraction, 2) for key, value in FULL_SIZES[name].items()}
    if name == "cifar10":
        fx.write_cifar10(data_dir, **sizes)
    elif name == "svhn":
        fx.write_svhn(data_dir, **sizes)
    elif name == "fashionmnist":
        fx.write_fashionmnist(data_dir, **sizes)
    elif name == "tiny-imagenet":
        wnids = tuple(f"n{index:08d}" for index in range(TINY_IMAGENET_CLASSES))
        fx.write_tiny_imagenet(data_dir, wnids=wnids, **sizes)
    elif name in ("bloodmnist", "tissuemnist"):
        fx.write_medmnist(data_dir, name, 3 if name == "bloodmnist" else 1, **sizes)
    elif name == "pcam":
        fx.write_pcam(data_dir, chunks=None, **sizes)  # h5py's default layout for uncompressed data
    elif name == "pad-ufes-20":
        fx.write_pad(data_dir, patients=max(14, sizes["patients"]), sides=PAD_SIDES)


def ensure_written(names: list[str], data_dir: Path, fraction: float) -> None:
    """Write what is not there yet (a marker per dataset records the fraction it was written at)."""
    for name in names:
        marker = data_dir / f".scale-{name}.json"
        if marker.exists() and json.loads(marker.read_text())["fraction"] == fraction:
            continue
        start = time.perf_counter()
        write_dataset(name, data_dir, fraction)
        marker.write_text(json.dumps({"fraction": fraction}))
        print(f"wrote {name} at fraction {fraction} in {time.perf_counter() - start:.0f} s", flush=True)


# -- probes (each in a fresh process) -------------------------------------------------------------


def _status_kb(field: str, pid: str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _anonymous_pss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss_Anon:"):
            return int(line.split()[1])
    return 0


def _mapped_pss_kb(pid: int, folder: Path) -> int:
    """PSS of the process's mappings of files under ``folder`` (the data dir: decoded caches, PCam's files)."""
    total, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = len(fields) == 6 and fields[5].startswith(str(folder))
        elif inside and fields[0] == "Pss:":
            total += int(fields[1])
    return total


def _decoded_bytes(bundle) -> int:
    total = 0
    for split in (bundle.train, bundle.val, bundle.test):
        c, h, w = split.image_shape
        total += len(split) * c * h * w
    return total


def _import_readers() -> None:
    """The libraries loaders import on first use, imported before a baseline is taken: their code is
    not the data's memory."""
    import h5py  # noqa: F401
    import PIL.Image  # noqa: F401
    import scipy.io  # noqa: F401


def probe_load(name: str, data_dir: str) -> dict:
    from bench import data
    from bench.data.base import bundle_digest

    _import_readers()
    before = _status_kb("VmRSS") * 1024  # the interpreter, torch, bench and the file readers, before any data
    start = time.perf_counter()
    bundle = data.get(name).load(Path(data_dir))
    loaded = time.perf_counter()
    bundle_digest(bundle)
    return {
        "load_s": loaded - start,
        "digest_s": time.perf_counter() - loaded,
        "rss_before": before,
        "peak_rss": _status_kb("VmHWM") * 1024,
        "decoded": _decoded_bytes(bundle),
        "images": sum(len(s) for s in (bundle.train, bundle.val, bundle.test)),
        "package": str(Path(data.__file__).resolve().parents[1]),  # which bench was measured
    }


def probe_read(name: str, data_dir: str, batches: str) -> dict:
    import torch

    from bench import data
    from bench.data.pipeline import BatchLoader

    torch.set_num_threads(1)  # a worker's share of a 2-core machine running the training step beside it
    bundle = data.get(name).load(Path(data_dir))
    loader = BatchLoader(
        bundle.train, batch_size=bundle.batch_size, transform=bundle.train_transform, device="cpu", shuffle=True, seed=0
    )
    wanted = min(int(batches), len(loader))
    seen, start = 0, time.perf_counter()
    for k, (x, _) in enumerate(loader):
        seen += x.shape[0]
        if k + 1 == wanted:
            break
    return {"images_per_s": seen / (time.perf_counter() - start), "batches": wanted}


def probe_hold(name: str, data_dir: str) -> None:
    """Hold the training split's images as a run does (every row read once), report, then wait."""
    import torch

    from bench import data

    anonymous_before = _anonymous_pss_kb()
    split = data.get(name).load(Path(data_dir)).train
    for start in range(0, len(split), 4096):
        split.take(torch.arange(start, min(start + 4096, len(split))))
    print(json.dumps({"pid": os.getpid(), "anonymous_before_kb": anonymous_before}), flush=True)
    sys.stdin.readline()


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


class AnonymousPeak(threading.Thread):
    """The largest anonymous resident memory (RssAnon: a process's own, not the mapped pages of files
    it shares through the page cache) of any process under ``root``, polled every half second."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.peak, self.done = root, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            for pid in _descendants(self.root):
                try:
                    self.peak = max(self.peak, _status_kb("RssAnon", str(pid)) * 1024)
                except OSError:
                    pass


def probe_run(name: str, data_dir: str) -> dict:
    """One epoch of the tests' small model through `bench run`, in a scratch store."""
    with tempfile.TemporaryDirectory() as scratch:
        store = f"sqlite:///{scratch}/mlflow.db"
        command = [
            sys.executable, "-m", "bench", "run", "--datasets", name, "--models", "tiny",
            "--plugin", str(REPO / "tests/plugins/tiny_models.py"), "--max-epochs", "1", "--seeds", "1",
            "--tracking-uri", store, "--checkpoint-dir", f"{scratch}/checkpoints", "--data-dir", data_dir,
            "--experiment", "scale", "--devices", "cpu",
        ]
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=scratch)
        watch = AnonymousPeak(process.pid)
        watch.start()
        out, err = process.communicate()
        watch.done.set()
        wall = time.perf_counter() - start
        if process.returncode != 0:
            raise SystemExit(f"bench run on {name} failed ({process.returncode}):\n{out[-3000:]}\n{err[-3000:]}")
        import mlflow

        client = mlflow.MlflowClient(store)
        experiment = client.get_experiment_by_name("scale")
        (run,) = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
        metrics = run.data.metrics
        return {
            "wall_s": wall,
            # every waited-for descendant: the run's worker and the scheduling parent
            "peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
            "peak_anonymous": watch.peak,
            "epoch_s": metrics.get("train/epoch_time_s"),
            "train_images_per_s": metrics.get("train/images_per_s"),
        }


PROBES = {"load": probe_load, "read": probe_read, "run": probe_run}


def _probe(kind: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "probe", kind, *args], capture_output=True, text=True, cwd=REPO
    )
    if done.returncode != 0:
        raise SystemExit(f"the {kind} probe ({' '.join(args)}) failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


def share(name: str, data_dir: Path) -> dict:
    """The data's PSS in one process holding the training images alone, and in two holding them at
    once: the process's mappings of the data dir's files, plus the anonymous memory it gained while
    loading (a decoded copy of its own)."""
    def start() -> tuple[subprocess.Popen, dict]:
        process = subprocess.Popen(
            [sys.executable, __file__, "probe", "hold", name, str(data_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
        )
        return process, json.loads(process.stdout.readline())

    def data_pss(held: dict) -> int:
        pid = held["pid"]
        grown = _anonymous_pss_kb(pid) - held["anonymous_before_kb"]
        return (_mapped_pss_kb(pid, data_dir.resolve()) + max(grown, 0)) * 1024

    def stop(processes) -> None:
        for process, _ in processes:
            process.stdin.close()
            process.wait()

    alone = [start()]
    one = data_pss(alone[0][1])
    stop(alone)
    both = [start(), start()]
    two = sum(data_pss(held) for _, held in both)
    stop(both)
    return {"dataset": name, "pss_one": one, "pss_two": two}


# -- measuring ------------------------------------------------------------------------------------


MEASURES = ("load", "run", "read")


def measure(name: str, data_dir: Path, read_batches: int, measures: tuple[str, ...] = MEASURES) -> dict:
    print(f"measuring {name} ...", flush=True)
    row = dict.fromkeys(
        ("package", "images", "decoded", "load_first_s", "load_s", "digest_s", "load_peak_rss", "rss_before", "run_wall_s",
         "run_peak_rss", "run_peak_anonymous", "epoch_s", "consumed_images_per_s", "read_cold_images_per_s",
         "read_images_per_s")
    ) | {"dataset": name}
    if "load" in measures:
        first, second = (_probe("load", name, str(data_dir)) for _ in range(2))
        row.update(
            package=first["package"], images=first["images"], decoded=first["decoded"], load_first_s=first["load_s"],
            load_s=second["load_s"], digest_s=second["digest_s"], load_peak_rss=max(first["peak_rss"], second["peak_rss"]),
            rss_before=min(first["rss_before"], second["rss_before"]),
        )
    if "run" in measures:
        run = _probe("run", name, str(data_dir))
        row.update(run_wall_s=run["wall_s"], run_peak_rss=run["peak_rss"], run_peak_anonymous=run["peak_anonymous"],
                   epoch_s=run["epoch_s"], consumed_images_per_s=run["train_images_per_s"])
    if "read" in measures:
        if _drop_page_cache():
            row["read_cold_images_per_s"] = _probe("read", name, str(data_dir), str(read_batches))["images_per_s"]
        row["read_images_per_s"] = _probe("read", name, str(data_dir), str(read_batches))["images_per_s"]
    return row


def _gb(value) -> str:
    return "-" if value is None else f"{value / 1e9:.2f}"


def _num(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(gained, decoded) -> str:
    return "-" if gained is None or not decoded else f"{gained / decoded:.2f}"


def print_table(rows: list[dict], shared: dict | None) -> None:
    head = ("dataset", "images", "decoded GB", "load s (1st)", "digest s", "load peak GB", "gained / decoded",
            "run peak RSS GB", "run peak own GB", "epoch s", "consumed img/s", "read img/s cold", "read img/s warm")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        gained = None if r["load_peak_rss"] is None else r["load_peak_rss"] - r["rss_before"]
        cells = (
            r["dataset"], _num(r["images"]), _gb(r["decoded"]), f"{_num(r['load_s'], 1)} ({_num(r['load_first_s'], 1)})",
            _num(r["digest_s"], 1), _gb(r["load_peak_rss"]), _ratio(gained, r["decoded"]),
            _gb(r["run_peak_rss"]), _gb(r["run_peak_anonymous"]), _num(r["epoch_s"], 1), _num(r["consumed_images_per_s"]),
            _num(r["read_cold_images_per_s"]), _num(r["read_images_per_s"]),
        )
        print("| " + " | ".join(cells) + " |")
    if shared:
        print(
            f"\n{shared['dataset']}: the data's PSS in one process holding the training images: "
            f"{_gb(shared['pss_one'])} GB; in two at once: {_gb(shared['pss_two'])} GB together "
            f"({shared['pss_two'] / max(shared['pss_one'], 1):.2f} x one)"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["probe"]:
        kind, *args = argv[1:]
        if kind == "hold":
            probe_hold(*args)
            return 0
        print(json.dumps(PROBES[kind](*args)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="Where the datasets are written (and kept).")
    parser.add_argument("--fraction", type=float, default=1.0, help="Of the real sizes (default 1: full size).")
    parser.add_argument("--datasets", default="all", help="Comma-separated names, or all.")
    parser.add_argument("--read-batches", type=int, default=300, help="Shuffled training batches the read measure takes.")
    parser.add_argument("--measures", default=",".join(MEASURES), help=f"Comma-separated, of {', '.join(MEASURES)}.")
    parser.add_argument("--share", default="svhn", help="Dataset whose sharing between two processes is measured ('' for none).")
    parser.add_argument("--write-only", action="store_true", help="Write the datasets and stop.")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    options = parser.parse_args(argv)
    names = list(DATASETS) if options.datasets == "all" else options.datasets.split(",")
    unknown = sorted(set(names) - set(DATASETS))
    if unknown or not 0 < options.fraction <= 1:
        parser.error(f"unknown datasets {unknown}" if unknown else "--fraction must be in (0, 1]")
    options.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_written(sorted(set(names) | ({options.share} if options.share else set())), options.data_dir, options.fraction)
    if options.write_only:
        return 0
    measures = tuple(m for m in options.measures.split(",") if m)
    if set(measures) - set(MEASURES):
        parser.error(f"--measures takes {', '.join(MEASURES)}")
    rows = [measure(name, options.data_dir, options.read_batches, measures) for name in names]
    shared = share(options.share, options.data_dir) if options.share else None
    print_table(rows, shared)
    if options.json:
        options.json.write_text(json.dumps({"fraction": options.fraction, "rows": rows, "share": shared}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
