"""The ``dmlopt`` command line.

Heavy imports happen inside the commands that need them: Lightning only where a model trains,
so ``check``, ``losses`` and every error message stay quick. Bad input prints one
``error: ...`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmlopt.errors import DmloptError

# Read once, when torch loads its OpenMP runtime (so here, before any command imports torch):
# threads that sleep rather than spin while they wait. On cores shared with other processes
# (other workers, other jobs) spinning threads made small models' steps up to 10x slower here;
# sleeping ones cost nothing measurable. An explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if TYPE_CHECKING:
    import optuna

    from dmlopt.config import StudyConfig
    from dmlopt.data.base import MetricDataset
    from dmlopt.data.splits import Fold
    from dmlopt.study.final import FinalStage
    from dmlopt.study.storage import ScoreBook


def _out_dir(args: argparse.Namespace, study: str) -> Path:
    return Path(args.out) if args.out else Path("runs") / study


def _open(
    args: argparse.Namespace, study: str, file_storage: str | None, *, create: bool = True
) -> tuple[Path, optuna.storages.RDBStorage, ScoreBook]:
    """(output folder, Optuna storage, score book) for a command; ``create=False`` refuses to
    start a new SQLite database."""
    from dmlopt.study.storage import ScoreBook, open_storage, storage_url

    out = _out_dir(args, study)
    url = storage_url(args.storage, file_storage, out)
    return out, open_storage(url, create=create), ScoreBook(url)


def cmd_check(args: argparse.Namespace) -> int:
    from dmlopt.config import dump_study, load_study
    from dmlopt.data import open_dataset
    from dmlopt.data.splits import paper_split
    from dmlopt.models import build_model
    from dmlopt.study.cross_validation import search_folds
    from dmlopt.study.storage import redact, storage_url

    config = load_study(args.study)
    dataset = open_dataset(config.dataset)
    folds = search_folds(config, dataset)
    trunk, embedder = build_model(config.model, dataset.input_shape)
    trainval, test = paper_split(dataset.num_classes)
    print(dump_study(config.model_copy(update={"storage": None})), end="")
    print(f"# storage: {redact(storage_url(None, config.storage, _out_dir(args, config.study)))}")
    print(
        f"# dataset: {len(dataset)} samples, {dataset.num_classes} classes, "
        f"input {tuple(dataset.input_shape)}"
    )
    n_params = sum(p.numel() for m in (trunk, embedder) for p in m.parameters())
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
        print(f"# {loss}: " + ", ".join(f"{k} {v}" for k, v in space.items()))
    if args.estimate:
        _estimate(config, dataset, folds, args.workers)
    return 0


def _estimate(config: StudyConfig, dataset: MetricDataset, folds: list[Fold], workers: int) -> None:
    """Time a few iterations of the study's model on its data; print the worst-case cost."""
    from dmlopt.hardware import check_hardware, device_for
    from dmlopt.study.estimate import describe, measure

    check_hardware(config.training)
    print("# timing a few training iterations ...", flush=True)
    estimate = measure(config, dataset, folds)
    device = device_for(config.training)
    name = torch_device_name(device)
    for line in describe(config, estimate, len(folds), workers, name):
        print(line)


def torch_device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


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
    from dmlopt.hardware import check_hardware
    from dmlopt.models import build_model
    from dmlopt.study.cross_validation import search_folds
    from dmlopt.study.final import FinalStage
    from dmlopt.study.runner import search

    config = load_study(args.study)
    if config.exported_from is not None:
        raise DmloptError(f"{args.study} is an exported best config: score it with dmlopt final")
    dataset = open_dataset(config.dataset)
    # An impossible split, a trunk that does not fit the data or missing weights fail here,
    # before anything is stored.
    search_folds(config, dataset)
    build_model(config.model, dataset.input_shape)
    check_hardware(config.training)
    out, storage, book = _open(args, config.study, config.storage)
    final = None
    if not args.no_final:
        final = FinalStage(config, storage, book, wait_for_workers=True)
        final.losses_to_score(args.rescore)  # refuses now if there is nothing left to score
    seed = config.search.seed if args.command == "run" else None  # extra workers must differ
    search(config, storage, dataset, seed=seed, on_loss_done=lambda loss, s: _export_to(out, s))
    if final is not None:
        _finish(final, out, rescore=args.rescore)
    return 0


