"""Which results a re-run of ``detecture bench`` keeps: retries after job-array shards, ``--force`` and the gallery,
record ids shared by two datasets, a dataset rebuilt under the same name, a share's exit status."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from bench_fixture import make_unified
from detecture.benchmark import cell_store, runner
from detecture.benchmark.regimes import parse_regime
from detecture.benchmark.runner import BenchConfig, cell_records, run_benchmark
from detecture.cli import main
from detecture.utils.parallel import Ranks, Shard


def _truth_as_predictions(root: Path, folder: Path, names: dict[str, str] | None = None) -> Path:
    """Each sample's ground truth as a label map (the perfect prediction), named ``<image stem>.png`` or by
    ``names`` (image stem -> file stem)."""
    folder.mkdir(parents=True, exist_ok=True)
    for record in json.loads((root / "metadata.json").read_text()):
        stem = Path(record["image_path"]).stem
        a = np.asarray(Image.open(root / record["textures"][0]["mask_path"])) > 0
        Image.fromarray(np.where(a, 1, 2).astype(np.uint8)).save(folder / f"{(names or {}).get(stem, stem)}.png")
    return folder


def _config(out: Path, datasets: list[Path], pred: Path, **options) -> BenchConfig:
    return BenchConfig(out=out, methods=[], datasets=[str(d) for d in datasets], predictions=[("p", str(pred))],
                       **options)


def _status(cells, out: Path) -> dict[str, str]:
    return {r["id"]: r["status"] for cell in cells for r in cell_records(cell, out)}


def test_a_retry_wins_over_the_failure_it_reruns_whichever_shard_file_holds_each(tmp_path):
    """Shards 1/2 and 2/2 write part-0 and part-1; sample m3 (share 2) fails for want of its file. The retry, run
    whole, appends to part-0, which is read before part-1: time, not file order, must decide."""
    root = make_unified(tmp_path / "set", 4)
    pred = _truth_as_predictions(root, tmp_path / "pred")
    (pred / "m3.png").unlink()
    out = tmp_path / "out"
    for i in (1, 2):
        run_benchmark(_config(out, [root], pred, gallery=0, shard=Shard.parse(f"{i}/2")))
    shards = sorted(p.name for p in (out / "cells" / "set" / "p").glob("part-*.jsonl"))
    assert shards == ["part-0.jsonl", "part-1.jsonl"]
    _truth_as_predictions(root, pred)
    cells = run_benchmark(_config(out, [root], pred, gallery=0, retry_failed=True))
    assert _status(cells, out) == {f"m{i}": "ok" for i in range(4)}
    assert [r["miou"] for r in cell_records(cells[0], out)] == [1.0] * 4


def test_force_clears_the_gallery_partitions_with_the_results(tmp_path):
    root = make_unified(tmp_path / "set", 1)
    pred = _truth_as_predictions(root, tmp_path / "pred")
    out = tmp_path / "out"
    run_benchmark(_config(out, [root], pred, gallery=1))
    partition = out / "partitions" / "set" / "p" / "m0.png"
    assert partition.is_file()
    (pred / "m0.png").unlink()
    cells = run_benchmark(_config(out, [root], pred, gallery=1, force=True))
    assert _status(cells, out) == {"m0": "failed"} and not partition.exists()  # no picture of a result gone


def test_two_datasets_with_one_record_id_each_read_the_prediction_of_their_own_image(tmp_path):
    first = make_unified(tmp_path / "first", 1)
    second = make_unified(tmp_path / "second", 2)
    metadata = json.loads((second / "metadata.json").read_text())[1:]  # its one record: id m0, image m1.png
    metadata[0]["id"] = "m0"
    (second / "metadata.json").write_text(json.dumps(metadata))
    pred = _truth_as_predictions(first, tmp_path / "pred")
    _truth_as_predictions(second, pred)  # m0.png for the first set's image, m1.png for the second's
    cells = run_benchmark(_config(tmp_path / "out", [first, second], pred, gallery=0))
    assert [(c.dataset.name, r["id"], r["miou"]) for c in cells for r in cell_records(c, tmp_path / "out")] == \
        [("first", "m0", 1.0), ("second", "m0", 1.0)]


def test_a_sample_whose_files_changed_is_scored_again_and_a_moved_dataset_is_not(tmp_path):
    """A dataset rebuilt under the same folder name must not keep the old version's results in its cell."""
    old, new, moved = tmp_path / "v1" / "set", tmp_path / "v2" / "set", tmp_path / "v3" / "set"
    make_unified(old, 2)
    shutil.copytree(old, new)
    shutil.copytree(old, moved)
    truth = np.asarray(Image.open(new / "masks" / "m1_a.png")) > 0
    Image.fromarray(np.where(np.roll(truth, 9, axis=0), 255, 0).astype(np.uint8)).save(new / "masks" / "m1_a.png")
    pred = _truth_as_predictions(old, tmp_path / "pred")
    out = tmp_path / "out"
    run_benchmark(_config(out, [old], pred, gallery=0))
    cells = run_benchmark(_config(out, [moved], pred, gallery=0))  # the same bytes elsewhere: nothing redone
    first = cell_records(cells[0], out)
    assert [r["miou"] for r in first] == [1.0, 1.0]
    cells = run_benchmark(_config(out, [new], pred, gallery=0))
    again = cell_records(cells[0], out)
    assert again[0] == first[0] and again[1]["finished"] > first[1]["finished"] and again[1]["miou"] < 1.0


