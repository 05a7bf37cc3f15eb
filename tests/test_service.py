"""The one segmentation service: the CLI, the Python API and the demo give identical results for the same request,
and the request's rules (K, query, options per method) are decided once, before anything loads."""

import json

import numpy as np
import pytest
from PIL import Image

import detecture
from detecture.classical.describe import EMPTY_REGION
from detecture.cli import main
from detecture.errors import InputError
from detecture.prompts import Regime, RegimeKind
from detecture.service import SegmentRequest
from detecture.utils import rle


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    """A 96 x 128 two-texture mosaic (brick | grass) saved as PNG."""
    from skimage import data

    image = np.concatenate([np.stack([data.brick()[:96, :64]] * 3, -1), data.grass()[:96, :64, None].repeat(3, -1)],
                           axis=1).astype(np.uint8)
    path = tmp_path_factory.mktemp("service") / "mosaic.png"
    Image.fromarray(image).save(path)
    return path


def _cli(path, out, *options):
    assert main(["segment", str(path), "--out", str(out), *options]) == 0
    record = json.loads((out / f"{path.stem}.detecture.json").read_text())
    return record


def _masks(record):
    return np.stack([rle.decode(region["rle"]) for region in record["regions"]])


def _demo(path, method, k):
    from detecture.demo.engine import CLASSICAL, DemoEngine

    engine = DemoEngine.create(tiny=method != CLASSICAL)
    try:
        response = engine.run(path, method, k=k)
        return json.loads(open(response.files[0]).read())
    finally:
        engine.close()


@pytest.mark.parametrize("method", ["classical", "detecture"])
def test_cli_api_and_demo_agree(mosaic, tmp_path, method):
    pytest.importorskip("gradio", reason="the demo extra is not installed")
    from detecture.demo.engine import BRIDGE, CLASSICAL

    if method == "classical":
        cli = _cli(mosaic, tmp_path / "cli", "--method", "classical", "--k", "2", "--workers", "1")
        api = detecture.segment(mosaic, "classical", k=2)
        demo = _demo(mosaic, CLASSICAL, "2")
    else:  # tiny random backbones: the same request must reach the same pipeline the same way
        cli = _cli(mosaic, tmp_path / "cli", "--tiny", "--k", "2")
        api = detecture.segment(mosaic, "detecture", k=2, tiny=True)
        demo = _demo(mosaic, BRIDGE, "2")  # a tiny pipeline carries a head: auto grounding is the bridge
    assert api.num_regions == len(cli["regions"]) == len(demo["regions"]) == 2
    assert [r["description"] for r in cli["regions"]] == api.descriptions == [r["description"] for r in
                                                                               demo["regions"]]
    assert cli["grounding"] == api.meta["grounding"] == demo["grounding"]
    assert np.array_equal(_masks(cli), api.masks) and np.array_equal(_masks(demo), api.masks)


def test_an_image_of_fewer_pixels_than_k_gets_k_regions():
    """"Exactly N" holds on a 2 x 2 image asked for 5: the region it has no pixels for is kept and named empty."""
    image = np.random.default_rng(0).integers(0, 256, (2, 2, 3), dtype=np.uint8)
    result = detecture.segment(image, k=5)
    assert result.num_regions == 5 and len(result.descriptions) == 5
    assert result.descriptions[-1] == EMPTY_REGION


def test_request_decides_k_and_query_once():
    assert SegmentRequest("classical").regime == Regime.autonomous()
    for auto in ("auto", " Auto ", "autonomous"):  # every spelling of an autonomous k goes with a query
        assert SegmentRequest("detecture", k=auto, query="bark").regime.kind is RegimeKind.QUERY
    assert SegmentRequest("classical", k="auto").regime.exact_k is None
    assert SegmentRequest("classical", k="3").regime.exact_k == SegmentRequest("classical", k=3).regime.exact_k == 3
    query = SegmentRequest("detecture", k="auto", query="  the   rough bark ").regime
    assert query.kind is RegimeKind.QUERY and query.text == "the rough bark" and query.exact_k is None
    assert query.kind == "query"  # the kind is its plain word in JSON and prompt sets


