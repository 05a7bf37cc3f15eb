"""``segment --method classical`` end to end on real photos, folders and globs; ``to_hf()``; ``detecture.segment``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from detecture.cli import main
from detecture.utils import rle

from shared_data import SHARED_DATA


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """A folder of real photos (skimage.data), one corrupt image, and a non-image file."""
    from skimage import data

    from detecture.demo.examples import mosaic_two

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.coffee()[::2, ::2]).save(folder / "coffee.jpg")
    Image.fromarray(mosaic_two(192)[0]).save(folder / "disc.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_folder_with_a_corrupt_file(photo_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["segment", str(photo_dir), "--method", "classical", "--k", "2", "--out", str(out), "--workers", "1"])
    captured = capsys.readouterr()
    printed = captured.out
    assert code == 1
    assert "error:" not in printed  # per-image errors go to stderr, the table and the count to stdout
    assert [line for line in captured.err.splitlines() if line.startswith("error:")] == [
        line for line in captured.err.splitlines() if "broken.png" in line and line.startswith("error:")] != []
    assert "2 image(s) segmented, 1 failed, 1 non-image file(s) skipped" in printed
    assert sorted(p.name for p in out.iterdir()) == ["coffee.detecture.json", "coffee.detecture.png", "disc.detecture.json", "disc.detecture.png"]
    record = json.loads((out / "coffee.detecture.json").read_text())
    assert record["method"] == "classical" and record["size"] == [200, 300] and len(record["regions"]) == 2
    masks = np.stack([rle.decode(r["rle"]) for r in record["regions"]])
    assert masks.sum(0).max() == 1  # a partition: every pixel in exactly one region (the margins never tie at 0)
    assert all(r["description"] for r in record["regions"])
    with Image.open(out / "disc.detecture.png") as overlay:
        assert overlay.format == "PNG"


def test_disc_mosaic_is_found(tmp_path):
    """A brick disc on grass: the region covering the disc centre should be about the disc (independent GT)."""
    from detecture.demo.examples import mosaic_two

    image, truth = mosaic_two(192)
    path = tmp_path / "disc.png"
    Image.fromarray(image).save(path)
    assert main(["segment", str(path), "--method", "classical", "--k", "2", "--out", str(tmp_path / "o")]) == 0
    record = json.loads((tmp_path / "o" / "disc.detecture.json").read_text())
    masks = [rle.decode(r["rle"]) for r in record["regions"]]
    centre = next(m for m in masks if m[96, 96])
    iou = (centre & (truth == 2)).sum() / (centre | (truth == 2)).sum()
    assert iou > 0.7


def test_parallel_workers_glob_and_repeated_names(photo_dir, tmp_path, texture_photos):
    """Two worker processes: a glob, and the same file name in two folders, each matching an in-process run."""
    import detecture

    images = {"a": texture_photos["brick"][:96, :160], "b": texture_photos["grass"][:96, :160]}
    for sub, image in images.items():
        (tmp_path / sub).mkdir()
        Image.fromarray(image).save(tmp_path / sub / "x.png")
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "a"), str(tmp_path / "b"), str(photo_dir / "*.jpg"), "--method",
                 "classical", "--k", "2", "--out", str(out), "--workers", "2"]) == 0
    assert {p.name for p in out.glob("*.json")} == {"x.detecture.json", "x_2.detecture.json", "coffee.detecture.json"}
    for name, image in (("x.detecture.json", images["a"]), ("x_2.detecture.json", images["b"])):
        labels = detecture.segment(image, k=2).label_map
        record = json.loads((out / name).read_text())
        for region in record["regions"]:
            assert np.array_equal(rle.decode(region["rle"]), labels == region["index"])


def test_a_folder_or_glob_skips_the_outputs_of_an_earlier_run(tmp_path, capsys):
    """Segmenting a folder that holds an earlier run's results segments its images, not their overlays; an overlay
    without its record beside it is a user's image, and one named explicitly is segmented as asked."""
    from detecture.demo.examples import mosaic_two

    shots = tmp_path / "shots"
    shots.mkdir()
    Image.fromarray(mosaic_two(64)[0]).save(shots / "brick.png")
    Image.fromarray(mosaic_two(64)[0]).save(shots / "mine.detecture.png")  # the user's, no record beside it
    classical = ["--method", "classical", "--k", "2", "--workers", "1"]
    assert main(["segment", str(shots / "brick.png"), *classical, "--out", str(shots)]) == 0
    assert (shots / "brick.detecture.json").is_file()
    for source, out, skipped in ((shots, "r2", "1 non-image file(s) and 1 Detecture output(s) skipped"),
                                 (str(shots / "*.png"), "r3", "1 Detecture output(s) skipped")):
        capsys.readouterr()
        assert main(["segment", str(source), *classical, "--out", str(tmp_path / out)]) == 0
        assert sorted(p.name for p in (tmp_path / out).glob("*.json")) == [
            "brick.detecture.json", "mine.detecture.detecture.json"]
        assert f"2 image(s) segmented, 0 failed, {skipped};" in capsys.readouterr().out
    assert main(["segment", str(shots / "brick.detecture.png"), *classical, "--out", str(tmp_path / "r4")]) == 0
    assert [p.name for p in (tmp_path / "r4").glob("*.json")] == ["brick.detecture.detecture.json"]


