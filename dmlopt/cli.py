"""The ``dmlopt`` command line.

Heavy imports happen inside the commands that need them: Lightning only where a model trains,
so ``check``, ``losses`` and every error message stay quick. Bad input prints one
``error: ...`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dmlopt import __version__
from dmlopt.errors import DmloptError

# Read once, when torch loads its OpenMP runtime (so here, before any command imports torch):
# threads that sleep rather than spin while they wait. On cores shared with other processes
# (other workers, other jobs) spinning threads made small models' steps up to 10x slower here;
# sleeping ones cost nothing measurable. An explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if TYPE_CHECKING:
    import numpy as np
    import optuna

    from dmlopt.config import StudyConfig
    from dmlopt.data.base import MetricDataset
    from dmlopt.data.splits import Fold
    from dmlopt.study.final import FinalStage
    from dmlopt.study.storage import ScoreBook
    from dmlopt.tracking import MlflowTracker


def _out_dir(args: argparse.Namespace, study: str) -> Path:
    return Path(args.out) if args.out else Path("runs") / study


def _open(
    args: argparse.Namespace, config: StudyConfig, *, create: bool = True, book: bool = True
) -> tuple[Path, optuna.storages.BaseStorage, ScoreBook | None]:
    """(output folder, Optuna storage, score book) for a command; ``create=False`` refuses to
    start a new SQLite database. Workers need no score book (and a proxy has none)."""
    from dmlopt.study.storage import ScoreBook, open_storage, storage_url

    out = _out_dir(args, config.study)
    url = storage_url(args.storage, config.storage, out)
    # Retries at least once per heartbeat, so that after an outage live workers beat again
    # well inside the grace period their watchers give them (dmlopt.study.liveness).
    w = config.workers
    storage = open_storage(
        url, create=create, patience=w.storage_retry_seconds, max_delay=w.heartbeat_seconds
    )
    return out, storage, ScoreBook(url) if book else None


def cmd_check(args: argparse.Namespace) -> int:
    from dmlopt.config import dump_study, load_study
    from dmlopt.data import open_dataset
    from dmlopt.data.splits import paper_split
    from dmlopt.models import build_model
    from dmlopt.study.cross_validation import search_folds
    from dmlopt.study.storage import redact, storage_url

    if args.include_test and not args.verify_data:
        raise DmloptError("--include-test goes with --verify-data")
    config = load_study(args.study)
    dataset = open_dataset(config.dataset)
    folds = search_folds(config, dataset)
    trunk, embedder = build_model(config.model, dataset.input_shape)
    trainval, test = paper_split(dataset.num_classes)
    public = config.model_copy(update={"storage": None})
    storage = redact(storage_url(None, config.storage, _out_dir(args, config.study)))
    n_params = sum(p.numel() for m in (trunk, embedder) for p in m.parameters())
    if args.format == "json":
        report = {
            "config": public.model_dump(mode="json"),
            "storage": storage,
            "dataset": {"samples": len(dataset), "classes": dataset.num_classes,
                        "input_shape": list(dataset.input_shape)},
            "model": {"trunk": config.model.trunk, "embedding_dim": config.model.embedding_dim,
                      "parameters": n_params},
            "split": {"trainval_classes": len(trainval), "test_classes": len(test)},
            "folds": [{"train": [int(c) for c in train], "val": [int(c) for c in val]}
                      for train, val in folds],
            "losses": {loss: {k: str(v) for k, v in config.loss_space(loss).items()}
                       for loss in config.losses},
            "search": {loss: _searched_by(config, loss) for loss in config.losses},
        }  # fmt: skip
        print(json.dumps(report, indent=2))
        return 0
    print(dump_study(public), end="")
    print(f"# storage: {storage}")
    print(
        f"# dataset: {len(dataset)} samples, {dataset.num_classes} classes, "
        f"input {tuple(dataset.input_shape)}"
    )
    print(
        f"# model: {config.model.trunk} + linear -> {config.model.embedding_dim}-d, "
        f"{n_params:,} parameters"
    )
    print(
        f"# split: {len(trainval)} train/val classes (search), "
        f"{len(test)} test classes (final only)"
    )
    for i, (train, val) in enumerate(folds):
        print(f"# fold {i}: train {len(train)} classes, val {len(val)} classes {_ranges(val)}")
    for loss in config.losses:
        space = config.loss_space(loss)
        searched = _searched_by(config, loss)
        print(f"# {loss}: " + ", ".join(f"{k} {v}" for k, v in space.items()) + f" ({searched})")
    if args.verify_data:
        classes = [*trainval, *test] if args.include_test else list(trainval)
        _verify_data(dataset, dataset.indices_of(classes))
    if args.estimate:
        _estimate(config, dataset, folds, args.workers)
    return 0


def _searched_by(config: StudyConfig, loss: str) -> str:
    """How a loss's space is searched: the study's sampler, or a grid (which it overrides)."""
    from dmlopt.study.runner import search_grid, trial_budget

    trials = trial_budget(config, loss)
    if search_grid(config, loss) is None:
        return f"{config.search.sampler} sampler, {trials} trials"
    return f"grid: each of its {trials} values once; search.sampler does not apply"


def _verify_data(dataset: MetricDataset, indices: np.ndarray) -> None:
    """Decode every sample of ``indices``; list the bad ones, and refuse if there are any."""
    from dmlopt.data.base import BadSample

    bad = []
    try:
        dataset.check_samples(indices)
    except BadSample as e:
        bad.append(str(e))
    for i in indices:
        try:
            dataset.read(int(i), train=False)
        except BadSample as e:
            bad.append(str(e))
    for line in bad:
        print(f"# bad: {line}")
    if bad:
        raise DmloptError(f"{len(bad)} unreadable samples (listed above)")
    print(f"# data: {len(indices)} samples read, all good")


def _estimate(config: StudyConfig, dataset: MetricDataset, folds: list[Fold], workers: int) -> None:
    """Time a few iterations of the study's model on its data; print the worst-case cost."""
    import torch

    from dmlopt.hardware import check_hardware, device_for
    from dmlopt.provenance import device
    from dmlopt.study.estimate import describe, measure

    check_hardware(config.training)
    print("# timing a few training iterations ...", flush=True)
    estimate = measure(config, dataset, folds)
    name = device(config.training.accelerator)
    if device_for(config.training).type == "cpu":
        name += f" ({torch.get_num_threads()} threads)"
    for line in describe(config, estimate, len(folds), workers, name):
        print(line)


