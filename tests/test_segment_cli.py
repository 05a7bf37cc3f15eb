"""``detecture segment`` as a user runs it: outputs per image, a table, and one error line per bad input."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detecture.utils import rle
from detecture.cli import main


@pytest.fixture()
def photos(tmp_path):
    from skimage import data

    paths = {}
    paths["coffee"] = tmp_path / "coffee.jpg"
    Image.fromarray(data.coffee()).save(paths["coffee"])
    paths["brick"] = tmp_path / "brick.png"
    Image.fromarray(data.brick()).save(paths["brick"])
    return paths


def test_segment_writes_overlay_and_json(photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(photos["coffee"]), str(photos["brick"]), "--tiny", "--k", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "coffee.jpg" in printed and "2 image(s) segmented, 0 failed" in printed
    record = json.loads((out / "coffee.detecture.json").read_text())
    assert record["size"] == [400, 600] and len(record["regions"]) == 3 and "meaningless" in record["note"]
    masks = np.stack([rle.decode(r["rle"]) for r in record["regions"]])
    assert masks.shape == (3, 400, 600) and masks.sum(0).max() <= 1
    total = sum(r["area_fraction"] for r in record["regions"]) + record["unassigned_fraction"]
    assert abs(total - 1.0) < 1e-9
    for region, mask in zip(record["regions"], masks):
        assert region["pixels"] == int(mask.sum())
    with Image.open(out / "coffee.detecture.png") as overlay:
        assert overlay.format == "PNG" and overlay.width > 400


@pytest.mark.parametrize("orientation", [1, 6, 3])
def test_masks_of_a_rotated_photo_are_upright_and_the_record_says_how_to_map_them_back(tmp_path, orientation):
    """A camera JPEG stored sideways (EXIF orientation 6) is segmented upright, as viewers show it; the record says
    which orientation was applied and the stored size, and to_stored_frame lines a mask up with the raw pixels."""
    from detecture.images import to_stored_frame

    rng = np.random.default_rng(0)
    stored = np.full((96, 160, 3), 128, np.uint8)
    stored[:, :64] = rng.integers(0, 255, (96, 64, 3), dtype=np.uint8)  # as stored: a noisy left band
    noisy = np.zeros((96, 160), bool)
    noisy[:, :64] = True
    exif = Image.Exif()
    exif[0x0112] = orientation
    photo = tmp_path / "cam.jpg"
    Image.fromarray(stored).save(photo, quality=95, exif=exif)
    out = tmp_path / "out"
    assert main(["segment", str(photo), "--method", "classical", "--k", "2", "--workers", "1", "--out", str(out)]) == 0
    record = json.loads((out / "cam.detecture.json").read_text())
    with Image.open(photo) as im:
        raw = np.array(im)
    upright_shape = [160, 96] if orientation == 6 else [96, 160]
    assert record["exif_orientation"] == orientation and record["stored_size"] == list(raw.shape[:2])
    assert record["size"] == upright_shape
    masks = [rle.decode(r["rle"]) for r in record["regions"]]
    assert all(list(m.shape) == upright_shape for m in masks)
    back = [to_stored_frame(m, record["exif_orientation"]) for m in masks]
    assert max((m == noisy).mean() for m in back) > 0.95


def test_query_mode_returns_one_region(photos, tmp_path):
    out = tmp_path / "out"
    assert main(["segment", str(photos["brick"]), "--tiny", "--query", "the rough bark", "--out", str(out)]) == 0
    record = json.loads((out / "brick.detecture.json").read_text())
    assert len(record["regions"]) == 1 and record["regime"]["query"] == "the rough bark"


def test_bad_image_is_reported_and_others_finish(photos, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out"
    code = main(["segment", str(bad), str(photos["brick"]), "--tiny", "--k", "2", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert "error:" in captured.err and "broken.jpg" in captured.err  # per-image errors on stderr
    assert "1 image(s) segmented, 1 failed" in captured.out
    assert (out / "brick.detecture.json").exists() and not (out / "broken.detecture.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--k", "9"], "1 to 6"),
    (["--k", "0"], "1 to 6"),
    (["--query", " "], "query is empty"),
    (["--head", "does/not/exist"], "head checkpoint not found"),
    (["--tiny", "--workers", "2"], "--workers applies to method 'classical' only"),
    (["--max-new-tokens", "0"], "error: --max-new-tokens must be a whole number of at least 1, got 0"),
])
def test_bad_arguments_give_one_error_line(photos, tmp_path, capsys, args, message):
    code = main(["segment", str(photos["brick"]), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("error:") and "Traceback" not in err


def test_real_loading_code_on_local_folders(tiny_model_dirs, photos, tmp_path, capsys):
    """--qwen/--sam3 take local folders through the same from_pretrained code users run with hub ids."""
    qwen_dir, sam3_dir = tiny_model_dirs
    out = tmp_path / "out"
    code = main(["segment", str(photos["brick"]), "--qwen", str(qwen_dir), "--sam3", str(sam3_dir),
                 "--grounding", "text", "--max-new-tokens", "8", "--out", str(out), "--device", "cpu"])
    assert code == 0 and (out / "brick.detecture.json").exists()


def test_head_for_another_qwen_width(tiny_model_dirs, photos, tmp_path, capsys):
    from detecture.bridge import DetectureHead, HeadConfig

    head = DetectureHead(HeadConfig(qwen_hidden_size=4096, sam_text_hidden_size=8, prompt_dim=8, pixel_dim=8,
                                    mask_hidden_size=8, qwen_model="Qwen/Qwen3-VL-8B-Instruct"))
    path = head.save_pretrained(tmp_path / "head8b")
    qwen_dir, sam3_dir = tiny_model_dirs
    code = main(["segment", str(photos["brick"]), "--qwen", str(qwen_dir), "--sam3", str(sam3_dir),
                 "--head", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "head8b" in err and "4096" in err and "has 64" in err


def test_a_head_runs_on_the_qwen_it_records_when_no_qwen_is_given(tiny_model_dirs, photos, tmp_path):
    """Without --qwen the head's own Qwen (its config's qwen_model) loads, not the default 8B one it may not fit."""
    from detecture.backbones.qwen import QwenVL
    from detecture.backbones.sam3 import Sam3Backbone
    from detecture.bridge import DetectureHead, HeadConfig

    qwen_dir, sam3_dir = tiny_model_dirs
    config = HeadConfig.for_backbones(QwenVL.tiny(), Sam3Backbone.tiny())
    config.qwen_model = str(qwen_dir)
    path = DetectureHead(config).save_pretrained(tmp_path / "head")
    out = tmp_path / "o"
    code = main(["segment", str(photos["brick"]), "--sam3", str(sam3_dir), "--head", str(path), "--device", "cpu",
                 "--max-new-tokens", "4", "--out", str(out)])
    record = json.loads((out / "brick.detecture.json").read_text())
    assert code == 0 and record["settings"]["qwen"] == str(qwen_dir)


def test_a_head_in_a_folder_named_in_latin1_is_one_error_line_naming_it(photos, tmp_path, capsys):
    """The settings record the head's path as image names are recorded (printable), so its bytes never make a
    record unwritable (a traceback at the first claim); the weights' reader cannot open such a path, which is then
    said on one line, and nothing is left in the output folder."""
    from detecture.backbones.qwen import QwenVL
    from detecture.backbones.sam3 import Sam3Backbone
    from detecture.bridge import DetectureHead, HeadConfig

    folder = tmp_path / os.fsdecode(b"t\xeate")
    path = DetectureHead(HeadConfig.for_backbones(QwenVL.tiny(), Sam3Backbone.tiny())).save_pretrained(folder)
    out = tmp_path / "o"
    assert main(["segment", str(photos["brick"]), "--tiny", "--head", str(path), "--k", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "t\\xeate" in err[0] and "not valid UTF-8" in err[0]
    assert not out.exists()  # refused with the cheap checks, before any claim


def test_a_head_trained_on_tiny_backbones_asks_for_tiny_before_loading(photos, tmp_path, capsys):
    from detecture.backbones.qwen import QwenVL
    from detecture.backbones.sam3 import Sam3Backbone
    from detecture.bridge import DetectureHead, HeadConfig

    path = DetectureHead(HeadConfig.for_backbones(QwenVL.tiny(), Sam3Backbone.tiny())).save_pretrained(tmp_path / "h")
    code = main(["segment", str(photos["brick"]), "--head", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "trained on tiny random backbones; add --tiny" in err[0]
    assert not (tmp_path / "o").exists()


def test_a_head_rewritten_in_place_redoes_the_images_it_segmented(tmp_path, capsys):
    """A re-run skips an image only if its output was made with the same head weights: new weights written over
    model.safetensors leave the folder's own time as it was, but not the recorded digest of its files. (A small
    image: what is redone, not what it shows, is checked.)"""
    import torch
    from skimage import data

    from detecture.backbones.qwen import QwenVL
    from detecture.backbones.sam3 import Sam3Backbone
    from detecture.bridge import DetectureHead, HeadConfig

    config = HeadConfig.for_backbones(QwenVL.tiny(), Sam3Backbone.tiny())
    heads = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        heads.append(DetectureHead(config).save_pretrained(tmp_path / f"head{seed}"))
    head, out, image = heads[0], tmp_path / "o", tmp_path / "brick.png"
    Image.fromarray(data.brick()[:64, :64]).save(image)
    argv = ["segment", str(image), "--tiny", "--head", str(head), "--k", "2", "--out", str(out)]
    assert main(argv) == 0
    assert main(argv) == 0
    assert "0 image(s) segmented, 0 failed, 1 already done" in capsys.readouterr().out
    folder_times = os.stat(head)
    (head / "model.safetensors").write_bytes((heads[1] / "model.safetensors").read_bytes())
    os.utime(head, ns=(folder_times.st_atime_ns, folder_times.st_mtime_ns))
    assert main(argv) == 0
    assert "1 image(s) segmented, 0 failed" in capsys.readouterr().out


def test_missing_model_folder_says_what_to_do(photos, tmp_path, capsys):
    code = main(["segment", str(photos["brick"]), "--qwen", str(tmp_path / "no-such-model"), "--out",
                 str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "no-such-model" in err and err.startswith("error:")


def test_help_explains_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = capsys.readouterr().out
    for option in ("--k", "--query", "--grounding", "--head", "--qwen", "--sam3", "--out", "--tiny"):
        assert option in text


def test_load_errors_fit_on_one_line(photos, tmp_path, capsys):
    main(["segment", str(photos["brick"]), "--qwen", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1


def test_an_image_given_twice_is_segmented_once(photos, tmp_path, capsys, caplog):
    """The same file named twice, through a folder and a pattern too, or through a symbolic link, is one image: a
    second output would only be a copy of the first under another number."""
    out = tmp_path / "o"
    image = photos["brick"]
    link = tmp_path / "sub" / "link.png"
    link.parent.mkdir()
    link.symlink_to(image)
    with caplog.at_level("WARNING"):
        assert main(["segment", str(image), str(tmp_path / "." / "brick.png"), str(tmp_path / "*.png"), str(link),
                     "--method", "classical", "--k", "2", "--workers", "1", "--out", str(out)]) == 0
    assert "1 image(s) segmented, 0 failed" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.json")) == ["brick.detecture.json"]
    warnings = [r.getMessage() for r in caplog.records if "already given" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("3 image path(s)")


def test_outputs_never_overwrite_inputs(photos, tmp_path):
    """`segment photo.png --out .` used to replace photo.png with the overlay; re-segmenting an output folder's own
    overlays into that folder must not overwrite them either."""
    folder = photos["brick"].parent
    original = photos["brick"].read_bytes()
    assert main(["segment", str(photos["brick"]), "--tiny", "--k", "2", "--out", str(folder)]) == 0
    assert photos["brick"].read_bytes() == original
    overlay = folder / "brick.detecture.png"
    overlay_bytes = overlay.read_bytes()
    assert main(["segment", str(overlay), "--tiny", "--k", "2", "--out", str(folder)]) == 0
    assert overlay.read_bytes() == overlay_bytes and (folder / "brick.detecture.detecture.json").exists()


def test_output_names_skip_inputs_and_each_other(tmp_path):
    from detecture.output import OutputFolder
    from detecture.utils.paths import InputSet

    photo, other = tmp_path / "photo.png", tmp_path / "sub" / "photo.jpg"
    taken = tmp_path / "photo.detecture.png"
    for path in (photo, other, taken):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
    claims = OutputFolder(tmp_path, InputSet([photo, other, taken]), {}).claim([photo, other], [0, 1])
    assert [claims.stems[i].name for i in (0, 1)] == ["photo_2.detecture", "photo_3.detecture"]


@pytest.mark.parametrize("case", ["missing", "folder", "unwritable_out", "out_is_file", "head_is_file",
                                  "bridge_without_head", "query_the_head_cannot_ask", "query_not_utf8"])
def test_cheap_checks_fail_before_any_model_loads(photos, tmp_path, capsys, monkeypatch, case):
    from detecture.pipeline import DetecturePipeline

    if case == "query_the_head_cannot_ask":  # a head under the published prompts, which have no query wording
        from detecture.bridge.contract import published_contract
        from detecture.bridge.head import DetectureHead, HeadConfig

        head = DetecturePipeline.tiny(with_head=False)
        config = HeadConfig.for_backbones(head.qwen, head.sam3, contract=published_contract())
        head = DetectureHead(config).save_pretrained(tmp_path / "published-head")

    def no_models(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(DetecturePipeline, "from_pretrained", classmethod(no_models))
    monkeypatch.setattr(DetecturePipeline, "tiny", classmethod(no_models))
    image, out, extra = str(photos["brick"]), tmp_path / "o", []
    if case == "missing":
        image = str(tmp_path / "nope.png")
    elif case == "folder":  # a folder is searched for images; one with none is an input error
        (tmp_path / "empty").mkdir()
        image = str(tmp_path / "empty")
    elif case == "unwritable_out":
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out = locked / "o"
    elif case == "out_is_file":
        out = photos["coffee"]
    elif case == "head_is_file":
        extra = ["--head", str(photos["coffee"])]
    elif case == "bridge_without_head":
        extra = ["--grounding", "bridge"]
    elif case == "query_the_head_cannot_ask":
        extra = ["--tiny", "--head", str(head), "--query", "the rough bark"]
    elif case == "query_not_utf8":  # a Latin-1 terminal's "café": Python keeps the byte \xe9 as a lone surrogate
        extra = ["--tiny", "--query", os.fsdecode(b"rough caf\xe9 wall")]
    if case == "unwritable_out" and os.access(tmp_path / "locked", os.W_OK):
        pytest.skip("running as a user who can write anywhere (root)")
    code = main(["segment", image, "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    if case == "query_not_utf8":
        assert "caf\\xe9" in err and "UTF-8" in err and not out.exists()


@pytest.mark.parametrize("shape", [(2000, 20), (4000, 3)])
def test_overlay_of_a_tall_narrow_image_stays_a_bounded_picture(tmp_path, shape):
    from detecture.visualize import save_overlay

    labels = np.zeros(shape, np.uint8)
    labels[shape[0] // 2:] = 1
    image = np.full((*shape, 3), 90, np.uint8)
    save_overlay(tmp_path / "tall.png", image, labels, ["a strip"])
    with Image.open(tmp_path / "tall.png") as overlay:  # was 1155 x 66000 px (gigabytes while drawn) for 20 x 2000
        assert overlay.height <= 2 * overlay.width <= 4000


@pytest.mark.parametrize("shape", [(8, 8000), (40, 4000)])
def test_overlay_of_a_wide_strip_shows_the_picture_on_many_rows(tmp_path, shape):
    """A strip far wider than high drawn true to shape would be under a pixel high in the overlay: the picture must
    take a visible band, and show both regions' colours there."""
    from detecture.visualize import region_color, save_overlay

    labels = np.zeros(shape, np.uint8)
    labels[:, : shape[1] // 2] = 1
    labels[:, shape[1] // 2:] = 2
    image = np.full((*shape, 3), 128, np.uint8)
    save_overlay(tmp_path / "wide.png", image, labels, ["left", "right"])
    with Image.open(tmp_path / "wide.png") as overlay:
        pixels = np.asarray(overlay.convert("RGB")).astype(int)
    panel = pixels[:, : pixels.shape[1] // 2]  # the image panel; the legend is on the right
    for k in (1, 2):
        blended = (128 + region_color(k).astype(float)) / 2  # the overlay's half-and-half blend of the grey and region k's colour
        rows = (np.abs(panel - blended).max(axis=2) <= 3).any(axis=1).sum()
        assert rows >= pixels.shape[1] / 20, (k, rows)  # a band at least a twentieth of the figure's width high


def test_a_panorama_just_within_the_aspect_limit_is_segmented(tmp_path, capsys):
    """72 x 14400 passes the up-front 200:1 check; shrunk to the pixel budget it must still be one Qwen takes."""
    strip = tmp_path / "panorama.png"
    Image.new("RGB", (14400, 72), (90, 90, 90)).save(strip)
    assert main(["segment", str(strip), "--tiny", "--k", "2", "--out", str(tmp_path / "out")]) == 0
    assert "1 image(s) segmented, 0 failed" in capsys.readouterr().out


def test_bad_files_are_reported_before_any_model_loads_and_the_run_goes_on(photos, tmp_path, capsys, monkeypatch):
    import detecture
    from bench_fixture import write_bomb_png
    from detecture.errors import InputError
    from detecture.pipeline import DetecturePipeline

    def no_models(*args, **kwargs):
        raise AssertionError("a model was loaded for images that were all bad")

    monkeypatch.setattr(DetecturePipeline, "tiny", classmethod(no_models))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    strip = tmp_path / "strip.png"  # 700 x 3: Qwen's image processor refuses more than 200:1 (a ValueError traceback)
    Image.new("RGB", (700, 3), (90, 90, 90)).save(strip)
    bomb = write_bomb_png(tmp_path / "bomb.png")
    out = tmp_path / "out"
    assert main(["segment", str(broken), str(strip), str(bomb), "--tiny", "--k", "2", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()[-3:]
    assert errors[0].startswith(f"error: {broken}: not a readable image")
    assert errors[1] == (f"error: {strip}: image is 700x3, one side more than 200 times the other, which the "
                         "detecture method's vision model refuses (--method classical accepts it)")
    assert errors[2].startswith(f"error: {bomb}: refused as a possible decompression bomb")
    assert "0 image(s) segmented, 3 failed" in captured.out
    with pytest.raises(InputError, match="image array: image is 600x2, one side more than 200 times"):
        detecture.segment(np.zeros((2, 600, 3), np.uint8), method="detecture", tiny=True, k=2)


@pytest.mark.parametrize("options", [
    ["--tiny", "--head", "h", "--device", "cuda:7", "--quantization", "4bit", "--grounding", "bridge"],
    ["--qwen", "Qwen/Qwen3-VL-2B-Instruct"],
    ["--max-new-tokens", "50"],
])
def test_classical_refuses_model_options_as_the_api_does(photos, tmp_path, capsys, options):
    """The service decides which options belong to which method; the CLI no longer drops them unread."""
    code = main(["segment", str(photos["brick"]), "--method", "classical", *options, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].endswith("to method 'detecture' only, not to 'classical'")
    assert not (tmp_path / "o").exists()


def test_dollar_signs_in_names_and_queries_are_drawn_as_written(tmp_path, capsys):
    """Matplotlib reads text between two ``$`` as mathtext; a file name or query is the user's words, and one that
    is no valid formula must not fail its image (nor, since the error escaped, the rest of the batch)."""
    rng = np.random.default_rng(0)
    names = ["price $\\frac{1}$.png", "cost $x_$ and $5.png", "plain.png"]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(tmp_path / name)
    out = tmp_path / "out"
    assert main(["segment", *(str(tmp_path / n) for n in names), "--method", "classical", "--workers", "1",
                 "--out", str(out)]) == 0
    assert "3 image(s) segmented, 0 failed" in capsys.readouterr().out
    assert all((out / f"{Path(n).stem}.detecture.png").is_file() for n in names)
    query = tmp_path / "query"
    assert main(["segment", str(tmp_path / "plain.png"), "--tiny", "--query", "the $\\frac{1}$ bark",
                 "--out", str(query)]) == 0
    assert (query / "plain.detecture.png").is_file()