@pytest.mark.parametrize("options, message", [
    (dict(method="classical", query="bark"), "query needs the detecture method"),
    (dict(method="classical", head="h"), "^head applies to method 'detecture' only, not to 'classical'$"),
    (dict(method="classical", grounding="bridge"), "^grounding applies to method 'detecture' only"),
    (dict(method="detecture", classical_params={}), "^classical_params applies to method 'classical' only"),
    (dict(method="detecture", tiny=True, qwen="q", max_new_tokens=5),
     "^qwen, max_new_tokens apply to the real backbones only; tiny=True builds tiny random ones instead$"),
    (dict(method="detecture", k=2, query="bark"), "either k or query"),
    (dict(method="detecture", k=7), "from 1 to 6"),
    (dict(method="detecture", max_new_tokens=0), "^max_new_tokens must be a whole number of at least 1, got 0$"),
    (dict(method="detecture", max_new_tokens=True), "^max_new_tokens must be a whole number of at least 1, got True$"),
    (dict(method="sam", k=2), "unknown method"),
    (dict(method="detecture", grounding="pixels"), "grounding must be one of"),
    (dict(method="detecture", query="the <|image_pad|> bark"), "query holds '<\\|image_pad\\|>'"),
])
def test_bad_requests_are_refused_before_loading(options, message):
    with pytest.raises(InputError, match=message):
        SegmentRequest(**options)


def test_api_refuses_bridge_grounding_without_a_head_before_loading(mosaic, monkeypatch):
    from detecture.pipeline import DetecturePipeline

    def no_models(*args, **kwargs):
        raise AssertionError("models were loaded for a request that cannot run")

    monkeypatch.setattr(DetecturePipeline, "from_pretrained", classmethod(no_models))
    with pytest.raises(InputError, match="bridge needs a trained head"):
        detecture.segment(mosaic, "detecture", grounding="bridge")


def test_api_names_an_unknown_option(mosaic):
    with pytest.raises(InputError, match="unknown option.*qwn"):
        detecture.segment(mosaic, "detecture", qwn="Qwen/Qwen3-VL-2B-Instruct")


@pytest.mark.parametrize("seed", ["x", 1.5, -1, True])
def test_a_seed_that_is_no_whole_number_is_one_input_error(seed):
    with pytest.raises(InputError, match="seed must be a whole number"):  # "x" was a TypeError deep in numpy
        detecture.segment(np.zeros((8, 8, 3), np.uint8), k=2, seed=seed)


def test_a_head_rewritten_in_place_is_loaded_again(mosaic, tmp_path):
    """Pipelines are kept per set of options; retraining into the same head folder must not keep the old weights,
    nor the old pipeline beside the new one (two 8B models in memory)."""
    import gc
    import weakref

    from detecture.pipeline import DetecturePipeline
    from detecture.service import load_pipeline, segment

    head = tmp_path / "head"
    request = SegmentRequest("detecture", tiny=True, head=head)
    DetecturePipeline.tiny(seed=1).head.save_pretrained(head)
    first = detecture.segment(mosaic, "detecture", tiny=True, head=head).region_logits
    old = weakref.ref(load_pipeline(request))
    DetecturePipeline.tiny(seed=2).head.save_pretrained(head)
    second = detecture.segment(mosaic, "detecture", tiny=True, head=head).region_logits
    fresh = segment([np.asarray(Image.open(mosaic).convert("RGB"))], request, DetecturePipeline.tiny(head=head))[0]
    assert not np.array_equal(first, second) and np.array_equal(second, fresh.region_logits)
    gc.collect()
    assert old() is None


def test_an_explicit_k_beyond_the_heads_slots_is_refused_before_loading(tmp_path):
    from detecture.backbones.qwen import QwenVL
    from detecture.backbones.sam3 import Sam3Backbone
    from detecture.bridge import DetectureHead, HeadConfig
    from detecture.service import check_before_loading

    qwen, sam = QwenVL.tiny(), Sam3Backbone.tiny()
    head = DetectureHead(HeadConfig.for_backbones(qwen, sam, num_slots=3)).save_pretrained(tmp_path / "head")
    with pytest.raises(InputError, match=r"head.*room for 2 regions.*fewer than the 3 asked for; ask for at most 2 "
                                         r"or use text grounding$"):  # words an API call's k as a --k alike
        check_before_loading(SegmentRequest("detecture", k=3, head=head, tiny=True))
    check_before_loading(SegmentRequest("detecture", k=2, head=head, tiny=True))
    check_before_loading(SegmentRequest("detecture", k=3, head=head, grounding="text", tiny=True))  # no slots in text grounding