def _ranges(ids: Sequence[int]) -> str:
    """``[75-99]`` or ``[0-3, 10-12]``: class ids as contiguous runs."""
    runs: list[list[int]] = []
    for i in sorted(ids):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return "[" + ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs) + "]"


def cmd_run(args: argparse.Namespace) -> int:
    from dmlopt.config import load_study
    from dmlopt.data import open_dataset
    from dmlopt.data.splits import paper_split
    from dmlopt.hardware import check_hardware
    from dmlopt.models import build_model
    from dmlopt.study.cross_validation import search_folds
    from dmlopt.study.final import FinalStage
    from dmlopt.study.runner import search
    from dmlopt.study.storage import is_sqlite, storage_url

    config = load_study(args.study)
    if config.exported_from is not None:
        raise DmloptError(f"{args.study} is an exported best config: score it with dmlopt final")
    dataset = open_dataset(config.dataset)
    # An impossible split, a trunk that does not fit the data, missing weights or unusable
    # features fail here, before anything is stored.
    search_folds(config, dataset)
    dataset.check_samples(dataset.indices_of(paper_split(dataset.num_classes)[0]))
    build_model(config.model, dataset.input_shape)
    check_hardware(config.training)
    tracker = _tracker(args, config.study)  # a missing extra fails before storage is opened
    workers = getattr(args, "workers", 1)
    url = storage_url(args.storage, config.storage, _out_dir(args, config.study))
    if workers > 1 and is_sqlite(url):
        raise DmloptError(
            "SQLite cannot serve several worker processes: give --storage a PostgreSQL or "
            "MySQL URL (postgresql://..., mysql://...), or a dmlopt storage-proxy (grpc://...)"
        )
    # The score book's table is created with the study (a later refusal must change nothing),
    # except by a worker through a proxy, which does not serve it.
    proxied_worker = url.startswith("grpc://") and args.no_final
    out, storage, book = _open(args, config, book=not proxied_worker)
    final = None
    if not args.no_final:
        assert book is not None
        final = FinalStage(config, storage, book, wait_for_workers=True, out=out)
        final.losses_to_score(args.rescore)  # refuses now if there is nothing left to score
    if workers > 1:
        from dmlopt.study.launch import run_workers

        run_workers(
            config,
            Path(args.study),
            url,
            out,
            workers,
            storage,
            mlflow=getattr(args, "mlflow", None),
        )
    else:
        seed = config.search.seed if args.command == "run" else None  # extra workers differ
        search(
            config,
            storage,
            dataset,
            seed=seed,
            on_loss_done=lambda loss, s: _loss_done(out, s),
            show_progress=not getattr(args, "quiet", False),
            callbacks=[tracker] if tracker is not None else (),
        )
    if final is not None:
        _finish(final, out, rescore=args.rescore, tracker=tracker)
    return 0