@pytest.mark.parametrize("args, message", [
    (["--query", "bark"], "a query needs the detecture method"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--batch-size", "4"], "--batch-size applies to method 'detecture' only"),
    (["--show-contract"], "--show-contract applies to method 'detecture' only"),
    (["--max-new-tokens", "5", "--tiny"], "--max-new-tokens, --tiny apply to method 'detecture' only"),
    (["--grounding", "text"], "--grounding applies to method 'detecture' only"),
    (["--k", "0"], "--k must be 'auto' or an integer from 1 to 6, got '0'"),
    (["--k", "2.0"], "--k must be 'auto' or an integer from 1 to 6, got '2.0'"),
])
def test_bad_options_for_classical(photo_dir, tmp_path, capsys, args, message):
    code = main(["segment", str(photo_dir / "disc.png"), "--method", "classical", "--out", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("error:")


@pytest.mark.parametrize("k", [2.0, True, 0, "many"])
def test_api_refuses_a_k_by_its_field_name(photo_dir, k):
    """The API's K is the field ``k``, not the command line's ``--k``; a bool or float is no K."""
    import detecture
    from detecture.errors import InputError

    with pytest.raises(InputError, match=rf"^k must be 'auto' or an integer from 1 to 6, got {k!r}$"):
        detecture.segment(photo_dir / "disc.png", k=k)


def test_glob_matching_nothing_and_folder_without_images(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "*.jpg"), "--method", "classical"]) == 2
    assert "no file matches" in capsys.readouterr().err
    (tmp_path / "readme.txt").write_text("x")
    assert main(["segment", str(tmp_path), "--method", "classical"]) == 2
    assert "no images found" in capsys.readouterr().err


def test_to_hf_round_trip(texture_photos):
    import detecture

    image = np.concatenate([texture_photos["brick"][:128, :128], texture_photos["gravel"][:128, :128]], axis=1)
    result = detecture.segment(image, k=2)
    hf = result.to_hf()
    labels = result.label_map
    assert [entry["label"] for entry in hf] == result.descriptions
    for k, entry in enumerate(hf, 1):
        assert entry["mask"].mode == "L" and entry["mask"].size == (256, 128)
        mask = np.asarray(entry["mask"])
        assert set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 255, labels == k)
        assert 0.0 <= entry["score"] <= 1.0