def test_a_share_with_failed_samples_exits_1_and_says_how_many(tmp_path, capsys):
    root = make_unified(tmp_path / "set", 4)
    pred = _truth_as_predictions(root, tmp_path / "pred")
    (pred / "m3.png").unlink()
    argv = ["bench", "--datasets", str(root), "--methods", "", "--predictions", f"p={pred}",
            "--out", str(tmp_path / "out")]
    assert main([*argv, "--shard", "1/2"]) == 0  # m0, m1
    assert "2 of 2 sample(s) scored, 0 failed" in capsys.readouterr().out
    assert main([*argv, "--shard", "2/2"]) == 1  # m2, m3
    assert "1 of 2 sample(s) scored, 1 failed" in capsys.readouterr().out
    assert main(argv) == 1  # the merge step reports the failure too
    assert "3 of 4 sample(s) scored, 1 failed" in capsys.readouterr().out


def test_dataset_and_method_names_are_drawn_as_written_not_as_mathtext(tmp_path, capsys):
    """A pair of $ in a name made matplotlib parse it as mathtext; ``$\\frac{1}$`` failed the gallery and charts."""
    root = make_unified(tmp_path / "set $\\frac{1}$", 1)
    pred = _truth_as_predictions(root, tmp_path / "pred")
    out = tmp_path / "out"
    assert main(["bench", "--datasets", str(root), "--methods", "", "--predictions", f"p $\\frac{{1}}$={pred}",
                 "--out", str(out)]) == 0
    assert (out / "gallery" / "set_frac_1.png").is_file() and (out / "charts" / "miou.png").is_file()


def test_a_larger_gallery_on_a_complete_cell_draws_the_samples_it_adds(tmp_path):
    root = make_unified(tmp_path / "set", 3)
    pred = _truth_as_predictions(root, tmp_path / "pred")
    out = tmp_path / "out"
    run_benchmark(_config(out, [root], pred, gallery=1))
    folder = out / "partitions" / "set" / "p"
    assert sorted(p.name for p in folder.iterdir()) == ["m0.png"]
    first = {r["id"]: r for r in cell_records(run_benchmark(_config(out, [root], pred, gallery=1))[0], out)}
    cells = run_benchmark(_config(out, [root], pred, gallery=2))
    assert sorted(p.name for p in folder.iterdir()) == ["m0.png", "m1.png"]
    again = {r["id"]: r for r in cell_records(cells[0], out)}
    assert again["m0"] == first["m0"] and again["m2"] == first["m2"] and again["m1"]["miou"] == 1.0


def _scores(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "finished")} for r in records]


def test_predictions_regenerated_in_their_folder_are_scored_again(tmp_path):
    """Only the dataset's files were digested: label maps rewritten in the same folder kept their old scores."""
    root = make_unified(tmp_path / "set", 2)
    pred = _truth_as_predictions(root, tmp_path / "pred")
    out = tmp_path / "out"
    first = cell_records(run_benchmark(_config(out, [root], pred, gallery=0))[0], out)
    assert [r["miou"] for r in first] == [1.0, 1.0]
    with Image.open(pred / "m1.png") as im:
        Image.fromarray(np.ones(im.size[::-1], np.uint8)).save(pred / "m1.png")  # one region: no longer perfect
    again = cell_records(run_benchmark(_config(out, [root], pred, gallery=0))[0], out)
    fresh = cell_records(run_benchmark(_config(tmp_path / "fresh", [root], pred, gallery=0))[0], tmp_path / "fresh")
    assert again[0] == first[0]  # its label map is the same: kept, not scored again
    assert _scores(again) == _scores(fresh) and again[1]["miou"] < 1.0


class _ThreadRanks(Ranks):
    """Process ``index`` of two, played by a thread: its barrier is a :class:`threading.Barrier`."""

    def __init__(self, index: int, barrier: threading.Barrier) -> None:
        super().__init__()
        self.index, self.count, self._barrier = index, 2, barrier

    def wait(self) -> None:
        self._barrier.wait(timeout=60)