def _tracker(args: argparse.Namespace, study: str) -> MlflowTracker | None:
    """The MLflow tracker ``--mlflow`` asks for (experiment: the study's name), or ``None``."""
    if not getattr(args, "mlflow", None):
        return None
    from dmlopt.tracking import MlflowTracker

    return MlflowTracker(args.mlflow, study)


def cmd_create(args: argparse.Namespace) -> int:
    from dmlopt.config import load_study
    from dmlopt.study.runner import check_same_searches, open_study

    config = load_study(args.study)
    if config.exported_from is not None:
        raise DmloptError(f"{args.study} is an exported best config: score it with dmlopt final")
    _, storage, book = _open(args, config)
    assert book is not None  # the score book's table is created now too
    check_same_searches(config, storage)
    for loss in config.losses:
        open_study(config, loss, storage, seed=None)
        print(f"{config.study_name(loss)}: ready")
    return 0


def cmd_final(args: argparse.Namespace) -> int:
    from dmlopt.config import load_study
    from dmlopt.hardware import check_hardware
    from dmlopt.study.final import FinalStage

    config = load_study(args.study)
    check_hardware(config.training)
    tracker = _tracker(args, config.study)
    # Only an exported config can be scored without a search, so only it may start a database.
    exported = config.exported_from is not None
    out, storage, book = _open(args, config, create=exported)
    assert book is not None
    _finish(FinalStage(config, storage, book, out=out), out, rescore=args.rescore, tracker=tracker)
    return 0


def _finish(
    final: FinalStage, out: Path, *, rescore: bool, tracker: MlflowTracker | None = None
) -> None:
    from dmlopt.report.collect import collect_studies
    from dmlopt.report.page import report_html
    from dmlopt.report.table import format_table
    from dmlopt.study.notes import note_study

    results = final.run(rescore=rescore)
    if tracker is not None:
        for loss, entry in final.recorded.items():
            tracker.log_final(final.config.study_name(loss), entry)
    _write(out / "final.json", json.dumps(results, indent=2) + "\n")
    for loss, entry in results.items():
        note_study(final.storage, final.config, loss, entry)
    studies = collect_studies(final.storage, final.book, final.config.study)
    _write(out / "report.html", report_html(studies))
    print(format_table(results))
    print(f"\nresults: {out / 'final.json'}, {out / 'report.html'}")


def _loss_done(out: Path, study: optuna.Study) -> None:
    """A loss's search is finished: its best config exported, its dashboard note written."""
    from dmlopt.study.notes import write_note
    from dmlopt.study.runner import stored_config

    _export_to(out, study)
    write_note(study, stored_config(study), study.study_name.partition("/")[2])


def _export_to(out: Path, study: optuna.Study) -> None:
    from dmlopt.config import dump_study
    from dmlopt.study.export import export_best

    config = export_best(study)
    assert config.exported_from is not None
    _write(out / "best" / f"{config.exported_from.loss}.yaml", dump_study(config))


