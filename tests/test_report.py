"""Reports read storage and never write it; the dashboard serves it on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest

from dmlopt.cli import main
from dmlopt.report.collect import collect
from dmlopt.report.figures import scores_figure, search_figure
from dmlopt.report.page import report_html
from dmlopt.study.storage import ScoreBook, open_storage

from .conftest import LOSSES, SCORED, running_dashboard


def test_collect_reads_searches_and_scores(stored: dict[str, Any]) -> None:
    url = stored["url"]
    studies = collect(open_storage(url), ScoreBook(url))
    assert list(studies) == ["tiny"] and set(studies["tiny"]) == set(LOSSES)
    for loss, result in studies["tiny"].items():
        study = optuna.load_study(study_name=f"tiny/{loss}", storage=url)
        assert result.best_value == study.best_value
        assert result.best_params == study.best_params
        assert [n for n, _ in result.trials] == [t.number for t in study.trials]
    for loss in SCORED:
        scored = studies["tiny"][loss].test
        final = json.loads((stored["out"] / "final.json").read_text())[loss]
        assert scored is not None and scored["test"] == final["test"]
        assert scored["rescored"] is False and studies["tiny"][loss].scoring == "first scoring"
    assert studies["tiny"]["multi_similarity"].test is None


def test_figures_carry_the_collected_numbers(stored: dict[str, Any]) -> None:
    url = stored["url"]
    results = collect(open_storage(url), ScoreBook(url))["tiny"]
    bars = scores_figure(results)
    final = json.loads((stored["out"] / "final.json").read_text())["contrastive"]["test"]
    names = {t.name for t in bars.data}
    assert names == {f"{m} {k}" for m in SCORED for k in ("concat", "sep")}  # no unscored bar
    concat = next(t for t in bars.data if t.name == "contrastive concat")
    assert concat.y[0] == pytest.approx(100 * final["concatenated"]["map_at_r"]["mean"])
    search = search_figure(results)
    best_line = next(t for t in search.data if t.name == "contrastive")
    assert best_line.y[-1] == pytest.approx(results["contrastive"].best_value)
    dots = next(t for t in search.data if t.name == "contrastive trials")
    assert dots.marker.color == best_line.line.color  # one colour per method
    assert search.layout.xaxis.tickformat == "d"  # trials are whole numbers


def test_report_command_writes_html_and_changes_nothing(
    stored: dict[str, Any], tmp_path: Path
) -> None:
    db = stored["out"] / "study.db"
    before = db.read_bytes()
    page = tmp_path / "report.html"
    assert main(["report", "--storage", stored["url"], "-o", str(page)]) == 0
    text = page.read_text()
    assert all(f'data-method="{loss}"' in text for loss in LOSSES) and "plotly" in text.lower()
    assert db.read_bytes() == before
    assert (stored["out"] / "report.html").is_file()  # written by `run` after the final stage


def test_report_never_shows_a_password() -> None:
    from dmlopt.report.collect import StudyReport

    page = report_html({"s": StudyReport("s", {}, None)})
    assert "secret" not in page and "<h1>s</h1>" in page  # nothing from a URL is drawn at all


def test_report_without_storage_or_study_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report"]) == 2
    assert capsys.readouterr().err.startswith("error: report needs --storage")


def _get(port: int, path: str, method: str = "GET") -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            body = r.read()
            kind = r.headers.get("Content-Type") or ""
            return r.status, json.loads(body) if "json" in kind and body else body
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_dashboard_serves_the_studies_on_localhost(stored: dict[str, Any]) -> None:
    with running_dashboard("--storage", stored["url"]) as (port, server):
        body = _get(port, "/api/studies")[1]
        names = {s["study_name"] for s in body["study_summaries"]}
        assert names == {f"tiny/{loss}" for loss in LOSSES}
        # the artifact store beside the database was found without being named
        assert _get(port, "/api/meta")[1]["artifact_is_available"] is True
        study = next(s for s in body["study_summaries"] if s["study_name"] == "tiny/contrastive")
        detail = _get(port, f"/api/studies/{study['study_id']}")[1]
        assert detail["objective_names"] == ["val MAP@R"]
        trial = detail["trials"][0]
        curve = next(a for a in trial["artifacts"] if a["filename"] == "fold0_val_curve.csv")
        path = f"/artifacts/{study['study_id']}/{trial['trial_id']}/{curve['artifact_id']}"
        assert _get(port, path)[1].decode().startswith("epoch,val_map_at_r\n")
    assert "127.0.0.1" in server.communicate()[0]  # bound to this machine only


def _copy_with_another_study(stored: dict[str, Any], tmp_path: Path) -> str:
    import shutil

    from dmlopt.study.runner import CONFIG_ATTR

    shutil.copy(stored["out"] / "study.db", tmp_path / "study.db")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    other = optuna.create_study(study_name="other/contrastive", storage=url)
    other.set_user_attr(CONFIG_ATTR, {"study": "other"})
    return url


def test_dashboard_is_read_only_unless_writable(stored: dict[str, Any], tmp_path: Path) -> None:
    url = _copy_with_another_study(stored, tmp_path)
    with running_dashboard("--storage", url) as (port, _):
        for study in _get(port, "/api/studies")[1]["study_summaries"]:
            status, body = _get(port, f"/api/studies/{study['study_id']}", "DELETE")
            assert status == 403 and "read-only" in body["reason"]
    names = {s.study_name for s in optuna.get_all_study_summaries(url)}
    assert "tiny/contrastive" in names and "other/contrastive" in names  # nothing deleted
    with running_dashboard("--storage", url, "--writable") as (port, _):
        other = optuna.load_study(study_name="other/contrastive", storage=url)
        assert _get(port, f"/api/studies/{other._study_id}", "DELETE")[0] in (200, 204)
    assert "other/contrastive" not in {s.study_name for s in optuna.get_all_study_summaries(url)}


def test_dashboard_study_filter_and_public_host_warning(
    stored: dict[str, Any], tmp_path: Path
) -> None:
    url = _copy_with_another_study(stored, tmp_path)
    other = optuna.load_study(study_name="other/contrastive", storage=url)
    args = ("--storage", url, "--study", "tiny", "--host", "0.0.0.0")
    with running_dashboard(*args) as (port, server):
        names = {s["study_name"] for s in _get(port, "/api/studies")[1]["study_summaries"]}
        assert names == {f"tiny/{loss}" for loss in LOSSES}
        assert _get(port, f"/api/studies/{other._study_id}")[0] == 404
        assert _get(port, f"/csv/{other._study_id}")[0] == 404
    err = server.communicate()[1]
    assert "warning: the dashboard has no authentication" in err


def test_redact_masks_passwords_in_the_userinfo_and_the_query() -> None:
    from dmlopt.study.storage import redact

    assert "hunter2" not in redact("postgresql://u:hunter2@db:5432/x")
    masked = redact("postgresql://u@db/x?password=hunter2&sslmode=require")
    assert "hunter2" not in masked and "sslmode=require" in masked


def test_report_of_an_exported_final_shows_its_scores(
    stored: dict[str, Any], tmp_path: Path
) -> None:
    best = tmp_path / "best.yaml"
    assert main(["export", "tiny/contrastive", "--out", str(stored["out"]), "-o", str(best)]) == 0
    out = tmp_path / "exported"
    assert main(["final", str(best), "--out", str(out)]) == 0
    url = f"sqlite:///{out / 'study.db'}"
    studies = collect(open_storage(url, create=False), ScoreBook(url, create=False))
    (result,) = studies["tiny-contrastive-best"].values()
    assert result.trials == [] and result.test is not None  # scored without a search
    assert "tiny-contrastive-best" in (out / "report.html").read_text()


def test_a_read_only_score_book_creates_nothing(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()
    book = ScoreBook(f"sqlite:///{db}", create=False)
    assert book.study_names() == [] and book.latest("x/y") is None
    tables = sqlite3.connect(db).execute("select name from sqlite_master").fetchall()
    assert tables == []


# ----------------------------------------------------------------------------- the report page
def _page(stored: dict[str, Any]) -> str:
    from dmlopt.report.collect import collect_studies

    url = stored["url"]
    return report_html(collect_studies(open_storage(url), ScoreBook(url)))


def _row(page: str, method: str) -> str:
    start = page.index(f'<tr data-method="{method}">')
    return page[start : page.index("</tr>", start)]


def test_report_page_marks_the_best_and_lists_unscored_methods(stored: dict[str, Any]) -> None:
    import plotly.offline

    from dmlopt.report.page import COLUMNS

    page = _page(stored)
    final = json.loads((stored["out"] / "final.json").read_text())
    # the best mean of each column is the one marked best
    for i, (kind, metric) in enumerate(COLUMNS):
        best = max(SCORED, key=lambda m: final[m]["test"][kind][metric]["mean"])
        cells = _row(page, best).split("<td")[3:]  # name, val, then the test columns
        assert 'class="best"' in cells[i], (kind, metric, best)
    assert "searched, not scored on the test set" in _row(page, "multi_similarity")
    assert "Searched but not scored on the test set: multi_similarity." in page
    assert "of 2 methods are within noise of the best" in page  # two scored methods
    assert "Welch t-test" in page and "Holm" in page
    # plotly.js inlined exactly once; nothing loaded from elsewhere
    bundle = plotly.offline.get_plotlyjs()
    assert page.count(bundle[:500]) == 1
    own = page.replace(bundle, "")
    assert "<script src=" not in own and "http://" not in own and "https://" not in own
    # the protocol box: trial states and split sizes of the stored study
    assert "2 complete, 0 pruned, 0 failed" in page
    assert "8 classes, 64 samples" in page  # 16 classes x 8 samples, half of them test
    assert "first scoring, 2 rerun(s)" in page
    # ... and what produced each score: versions, commit (when there is one), device, date
    provenance = final[SCORED[0]]["provenance"]
    assert f"by dmlopt {provenance['dmlopt']}" in page
    assert f"pytorch-metric-learning {provenance['pytorch_metric_learning']}" in page
    assert f"on {provenance['device']}" in page
    # retrieval examples of the best scored method: thumbnails as data URIs
    assert page.count('src="data:image/png;base64,') >= 4 * 6


def test_single_rerun_shows_na_and_no_test(stored: dict[str, Any]) -> None:
    from dmlopt.report.collect import collect_studies

    url = stored["url"]
    studies = collect_studies(open_storage(url), ScoreBook(url))
    for result in studies["tiny"].losses.values():
        if result.test is not None:  # keep only the first rerun, as if final.runs were 1
            for kind in ("concatenated", "separated"):
                for summary in result.test["test"][kind].values():
                    summary["values"] = summary["values"][:1]
                    summary["ci95"] = [summary["values"][0]] * 2
    page = report_html(studies)
    assert _row(page, "contrastive").count('<span class="ci">n/a</span>') == 6
    assert "with a single rerun per method no test can say which methods differ" in page
    assert 'class="within"' not in page


def test_rescore_and_reproduction_are_marked(stored: dict[str, Any]) -> None:
    from dataclasses import replace

    from dmlopt.report.collect import collect_studies

    url = stored["url"]
    studies = collect_studies(open_storage(url), ScoreBook(url))
    losses = studies["tiny"].losses
    assert losses["contrastive"].test is not None and losses["triplet"].test is not None
    losses["contrastive"] = replace(
        losses["contrastive"], test={**losses["contrastive"].test, "rescored": True, "attempt": 1}
    )
    source = {"study": "elsewhere/triplet", "trial": 7}
    losses["triplet"] = replace(
        losses["triplet"], test={**losses["triplet"].test, "reproduction_of": source}
    )
    page = report_html(studies)
    assert 'title="rescore (scoring no. 2)">*<' in _row(page, "contrastive")
    assert 'title="reproduction of elsewhere/triplet trial 7">R<' in _row(page, "triplet")
    assert "reproduction, 2 rerun(s) of elsewhere/triplet trial 7" in page


def test_importances_need_two_varying_trials() -> None:
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from dmlopt.report.collect import param_importances

    dist = {"loss.a": FloatDistribution(0, 1), "loss.b": FloatDistribution(0, 1)}

    def trial(a: float, b: float, value: float) -> optuna.trial.FrozenTrial:
        return create_trial(params={"loss.a": a, "loss.b": b}, distributions=dist, value=value)

    assert param_importances([trial(0.1, 0.2, 0.5)]) == ({}, "needs at least 2 completed trials")
    same = [trial(0.1, 0.2, v) for v in (0.1, 0.2, 0.3)]
    assert param_importances(same)[0] == {}
    # the value follows a only: a carries (nearly) all the importance
    varied = [trial(a, b, a) for a, b in ((0.1, 0.9), (0.5, 0.2), (0.9, 0.5), (0.3, 0.7))]
    found, note = param_importances(varied)
    assert note == "" and set(found) == {"loss.a", "loss.b"} and found["loss.a"] > found["loss.b"]


def test_trial_counts_by_state(tmp_path: Path) -> None:
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from dmlopt.report.collect import count_trials

    dist = {"x": FloatDistribution(0, 1)}
    trials = [create_trial(params={"x": 0.5}, distributions=dist, value=0.5)]
    trials += [create_trial(state=TrialState.PRUNED, params={"x": 0.1}, distributions=dist)] * 2
    trials += [create_trial(state=TrialState.FAIL)] * 3
    mark = {"diverged": [{"fold": 0, "epoch": 1, "step": 3}]}
    diverged = create_trial(params={"x": 0.2}, distributions=dist, value=0.1, user_attrs=mark)
    counts = count_trials([*trials, diverged])
    assert (counts.complete, counts.pruned, counts.failed, counts.diverged) == (2, 2, 3, 1)


# ----------------------------------------------------------------------------- dashboard data
def test_trials_carry_fold_curves_and_config_as_artifacts(stored: dict[str, Any]) -> None:
    from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta

    store = FileSystemArtifactStore(str(stored["out"] / "artifacts"))
    study = optuna.load_study(study_name="tiny/contrastive", storage=stored["url"])
    assert study.metric_names == ["val MAP@R"]
    for trial in study.trials:
        metas = {m.filename: m for m in get_all_artifact_meta(trial, storage=study._storage)}
        assert set(metas) == {"config.json", "fold0_val_curve.csv", "fold1_val_curve.csv"}
        for fold, best in enumerate(trial.user_attrs["fold_scores"]):
            path = stored["out"] / f"curve-{trial.number}-{fold}.csv"
            download_artifact(artifact_store=store, artifact_id=metas[
                f"fold{fold}_val_curve.csv"].artifact_id, file_path=str(path))  # fmt: skip
            rows = path.read_text().splitlines()
            assert rows[0] == "epoch,val_map_at_r"
            scores = [float(r.split(",")[1]) for r in rows[1:]]
            assert len(scores) == trial.user_attrs["epochs_trained"][fold]
            assert max(scores) == pytest.approx(best, abs=1e-6)  # the fold's best is on its curve
        path = stored["out"] / f"config-{trial.number}.json"
        download_artifact(artifact_store=store, artifact_id=metas["config.json"].artifact_id,
                          file_path=str(path))  # fmt: skip
        assert json.loads(path.read_text())["params"] == trial.params


def test_study_notes_carry_protocol_and_test_scores(stored: dict[str, Any]) -> None:
    from optuna_dashboard import get_note

    final = json.loads((stored["out"] / "final.json").read_text())
    for loss in LOSSES:
        note = get_note(optuna.load_study(study_name=f"tiny/{loss}", storage=stored["url"]))
        assert "2 folds" in note and "small_cnn" in note
        if loss in SCORED:
            mean = 100 * final[loss]["test"]["concatenated"]["map_at_r"]["mean"]
            assert "Test scores of record** (first scoring, 2 reruns" in note
            assert f"{mean:.2f}" in note
        else:
            assert "not scored yet" in note


# ----------------------------------------------------------------------------- commands
def test_studies_lists_states_and_scorings(
    stored: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["studies", "--storage", stored["url"], "--format", "json"]) == 0
    listed = {row["loss"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(listed) == set(LOSSES)
    for loss, row in listed.items():
        study = optuna.load_study(study_name=f"tiny/{loss}", storage=stored["url"])
        assert row["complete"] == len(study.trials) and row["pruned"] == row["failed"] == 0
        assert row["best_val_map_at_r"] == pytest.approx(study.best_value)
        assert row["test"] == ("first scoring" if loss in SCORED else "not scored")
    assert main(["studies", "--storage", stored["url"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["study", "loss"] and len(lines) == 1 + len(LOSSES)
    assert "not scored" in next(line for line in lines if "multi_similarity" in line)


def test_studies_of_a_missing_database_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["studies", "--storage", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert capsys.readouterr().err.startswith("error: no study database")
    assert not (tmp_path / "none.db").exists()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import dmlopt

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert (
        stop.value.code == 0 and capsys.readouterr().out.strip() == f"dmlopt {dmlopt.__version__}"
    )


def test_losses_as_json_match_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    from dmlopt import losses

    assert main(["losses", "--format", "json", "multi*"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert list(listed) == losses.names("multi*")
    for key, entry in listed.items():
        spec = losses.get(key)
        assert entry["loss_class"] == spec.loss_class
        assert entry["space"] == {k: str(v) for k, v in spec.search_space().items()}


def test_check_as_json_gives_the_folds(
    write_study: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from dmlopt.data.splits import class_disjoint_folds

    assert main(["check", str(write_study()), "--format", "json"]) == 0
    checked = json.loads(capsys.readouterr().out)
    expected = class_disjoint_folds(list(range(8)), n_folds=2)
    assert [(f["train"], f["val"]) for f in checked["folds"]] == [
        (list(t), list(v)) for t, v in expected
    ]
    assert checked["split"] == {"trainval_classes": 8, "test_classes": 8}
    assert checked["config"]["study"] == "tiny" and "storage" in checked


def test_explain_metrics_page_shows_the_scores_of_dmlopt_metrics(tmp_path: Path) -> None:
    from dmlopt.metrics import retrieval_scores
    from dmlopt.report.explain import toy_spaces

    page = tmp_path / "metrics.html"
    assert main(["explain-metrics", "-o", str(page)]) == 0
    text = page.read_text()
    spaces = toy_spaces()
    scores = [retrieval_scores(s.points, s.labels) for s in spaces]
    assert all(s["precision_at_1"] >= 0.95 for s in scores)  # P@1 near perfect everywhere
    maps = sorted(s["map_at_r"] for s in scores)
    assert maps[-1] - maps[0] > 0.5  # while MAP@R differs widely
    for space, s in zip(spaces, scores, strict=True):
        panel = text[text.index(f'data-space="{space.title}"') :]
        assert f"<td>MAP@R</td><td>{s['map_at_r']:.2f}</td>" in panel[: panel.index("</table>")]
    assert text.count("Plotly.newPlot") == 3


def test_artifacts_go_where_dmlopt_artifacts_says(
    write_study: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from optuna.artifacts import get_all_artifact_meta

    shared = tmp_path / "shared-artifacts"
    monkeypatch.setenv("DMLOPT_ARTIFACTS", str(shared))
    out = tmp_path / "out"
    study = write_study({"search": {"n_trials": 1}})
    assert main(["run", str(study), "--out", str(out), "--no-final"]) == 0
    assert not (out / "artifacts").exists()  # not beside the database: where the variable says
    loaded = optuna.load_study(study_name="tiny/contrastive", storage=f"sqlite:///{out}/study.db")
    metas = get_all_artifact_meta(loaded.trials[0], storage=loaded._storage)
    assert {m.artifact_id for m in metas} == {p.name for p in shared.iterdir()}
    assert len(metas) == 3  # the config and two folds' curves


def test_final_json_carries_retrieval_examples(stored: dict[str, Any]) -> None:
    from dmlopt.study.examples import NEIGHBOURS, QUERIES

    final = json.loads((stored["out"] / "final.json").read_text())
    for loss in SCORED:
        examples = final[loss]["examples"]
        assert examples["k"] == NEIGHBOURS and len(examples["queries"]) == QUERIES
        labels = {q["label"] for q in examples["queries"]}
        assert len(labels) == QUERIES  # one query from each of several test classes
        for query in examples["queries"]:
            assert query["image"].startswith("data:image/png;base64,")
            assert len(query["neighbours"]) == NEIGHBOURS
            assert query["index"] not in {n["index"] for n in query["neighbours"]}
            for n in query["neighbours"]:
                assert n["correct"] == (n["label"] == query["label"])
