"""Backbone loading policy: the <|seg|> token's warm start, and readable hub errors."""

import pytest
import torch

from detecture.backbones.loading import bitsandbytes_config, default_attn_implementation, load_from_hub
from detecture.backbones.tiny import tiny_qwen_model, tiny_qwen_tokenizer
from detecture.backbones.tokens import add_seg_token
from detecture.errors import ModelAccessError
from detecture.prompts import SEG_TOKEN


def test_seg_rows_start_as_im_end_rows_and_nothing_else_changes():
    tokenizer = tiny_qwen_tokenizer()
    model = tiny_qwen_model(tokenizer)
    before_in = model.get_input_embeddings().weight.clone()
    before_out = model.get_output_embeddings().weight.clone()
    seg = add_seg_token(model, tokenizer)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    after_in, after_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert tokenizer.convert_tokens_to_ids(SEG_TOKEN) == seg and seg >= before_in.shape[0] - 1
    assert torch.equal(after_in[seg], before_in[end]) and torch.equal(after_out[seg], before_out[end])
    assert torch.equal(after_in[: before_in.shape[0]][torch.arange(before_in.shape[0]) != seg],
                       before_in[torch.arange(before_in.shape[0]) != seg])
    assert tokenizer(f"a {SEG_TOKEN}", add_special_tokens=False)["input_ids"][-1] == seg  # one token, never split
    assert add_seg_token(model, tokenizer) == seg  # idempotent


def test_gated_and_missing_repos_say_what_to_do():
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError

    def gated():
        error = GatedRepoError.__new__(GatedRepoError)  # built without an HTTP response object
        Exception.__init__(error, "403 gated")
        raise error

    with pytest.raises(ModelAccessError, match="gated.*huggingface.co/facebook/sam3.*HF_TOKEN"):
        load_from_hub("SAM3 model", "facebook/sam3", gated)

    def offline():
        raise LocalEntryNotFoundError("offline")

    with pytest.raises(ModelAccessError, match="not in the local cache"):
        load_from_hub("Qwen3-VL model", "Qwen/Qwen3-VL-8B-Instruct", offline)


def test_a_failing_disk_while_loading_is_no_model_access_error(tmp_path):
    """A full disk while downloading stays an OSError (the run stops, exit 3, a re-run finishes it); a folder that
    holds no model is the model's problem, one ModelAccessError line."""
    import errno

    def disk_full():
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "blob"))

    with pytest.raises(OSError) as caught:
        load_from_hub("Qwen3-VL model", "Qwen/Qwen3-VL-8B-Instruct", disk_full)
    assert not isinstance(caught.value, ModelAccessError) and caught.value.errno == errno.ENOSPC

    def not_a_model():
        raise OSError(f"{tmp_path} does not appear to have a file named config.json")

    with pytest.raises(ModelAccessError, match="could not load Qwen3-VL model .*config.json"):
        load_from_hub("Qwen3-VL model", str(tmp_path), not_a_model)


def test_quantization_and_attention_defaults():
    assert bitsandbytes_config(None, torch.bfloat16) is None
    with pytest.raises(ModelAccessError, match="4bit"):
        bitsandbytes_config("3bit", torch.bfloat16)
    assert default_attn_implementation(torch.device("cpu")) == "sdpa"
    assert default_attn_implementation(torch.device("cpu"), "eager") == "eager"


@pytest.mark.parametrize("height, width", [(3, 600), (3, 3)])
def test_qwen_reads_an_image_three_pixels_tall_as_rows_not_channels(height, width):
    """An (H, W, 3) array with H == 3 is ambiguous to the image processor, which guessed channels-first: a 3 x 600
    strip reached Qwen as a tall image of other pixels. Qwen must see what it sees of the same image given as PIL."""
    import numpy as np
    from PIL import Image

    from detecture.backbones.qwen import QwenVL

    qwen = QwenVL.tiny()
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    seen = qwen._image_features([image])
    reference = qwen.image_processor(images=[Image.fromarray(image)], return_tensors="pt")
    assert torch.equal(seen["image_grid_thw"], reference["image_grid_thw"])
    assert torch.equal(seen["pixel_values"], reference["pixel_values"])


def test_a_model_loaded_from_a_relative_folder_is_recorded_by_its_absolute_path(tiny_model_dirs, monkeypatch):
    """A head records the backbones it was trained on and later loads them by that name: a relative folder would
    only be found again from the same working folder. A hub id is kept as given."""
    from detecture.backbones.loading import recorded_name
    from detecture.backbones.qwen import QwenVL
    from detecture.backbones.sam3 import Sam3Backbone

    qwen_dir, sam3_dir = tiny_model_dirs
    monkeypatch.chdir(qwen_dir.parent)
    assert QwenVL.from_pretrained(qwen_dir.name, device="cpu").name == str(qwen_dir.resolve())
    assert Sam3Backbone.from_pretrained(sam3_dir.name, device="cpu").name == str(sam3_dir.resolve())
    assert recorded_name("Qwen/Qwen3-VL-8B-Instruct") == "Qwen/Qwen3-VL-8B-Instruct"