def _write(path: Path, text: str) -> None:
    """Write atomically (workers sharing a folder never see half a file), folders created."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(text)
        os.replace(partial, path)
    except OSError as e:
        raise DmloptError(f"cannot write {path}: {e.strerror}") from None


def cmd_export(args: argparse.Namespace) -> int:
    import optuna

    from dmlopt.config import dump_study
    from dmlopt.study.export import export_best
    from dmlopt.study.storage import open_storage, redact, storage_url

    study_part, _, loss = args.name.partition("/")
    if not loss:
        raise DmloptError(f"expected <study>/<loss>, got {args.name!r}")
    url = storage_url(args.storage, None, _out_dir(args, study_part))
    storage = open_storage(url, create=False)
    try:
        study = optuna.load_study(study_name=args.name, storage=storage)
    except KeyError:
        raise DmloptError(f"no study {args.name!r} in {redact(url)}") from None
    text = dump_study(export_best(study))
    if args.output:
        _write(Path(args.output), text)
    else:
        print(text, end="")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from dmlopt.report.collect import collect_studies
    from dmlopt.report.page import report_html
    from dmlopt.study.storage import ScoreBook, open_storage, redact, storage_url

    if args.storage is None and args.study is None:
        raise DmloptError("report needs --storage URL or --study NAME (for runs/<study>/study.db)")
    url = storage_url(args.storage, None, _out_dir(args, args.study or ""))
    studies = collect_studies(
        open_storage(url, create=False), ScoreBook(url, create=False), args.study
    )
    if not studies:
        raise DmloptError(f"no dmlopt study in {redact(url)}")
    _write(Path(args.output), report_html(studies))
    print(f"report: {args.output}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from dmlopt.dashboard import is_loopback, make_dashboard, serve
    from dmlopt.study.artifacts import artifact_dir
    from dmlopt.study.storage import open_storage, storage_url

    url = storage_url(args.storage, None, _out_dir(args, args.study or ""))
    storage = open_storage(url, create=False)
    folder = Path(args.artifacts) if args.artifacts else artifact_dir(url)
    if args.artifacts and not Path(args.artifacts).is_dir():
        raise DmloptError(f"no artifact folder at {args.artifacts}")
    app = make_dashboard(
        storage,
        artifact_dir=str(folder) if folder is not None and folder.is_dir() else None,
        writable=args.writable,
        study=args.study,
    )
    if not is_loopback(args.host):
        print(
            f"warning: the dashboard has no authentication; anyone who can reach "
            f"{args.host}:{args.port} can read{' and change' if args.writable else ''} "
            "these studies",
            file=sys.stderr,
        )
    mode = "read and write" if args.writable else "read-only"
    print(f"optuna-dashboard ({mode}) on http://{args.host}:{args.port}/ (Ctrl-C to stop)",
          flush=True)  # fmt: skip
    try:
        serve(app, args.host, args.port)
    except OSError as e:
        raise DmloptError(f"cannot serve on {args.host}:{args.port}: {e.strerror}") from None
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    from dmlopt.report.inventory import format_inventory, inventory
    from dmlopt.study.storage import ScoreBook, open_storage, redact, storage_url

    url = storage_url(args.storage, None, _out_dir(args, args.study or ""))
    lines = inventory(open_storage(url, create=False), ScoreBook(url, create=False))
    if args.study:
        lines = [line for line in lines if line.study == args.study]
    if args.format == "json":
        print(json.dumps([line.as_dict() for line in lines], indent=2))
    elif lines:
        print(format_inventory(lines))
    else:
        print(f"no dmlopt study in {redact(url)}")
    return 0


def cmd_explain_metrics(args: argparse.Namespace) -> int:
    from dmlopt.report.explain import explain_html

    _write(Path(args.output), explain_html())
    print(f"page: {args.output}")
    return 0


def cmd_storage_proxy(args: argparse.Namespace) -> int:
    from optuna.storages import run_grpc_proxy_server

    from dmlopt.study.storage import open_storage, redact

    if args.storage.startswith("grpc://"):
        raise DmloptError("storage-proxy serves a database: give it a database URL, not grpc://")
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise DmloptError("storage-proxy needs grpcio: pip install 'dmlopt[proxy]'") from None
    # Retrying each second, the workers behind the proxy beat again within a second of the
    # database's return, whatever their (possibly short) heartbeat interval.
    storage = open_storage(args.storage, patience=args.storage_retry, max_delay=1.0)
    print(
        f"serving {redact(args.storage)} on grpc://{args.host}:{args.port} (Ctrl-C to stop)",
        flush=True,
    )
    run_grpc_proxy_server(storage, host=args.host, port=args.port)
    return 0


def cmd_losses(args: argparse.Namespace) -> int:
    from dmlopt import losses

    keys = losses.names(args.pattern)
    if not keys:
        raise DmloptError(f"no loss matches {args.pattern!r} (known: {', '.join(losses.names())})")
    if args.format == "json":
        listed = {}
        for key in keys:
            spec = losses.get(key)
            listed[key] = {
                "loss_class": spec.loss_class,
                "miner_class": spec.miner_class,
                "summary": spec.summary,
                "space": {name: str(param) for name, param in spec.search_space().items()},
            }
        print(json.dumps(listed, indent=2))
        return 0
    for key in keys:
        spec = losses.get(key)
        extra = f" + {spec.miner_class}" if spec.miner_class else ""
        print(f"{key}  ({spec.loss_class}{extra}): {spec.summary}{_installed_from(key)}")
        for name, param in spec.search_space().items():
            print(f"    {name:24s} {param}")
    return 0


def _installed_from(loss: str) -> str:
    """`` [installed: <distribution> <version>]`` for a loss an installed package registers."""
    from dmlopt.losses.registry import is_builtin
    from dmlopt.plugins import entry_points

    if is_builtin(loss):
        return ""
    dist = entry_points("loss")[loss].dist
    return f" [installed: {dist.name} {dist.version}]" if dist is not None else " [installed]"


def cmd_embed(args: argparse.Namespace) -> int:
    from dmlopt.embed import embed_command

    embed_command(args.model, args.data, Path(args.output))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmlopt",
        description="Fair deep metric learning comparisons: class-disjoint cross-validated "
        "search on train/val classes, one scoring of the held-out test set.",
    )
    parser.add_argument("--version", action="version", version=f"dmlopt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def format_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--format", choices=("text", "json"), default="text",
                       help="output format (default: %(default)s)")  # fmt: skip

    def add(
        name: str, handler: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    def storage_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--storage",
            help="database URL (default: DMLOPT_STORAGE, the study "
            "file's storage, or sqlite in the output folder)",
        )
        p.add_argument("--out", help="output folder (default: runs/<study>)")

    def tracking_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--mlflow",
            metavar="URI",
            help="log trials and test scores to MLflow at this tracking URI (extra: mlflow)",
        )

    p = add("run", cmd_run, "search every loss, then score the test set once, then print the table")
    p.add_argument("study", help="study file (YAML)")
    p.add_argument("--no-final", action="store_true", help="stop after the search")
    p.add_argument("--rescore", action="store_true", help="score the test set again (recorded)")
    storage_options(p)
    tracking_option(p)

    p.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="local worker processes on the storage (not SQLite), one GPU each if there are "
        "several (default: 1)",
    )

    p = add("worker", cmd_run, "join a distributed search as one more worker (no final stage)")
    p.add_argument("study", help="study file (YAML)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(no_final=True, rescore=False)
    storage_options(p)
    tracking_option(p)

    p = add("storage-proxy", cmd_storage_proxy, "serve a storage to many workers (Optuna gRPC)")
    p.add_argument("--storage", required=True, help="database URL the proxy serves")
    p.add_argument("--port", type=int, default=13000, help="port (default: %(default)s)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")
    p.add_argument(
        "--storage-retry",
        type=float,
        default=300.0,
        help="seconds to retry a lost database before exiting (default: %(default)s)",
    )

    p = add("create", cmd_create, "create a study's tables and studies, training nothing")
    p.add_argument("study", help="study file (YAML)")
    storage_options(p)

    p = add("final", cmd_final, "retrain the best config of each loss and score the test set once")
    p.add_argument("study", help="study file (YAML), or an exported best config")
    p.add_argument("--rescore", action="store_true", help="score the test set again (recorded)")
    storage_options(p)
    tracking_option(p)

    p = add("check", cmd_check, "validate a study file; print the resolved config and the folds")
    p.add_argument("study", help="study file (YAML)")
    p.add_argument(
        "--verify-data",
        action="store_true",
        help="decode every train/val sample and list the files that cannot be read",
    )
    p.add_argument(
        "--include-test",
        action="store_true",
        help="with --verify-data, the test classes too (reads them, but scores nothing)",
    )
    p.add_argument(
        "--estimate",
        action="store_true",
        help="also time a few iterations of the study's model on its data and print the "
        "worst-case number of fold trainings and wall time",
    )
    p.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="with --estimate: also estimate for this many workers (default: %(default)s)",
    )
    p.add_argument("--out", help=argparse.SUPPRESS)
    format_option(p)

    p = add("export", cmd_export, "write the best config of <study>/<loss> as a study file")
    p.add_argument("name", help="<study>/<loss>")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    storage_options(p)

    p = add("report", cmd_report, "write the comparison table and plots (HTML) from storage")
    p.add_argument("--study", help="only this study; its default storage is runs/<study>/")
    p.add_argument("-o", "--output", default="report.html", help="HTML file (default: %(default)s)")
    storage_options(p)

    p = add("dashboard", cmd_dashboard, "serve optuna-dashboard for the storage (read-only)")
    p.add_argument("--study", help="show only this study; its default storage is "
                   "runs/<study>/study.db")  # fmt: skip
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: %(default)s; there is no authentication)",
    )
    p.add_argument(
        "--writable",
        action="store_true",
        help="allow changes from the UI (deleting or creating studies, notes)",
    )
    p.add_argument("--artifacts", help="artifact folder (default: DMLOPT_ARTIFACTS, or "
                   "'artifacts' beside a SQLite database)")  # fmt: skip
    storage_options(p)

    p = add("studies", cmd_studies, "list the studies in a storage: trial states, best val "
            "MAP@R, how the test set was scored")  # fmt: skip
    p.add_argument("--study", help="only this study; its default storage is runs/<study>/")
    format_option(p)
    storage_options(p)

    p = add("explain-metrics", cmd_explain_metrics, "write a page showing why MAP@R, not P@1: "
            "three toy embeddings with near-perfect P@1")  # fmt: skip
    p.add_argument(
        "-o", "--output", default="metrics.html", help="HTML file (default: %(default)s)"
    )

    p = add("embed", cmd_embed, "embed a dataset or a folder of images with a kept model")
    p.add_argument("model", help="a model file kept by the final stage (final.keep: models)")
    p.add_argument("--data", required=True, help="a study file (its dataset) or a folder of images")
    p.add_argument("-o", "--output", required=True, help="embeddings file to write (.npy)")

    p = add("losses", cmd_losses, "list the registered losses and their search spaces")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'multi*'")
    format_option(p)
    return parser


_RESUMABLE = ("run", "worker", "final")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text[:20]!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    from dmlopt.study.signals import Stopped, caught, stop_on_signals

    args = build_parser().parse_args(argv)
    # Commands that train stop cleanly on a signal (their trial marked, Lightning's own
    # handling bypassed); the others, a dashboard or a proxy say, keep Python's defaults.
    stopping = stop_on_signals() if args.command in _RESUMABLE else contextlib.nullcontext()
    try:
        with stopping:
            return int(args.handler(args))
    except DmloptError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nerror: interrupted", file=sys.stderr)
        return 130
    except Stopped as stop:
        caught(stop)
        # Finished trials are kept and the running one was marked failed: rerunning resumes.
        resume = "; rerun the same command to resume" if args.command in _RESUMABLE else ""
        print(f"\nerror: stopped by {stop}{resume}", file=sys.stderr)
        return stop.exit_status


if __name__ == "__main__":
    sys.exit(main())