def cmd_final(args: argparse.Namespace) -> int:
    from dmlopt.config import load_study
    from dmlopt.hardware import check_hardware
    from dmlopt.study.final import FinalStage

    config = load_study(args.study)
    check_hardware(config.training)
    # Only an exported config can be scored without a search, so only it may start a database.
    exported = config.exported_from is not None
    out, storage, book = _open(args, config.study, config.storage, create=exported)
    _finish(FinalStage(config, storage, book), out, rescore=args.rescore)
    return 0


def _finish(final: FinalStage, out: Path, *, rescore: bool) -> None:
    from dmlopt.report.collect import collect
    from dmlopt.report.figures import report_html
    from dmlopt.report.table import format_table

    results = final.run(rescore=rescore)
    _write(out / "final.json", json.dumps(results, indent=2) + "\n")
    studies = collect(final.storage, final.book, final.config.study)
    _write(out / "report.html", report_html(studies))
    print(format_table(results))
    print(f"\nresults: {out / 'final.json'}, {out / 'report.html'}")


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
    from dmlopt.report.collect import collect
    from dmlopt.report.figures import report_html
    from dmlopt.study.storage import ScoreBook, open_storage, redact, storage_url

    if args.storage is None and args.study is None:
        raise DmloptError("report needs --storage URL or --study NAME (for runs/<study>/study.db)")
    url = storage_url(args.storage, None, _out_dir(args, args.study or ""))
    studies = collect(open_storage(url, create=False), ScoreBook(url, create=False), args.study)
    if not studies:
        raise DmloptError(f"no dmlopt study in {redact(url)}")
    _write(Path(args.output), report_html(studies))
    print(f"report: {args.output}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from optuna_dashboard import run_server

    from dmlopt.study.storage import open_storage, storage_url

    url = storage_url(args.storage, None, _out_dir(args, args.study or ""))
    storage = open_storage(url, create=False)
    print(f"optuna-dashboard on http://127.0.0.1:{args.port}/ (Ctrl-C to stop)", flush=True)
    run_server(storage, host="127.0.0.1", port=args.port)
    return 0


def cmd_losses(args: argparse.Namespace) -> int:
    from dmlopt import losses

    keys = losses.names(args.pattern)
    if not keys:
        raise DmloptError(f"no loss matches {args.pattern!r} (known: {', '.join(losses.names())})")
    for key in keys:
        spec = losses.get(key)
        extra = f" + {spec.miner_class}" if spec.miner_class else ""
        print(f"{key}  ({spec.loss_class}{extra}): {spec.summary}")
        for name, param in spec.search_space().items():
            print(f"    {name:24s} {param}")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmlopt",
        description="Fair deep metric learning comparisons: class-disjoint cross-validated "
        "search on train/val classes, one scoring of the held-out test set.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

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

    p = add("run", cmd_run, "search every loss, then score the test set once, then print the table")
    p.add_argument("study", help="study file (YAML)")
    p.add_argument("--no-final", action="store_true", help="stop after the search")
    p.add_argument("--rescore", action="store_true", help="score the test set again (recorded)")
    storage_options(p)

    p = add("worker", cmd_run, "join a distributed search as one more worker (no final stage)")
    p.add_argument("study", help="study file (YAML)")
    p.set_defaults(no_final=True, rescore=False)
    storage_options(p)

    p = add("final", cmd_final, "retrain the best config of each loss and score the test set once")
    p.add_argument("study", help="study file (YAML), or an exported best config")
    p.add_argument("--rescore", action="store_true", help="score the test set again (recorded)")
    storage_options(p)

    p = add("check", cmd_check, "validate a study file; print the resolved config and the folds")
    p.add_argument("study", help="study file (YAML)")
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

    p = add("export", cmd_export, "write the best config of <study>/<loss> as a study file")
    p.add_argument("name", help="<study>/<loss>")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    storage_options(p)

    p = add("report", cmd_report, "write the comparison table and plots (HTML) from storage")
    p.add_argument("--study", help="only this study; its default storage is runs/<study>/")
    p.add_argument("-o", "--output", default="report.html", help="HTML file (default: %(default)s)")
    storage_options(p)

    p = add("dashboard", cmd_dashboard, "serve optuna-dashboard for the storage on 127.0.0.1")
    p.add_argument("--study", help="its default storage is runs/<study>/study.db")
    p.add_argument("--port", type=int, default=8080)
    storage_options(p)

    p = add("losses", cmd_losses, "list the registered losses and their search spaces")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'multi*'")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except DmloptError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
