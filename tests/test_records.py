"""Run records (experiments/records.py): a finished report run's JSON files kept in git, so a
fresh machine regenerates the tables from them instead of re-training."""

import json
import shutil

import pytest

from experiments import records
from experiments.tables import both_ways, cached_json, check_trained_rows, run_job

FLAGS = {"dataset": "ml-100k", "encoder": "gru4rec", "plugin": "none", "seed": 0,
         "data_dir": "/made/elsewhere/split-1230"}
TEST = {"recall@50": 0.25, "ndcg@50": 0.1}


@pytest.fixture
def roots(tmp_path, monkeypatch):
    runs, recs = tmp_path / "runs" / "table1", tmp_path / "results" / "runs" / "table1"
    monkeypatch.setattr(records, "RUNS", runs)
    monkeypatch.setattr(records, "RECORDS", recs)
    return runs, recs


def finished(folder, reeval=None):
    folder.mkdir(parents=True)
    (folder / "flags.json").write_text(json.dumps(FLAGS))
    (folder / "metrics.json").write_text(json.dumps({"run": {"plugin": "none"}, "test": TEST}))
    (folder / "wall_seconds.txt").write_text("61.5\n")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "best.weights.h5").write_bytes(b"weights")
    (folder / "events.out.tfevents").write_bytes(b"tensorboard")
    for name, value in (reeval or {}).items():
        (folder / "reeval").mkdir(exist_ok=True)
        (folder / "reeval" / name).write_text(json.dumps(value))
    return folder


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_record_holds_the_json_files_only(roots):
    runs, recs = roots
    run = finished(runs / "ml-1m" / "gru4rec-none-s0", {"test-cross-abc.json": {"recall@50": 0.3}})
    assert records.save(run) == recs / "ml-1m" / "gru4rec-none-s0"
    assert listing(recs / "ml-1m" / "gru4rec-none-s0") == [
        "flags.json", "metrics.json", "reeval/test-cross-abc.json", "wall_seconds.txt"]
    assert not list((recs / "ml-1m").glob(".*"))  # no temporary folder left behind


def test_runs_outside_the_reports_root_and_quick_grids_are_not_recorded(roots, tmp_path):
    runs, recs = roots
    assert records.save(finished(tmp_path / "mine" / "r")) is None
    assert records.save(finished(runs / "ml-100k-quick" / "gru4rec-none-s0")) is None
    assert not recs.exists()


def test_restore_fills_an_empty_folder_and_run_job_reuses_it(roots):
    runs, recs = roots
    records.save(finished(runs / "ml-100k" / "a", {"test-u2i.json": {"recall@50": 0.2}}))
    fresh = runs / "ml-100k" / "b"  # the same run on a fresh machine: only its record exists
    (recs / "ml-100k" / "a").rename(recs / "ml-100k" / "b")
    args = ["--dataset=ml-100k", "--encoder=gru4rec", "--plugin=none", "--seed=0",
            "--data_dir=/here/split-1230"]
    assert run_job(args, fresh, log=print) is True  # restored: run.py never starts
    assert json.loads((fresh / "metrics.json").read_text())["test"] == TEST
    assert json.loads((fresh / "reeval" / "test-u2i.json").read_text()) == {"recall@50": 0.2}
    assert (fresh / records.RESTORED).exists()
    # the reuse check still applies to a restored run
    with pytest.raises(RuntimeError, match="seed: 0 in the run, '1' now"):
        run_job([*args[:3], "--seed=1"], fresh, log=print)


def test_restore_leaves_a_finished_folder_alone(roots):
    runs, recs = roots
    records.save(finished(runs / "ml-100k" / "a"))
    (runs / "ml-100k" / "a" / "metrics.json").write_text(json.dumps({"test": {"recall@50": 0.9}}))
    assert records.restore(runs / "ml-100k" / "a") is False
    assert json.loads((runs / "ml-100k" / "a" / "metrics.json").read_text())["test"] == {
        "recall@50": 0.9}


def test_new_reevaluation_is_added_to_the_record(roots):
    runs, recs = roots
    run = finished(runs / "ml-100k" / "a")
    records.save(run)
    assert cached_json(run / "reeval" / "test-x.json", lambda: {"recall@50": 0.4}) == {
        "recall@50": 0.4}
    assert json.loads((recs / "ml-100k" / "a" / "reeval" / "test-x.json").read_text()) == {
        "recall@50": 0.4}


def test_restored_run_without_the_reevaluation_asked_for_is_a_clear_error(roots):
    runs, recs = roots
    records.save(finished(runs / "ml-100k" / "a"))
    import shutil
    shutil.rmtree(runs)
    records.restore(runs / "ml-100k" / "a")
    # X's cross-channel way is not in the record and there is no checkpoint to compute it
    with pytest.raises(RuntimeError, match="restored from its record .* without a checkpoint"):
        both_ways(runs / "ml-100k" / "a")
    # what the record holds is still served: X's own way
    assert json.loads((runs / "ml-100k" / "a" / "metrics.json").read_text())["test"] == TEST


def test_reusing_a_finished_run_records_it(roots):
    runs, recs = roots
    run = finished(runs / "ml-100k" / "gru4rec-none-s0")  # finished before records existed
    args = ["--dataset=ml-100k", "--encoder=gru4rec", "--plugin=none", "--seed=0"]
    assert run_job(args, run, log=print) is True
    assert (recs / "ml-100k" / "gru4rec-none-s0" / "metrics.json").exists()


def test_trained_rows_of_a_partial_table4_or_figure5():
    # in Table 4's order whatever the order asked; baseline and full are required
    assert check_trained_rows(["full", "-mining", "baseline"]) == ["baseline", "full", "-mining"]
    for bad in (["baseline", "-uu"], ["baseline", "full", "-u2u"]):
        with pytest.raises(SystemExit, match="must include baseline and full"):
            check_trained_rows(bad)


def test_selection_trials_are_recorded_with_their_grid(tmp_path, monkeypatch):
    runs, recs = tmp_path / "runs", tmp_path / "results" / "runs"
    monkeypatch.setattr(records, "RUNS", runs)
    monkeypatch.setattr(records, "RECORDS", recs)
    grid = {"grid": [{"recall@50": 0.3}], "u2i": {"recall@50": 0.25}}
    trial = finished(runs / "select" / "ml-1m" / "gru4rec" / "mic-abc-s100",
                     {"selection-grid.json": grid})
    target = recs / "select" / "ml-1m" / "gru4rec" / "mic-abc-s100"
    assert records.save(trial) == target
    assert listing(target) == ["flags.json", "metrics.json", "reeval/selection-grid.json",
                               "wall_seconds.txt"]
    quick = finished(runs / "select" / "ml-100k" / "gru4rec-quick" / "mic-abc-s100")
    assert records.save(quick) is None
    assert not (recs / "select" / "ml-100k").exists()
    fresh = runs / "select" / "ml-1m" / "gru4rec" / "mic-abc-s100"
    shutil.rmtree(fresh)
    assert records.restore(fresh) is True
    # the stage-2 grid comes back with the record: no checkpoint is needed to read it
    assert cached_json(fresh / "reeval" / "selection-grid.json", lambda: 1 / 0) == grid