def test_a_worker_segments_with_the_requests_seed_and_the_record_names_it(tmp_path):
    """The k-means seed reaches the worker process (its regions are the API's with that seed) and is recorded, so a
    re-run with another seed redoes the image; the default seed is not recorded."""
    from skimage import data

    import detecture
    from detecture.commands.segment import settings_of
    from detecture.commands.segment_classical import ClassicalJob, run_classical
    from detecture.service import SegmentRequest

    image = data.astronaut()[::8, ::8]
    path = tmp_path / "astronaut.png"
    Image.fromarray(image).save(path)
    request = SegmentRequest("classical", k=3, seed=7)
    job = ClassicalJob(0, path, tmp_path / "astronaut.detecture", request.regime, settings_of(request), request.seed)
    [(_, row, error)] = list(run_classical([job], 1))
    assert error is None
    record = json.loads((tmp_path / "astronaut.detecture.json").read_text())
    masks = np.stack([rle.decode(region["rle"]) for region in record["regions"]])
    expected = detecture.segment(image, k=3, seed=7).label_map
    np.testing.assert_array_equal(masks, expected[None] == np.arange(1, 4)[:, None, None])
    assert record["settings"]["seed"] == 7 and "seed" not in settings_of(SegmentRequest("classical", k=3))


def test_region_scores_are_softmax_confidences():
    """Reference: per pixel, softmax over [0, logits] at the winning channel, averaged over the region."""
    import torch

    from detecture.result import SegmentationResult

    logits = torch.tensor([[[2.0, -1.0], [0.5, -3.0]], [[-2.0, 1.0], [0.1, -1.0]]])
    result = SegmentationResult(["a", "b"], "", logits, (2, 2))
    probs = torch.softmax(torch.cat([torch.zeros(1, 2, 2), logits]), dim=0)
    expected_a = (probs[1, 0, 0] + probs[1, 1, 0]) / 2  # region a wins (0,0) and (1,0); (1,1) is unassigned
    expected_b = probs[2, 0, 1]
    assert result.region_scores() == pytest.approx([float(expected_a), float(expected_b)], rel=1e-5)
    assert result.label_map.tolist() == [[1, 2], [1, 0]]


def test_segment_convenience_accepts_path_pil_and_array(tmp_path):
    import detecture
    from detecture.demo.examples import mosaic_two

    image = mosaic_two(96)[0]
    path = tmp_path / "m.png"
    Image.fromarray(image).save(path)
    results = [detecture.segment(x, method="classical", k=2) for x in (str(path), Image.fromarray(image), image)]
    assert all(r.num_regions == 2 and r.image_size == (96, 96) for r in results)
    assert all(np.array_equal(r.label_map, results[0].label_map) for r in results)
    with pytest.raises(detecture.errors.InputError, match="query"):
        detecture.segment(image, method="classical", query="bark")
    with pytest.raises(detecture.errors.InputError, match="unknown method"):
        detecture.segment(image, method="sam")


def test_segment_convenience_runs_the_vlm_pipeline(tiny_pipeline, texture_photos):
    import detecture

    result = detecture.segment(texture_photos["brick"][:64, :64], method="detecture", k=2, pipeline=tiny_pipeline)
    assert result.num_regions == 2 and result.label_map.shape == (64, 64)


def test_import_detecture_stays_cheap():
    code = "import sys, detecture; print(sorted(m for m in ('torch', 'sklearn', 'gradio') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