def test_launched_processes_split_the_same_pending_samples_though_one_reads_them_late(tmp_path, monkeypatch):
    """Rank 1 reads its pending lists after rank 0 recorded a result (a slow file system): it split fewer samples
    than rank 0, and the samples between the two splits were scored by no one."""
    root = make_unified(tmp_path / "set", 8)
    pred = _truth_as_predictions(root, tmp_path / "pred")
    out = tmp_path / "out"
    barrier, recorded, rank_of = threading.Barrier(2), threading.Event(), {}
    write, pending = cell_store.ShardWriter.write, runner._pending

    def write_and_tell(self, record):
        write(self, record)
        recorded.set()

    def read_late(*args, **kwargs):
        if rank_of[threading.get_ident()] == 1:
            recorded.wait(timeout=2)  # with a barrier before any scoring, nothing is recorded: it waits in vain
        return pending(*args, **kwargs)

    monkeypatch.setattr(cell_store.ShardWriter, "write", write_and_tell)
    monkeypatch.setattr(runner, "_pending", read_late)
    errors: list[BaseException] = []

    def rank(index: int) -> None:
        rank_of[threading.get_ident()] = index
        try:
            run_benchmark(_config(out, [root], pred, gallery=0), _ThreadRanks(index, barrier))
        except BaseException as exc:  # noqa: BLE001 — reported by the assertion below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=rank, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert sorted(cell_store.read_cell(out / "cells" / "set" / "p")) == [f"m{i}" for i in range(8)]


def test_a_sample_without_a_record_is_counted_missing_and_fails_the_exit_status(tmp_path, capsys, monkeypatch):
    """A lost sample was counted as scored (requested minus failed) and the run exited 0."""
    root = make_unified(tmp_path / "set", 3)
    pred = _truth_as_predictions(root, tmp_path / "pred")
    pending = runner._pending
    monkeypatch.setattr(runner, "_pending", lambda *a, **k: [r for r in pending(*a, **k) if r.id != "m1"])
    assert main(["bench", "--datasets", str(root), "--methods", "", "--predictions", f"p={pred}",
                 "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "2 of 3 sample(s) scored, 0 failed, 1 missing"
    assert main(["bench", "--datasets", str(root), "--methods", "", "--predictions", f"p={pred}", "--shard", "1/2",
                 "--out", str(tmp_path / "share")]) == 1  # m0, m1
    assert "1 of 2 sample(s) scored, 0 failed, 1 missing" in capsys.readouterr().out


def test_a_gallery_sample_that_now_fails_loses_its_old_partition(tmp_path):
    """The partition of its earlier ok result stayed and the gallery drew it beside the new failure."""
    root = make_unified(tmp_path / "set", 2)
    pred = _truth_as_predictions(root, tmp_path / "pred")
    out = tmp_path / "out"
    run_benchmark(_config(out, [root], pred, gallery=2))
    partition = out / "partitions" / "set" / "p" / "m0.png"
    assert partition.is_file()
    (root / "images" / "m0.png").write_bytes(b"not a png")
    cells = run_benchmark(_config(out, [root], pred, gallery=2))
    assert _status(cells, out) == {"m0": "failed", "m1": "ok"}
    assert not partition.exists() and (out / "partitions" / "set" / "p" / "m1.png").is_file()


def test_force_with_limit_redoes_the_samples_inside_the_limit_and_keeps_the_others(tmp_path):
    """--force deleted the results of every sample of the cell, also those --limit left out of the run."""
    root = make_unified(tmp_path / "set", 4)
    pred = _truth_as_predictions(root, tmp_path / "pred")
    out = tmp_path / "out"
    first = {r["id"]: r for r in cell_records(run_benchmark(_config(out, [root], pred, gallery=0))[0], out)}
    cells = run_benchmark(_config(out, [root], pred, gallery=0, limit=2, force=True))
    again = {r["id"]: r for r in cell_store.read_cell(cells[0].directory(out)).values()}
    assert sorted(again) == ["m0", "m1", "m2", "m3"]
    assert [again[i] == first[i] for i in sorted(again)] == [False, False, True, True]
    assert all(again[i]["finished"] > first[i]["finished"] for i in ("m0", "m1"))


def test_force_with_limit_under_other_settings_clears_the_whole_cell(tmp_path):
    """Results outside the limit made under the old settings would join the new settings' mean."""
    root = make_unified(tmp_path / "set", 4)
    pred = _truth_as_predictions(root, tmp_path / "pred")
    out = tmp_path / "out"
    run_benchmark(_config(out, [root], pred, gallery=0))
    cells = run_benchmark(_config(out, [root], pred, gallery=0, limit=2, force=True,
                                  regime=parse_regime("oracle:3")))
    assert sorted(cell_store.read_cell(cells[0].directory(out))) == ["m0", "m1"]