def test_classical_runs_never_import_torch(tmp_path):
    """The offline method is the one for machines without a GPU stack: its commands and API must not pay for
    importing torch / accelerate / transformers (seconds of start-up, or not installed at all)."""
    image = tmp_path / "in" / "mosaic.png"
    image.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(image)
    bench_data = SHARED_DATA / "outex"
    code = f"""
import sys
import detecture
from detecture.cli import main
assert main(["segment", {str(image)!r}, "--method", "classical", "--k", "2", "--workers", "1",
             "--out", {str(tmp_path / "seg")!r}]) == 0
result = detecture.segment({str(image)!r}, method="classical", k=2)
assert result.logits.shape == (2, 48, 64) and len(result.region_scores()) == 2 and len(result.to_hf()) == 2
assert main(["bench", "--datasets", {str(bench_data)!r}, "--methods", "classical", "--limit", "1",
             "--out", {str(tmp_path / "bench")!r}]) == 0
print(sorted(m for m in ("torch", "accelerate", "transformers") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_model_load_failure_names_the_offline_method(tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    code = main(["segment", str(image), "--qwen", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "no-such-model" in err and "--method classical" in err
    assert len(err.strip().splitlines()) == 1


def test_demo_command_options(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    for option in ("--host", "--port", "--share", "--tiny", "--vlm", "--head"):
        assert option in text
    assert "127.0.0.1" in text


def test_summary_table_names_each_rows_outputs(tmp_path, capsys):
    """Two inputs of one file name write brick and brick_2: each table row names its own output."""
    from detecture.demo.examples import mosaic_two

    for sub, image in (("a", mosaic_two(64)[0]), ("b", mosaic_two(64)[0][::-1])):
        (tmp_path / sub).mkdir()
        Image.fromarray(image).save(tmp_path / sub / "brick.png")
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "a" / "brick.png"), str(tmp_path / "b" / "brick.png"), "--method",
                 "classical", "--k", "2", "--workers", "1", "--out", str(out)]) == 0
    header, *rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("image", "brick"))]
    assert header.split()[:2] == ["image", "output"]
    assert [row.split()[:3] for row in rows] == [["brick.png", "brick", "1"], ["brick.png", "brick", "2"],
                                                 ["brick.png", "brick_2", "1"], ["brick.png", "brick_2", "2"]]
    assert {p.name for p in out.glob("*.json")} == {"brick.detecture.json", "brick_2.detecture.json"}


def test_summary_table_of_no_rows_prints_no_header(capsys):
    """A run whose every image failed or was already done prints only its closing line, no empty table."""
    from detecture.output import print_table

    print_table([])
    assert capsys.readouterr().out == ""


def test_summary_table_marks_cut_text(tmp_path, capsys):
    """Text cut to its column ends in an ellipsis (a cut is never read as the whole), within 120 columns."""
    from detecture.output import print_table

    long = "Texture of " + "very " * 40 + "rough bark"
    print_table([{"image": "x" * 40 + ".png", "json": tmp_path / "short.detecture.json",
                  "regions": [{"index": 1, "area_fraction": 1.0, "description": long}]},
                 {"image": "y.png", "json": tmp_path / "y.detecture.json",
                  "regions": [{"index": 1, "area_fraction": 1.0, "description": "bark"}]}])
    _, cut, whole = capsys.readouterr().out.splitlines()
    assert cut.startswith("x" * 27 + "…  short ") and cut.endswith(" very…") and len(cut) <= 120
    assert whole.endswith("  bark") and "…" not in whole


def test_a_gif_in_a_folder_is_segmented_as_a_named_one(tmp_path, capsys):
    """A folder scan takes what a named file reads: an animated GIF, at its first frame, in both cases."""
    from detecture.demo.examples import mosaic_two
    from detecture.images import load_image

    folder = tmp_path / "gifs"
    folder.mkdir()
    first = Image.fromarray(mosaic_two(64)[0]).quantize(256)
    first.save(folder / "anim.gif", save_all=True, append_images=[Image.new("P", first.size, 0)])
    assert np.array_equal(np.asarray(load_image(folder / "anim.gif")), np.asarray(first.convert("RGB")))
    classical = ["--method", "classical", "--k", "2", "--workers", "1"]
    assert main(["segment", str(folder / "anim.gif"), *classical, "--out", str(tmp_path / "named")]) == 0
    assert main(["segment", str(folder), *classical, "--out", str(tmp_path / "scanned")]) == 0
    assert "1 image(s) segmented, 0 failed" in capsys.readouterr().out
    named, scanned = (json.loads((tmp_path / out / "anim.detecture.json").read_text()) for out in ("named", "scanned"))
    assert [r["rle"] for r in named["regions"]] == [r["rle"] for r in scanned["regions"]]
