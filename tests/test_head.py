"""Head checkpoints: safetensors + JSON, identical outputs after reload, clear errors on mismatch."""

import json

import pytest
import torch

from detecture.bridge import DetectureHead, HeadConfig
from detecture.errors import CheckpointError


def _head(hidden=64):
    torch.manual_seed(0)
    return DetectureHead(HeadConfig(qwen_hidden_size=hidden, sam_text_hidden_size=48, prompt_dim=32, pixel_dim=32,
                                    mask_hidden_size=32)).eval()


def test_save_load_gives_identical_outputs(tmp_path):
    head = _head()
    projection = torch.nn.Linear(48, 32)
    states = [torch.randn(3, 64), torch.randn(1, 64)]
    pixels = torch.randn(6, 32, 8, 8)

    def outputs(h):
        slots, live = h.slot_states(states)
        prompts = h.prompts(slots[live], projection)
        return h.mask_head(prompts, pixels)

    path = head.save_pretrained(tmp_path / "head")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = DetectureHead.from_pretrained(path, qwen_hidden_size=64).eval()
    torch.testing.assert_close(outputs(loaded), outputs(head), rtol=0, atol=0)


def test_slots_are_dustbin_then_seg_then_padding():
    head = _head()
    states = [torch.randn(2, 64)]
    slots, live = head.slot_states(states)
    assert slots.shape == (1, 7, 64) and live.tolist() == [[True, True, True, False, False, False, False]]
    assert torch.equal(slots[0, 0], head.dustbin.detach()) and torch.equal(slots[0, 1:3], states[0])
    with pytest.raises(ValueError, match="7 regions"):
        head.slot_states([torch.randn(7, 64)])


def test_overwriting_a_checkpoint_is_atomic(tmp_path):
    path = _head().save_pretrained(tmp_path / "head")
    _head(hidden=32).save_pretrained(path)
    assert DetectureHead.from_pretrained(path).config.qwen_hidden_size == 32
    assert [p.name for p in tmp_path.iterdir()] == ["head"]  # no temporary folders left behind


def test_errors_name_the_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        DetectureHead.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a head checkpoint"):
        DetectureHead.from_pretrained(tmp_path / "empty")
    path = _head(hidden=4096 // 64).save_pretrained(tmp_path / "head")
    with pytest.raises(CheckpointError, match="hidden size 64.*has 2048"):
        DetectureHead.from_pretrained(path, qwen_hidden_size=2048)
    (path / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="malformed"):
        DetectureHead.from_pretrained(path)


def test_weights_that_do_not_fit_the_config(tmp_path):
    path = _head().save_pretrained(tmp_path / "head")
    config = json.loads((path / "config.json").read_text())
    config["qwen_hidden_size"] = 128
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match"):
        DetectureHead.from_pretrained(path)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        ({"prompt_dim": "32"}, "prompt_dim: expected an integer, got '32'"),  # JSON has real numbers
        ({"num_slots": -1}, "num_slots: expected at least 2, got -1"),
        ({"pixel_dim": 0}, "pixel_dim: expected at least 1, got 0"),
        ({"bridge_dropout": 1.0}, "bridge_dropout: expected less than 1, got 1.0"),
        ({"pixel_dim": None}, "missing key pixel_dim"),  # a default would blame the weights instead
        ({"lr_scale": 3}, "lr_scale: unknown key (known: qwen_hidden_size, "),
    ],
)
def test_bad_config_values_are_one_line_naming_file_and_key(tmp_path, edit, problem):
    """Checked by read_head_config, which commands call before any model loads."""
    from detecture.bridge.head import read_head_config

    path = _head().save_pretrained(tmp_path / "head")
    config = json.loads((path / "config.json").read_text())
    config.update(edit)
    config = {k: v for k, v in config.items() if v is not None}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as info:
        read_head_config(path)
    assert str(info.value).startswith(f"{path / 'config.json'}: {problem}")


def test_corrupt_or_mismatched_weights_are_found_from_the_header(tmp_path):
    """No tensor is loaded: a cut file is called corrupt, a missing or reshaped tensor is named."""
    from safetensors.torch import load_file, save_file

    from detecture.bridge.head import read_head_config

    path = _head().save_pretrained(tmp_path / "head")
    weights = path / "model.safetensors"
    tensors = load_file(weights)
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt safetensors file"):
        read_head_config(path)
    del tensors["dustbin"]
    save_file(tensors, weights)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: weights do not match config\.json: missing dustbin$"):
        read_head_config(path)
    tensors["dustbin"] = torch.zeros(65)
    save_file(tensors, weights)
    with pytest.raises(CheckpointError, match=r"dustbin has shape \(65,\), config\.json implies \(64,\)"):
        read_head_config(path)


@pytest.mark.parametrize("how", ["chmod", "refused_open"])
@pytest.mark.parametrize("weights", ["model.safetensors", "adapter/adapter_model.safetensors"])
def test_an_unreadable_weights_file_is_an_environment_fault_not_a_corrupt_file(tmp_path, monkeypatch, how, weights):
    """Permission denied is the system's answer, raised as such (the CLI's one line, exit 3, the same as for the
    head's config.json); it was reported as "corrupt safetensors file (No such file or directory)"."""
    import builtins
    import errno
    import os

    from safetensors.torch import save_file

    from detecture.bridge.head import read_head_config

    source = tmp_path / "adapter"
    source.mkdir()
    (source / "adapter_config.json").write_text("{}")
    save_file({"lora_A": torch.zeros(8, 4)}, source / "adapter_model.safetensors")
    path = _head().save_pretrained(tmp_path / "head", adapter_dir=source)
    locked = path / weights
    if how == "chmod":
        os.chmod(locked, 0)
        if os.access(locked, os.R_OK):
            pytest.skip("running as a user who can read anything (root)")
    else:
        real_open = builtins.open

        def refusing_open(file, *args, **kwargs):
            if os.fspath(file) == str(locked):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(locked))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refusing_open)
    with pytest.raises(PermissionError) as raised:
        read_head_config(path)
    assert raised.value.filename == str(locked)


@pytest.mark.parametrize("hidden", [2048, 2560, 4096])
def test_published_qwen_widths_build(hidden):
    head = DetectureHead(HeadConfig(qwen_hidden_size=hidden))
    bridge_params = sum(p.numel() for p in head.bridge.parameters())
    assert bridge_params == hidden * 1024 + 1024 + 2 * 1024
    assert head.bridge(torch.randn(2, hidden)).shape == (2, 1024)


def test_fp32_head_beside_bf16_backbone_outputs():
    head = _head()
    prompts = torch.randn(2, 32, dtype=torch.bfloat16)
    pixels = torch.randn(2, 32, 4, 4, dtype=torch.bfloat16)
    assert head.mask_head(prompts, pixels).dtype == torch.float32


def test_a_corrupt_adapter_in_a_head_folder_is_named_before_qwen_loads(tmp_path):
    """Without this check PEFT or Qwen's loader raised an AttributeError or a SafetensorError traceback."""
    from safetensors.torch import save_file

    from detecture.bridge.head import read_head_config

    source = tmp_path / "adapter"
    source.mkdir()
    (source / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
    save_file({"lora_A": torch.zeros(8, 4)}, source / "adapter_model.safetensors")
    path = _head().save_pretrained(tmp_path / "head", adapter_dir=source)
    read_head_config(path)
    adapter = path / "adapter"
    (adapter / "adapter_config.json").write_text("[]")
    with pytest.raises(CheckpointError, match=r"adapter_config\.json: expected a mapping at the top level, got list"):
        read_head_config(path)
    (adapter / "adapter_config.json").write_text("{}")
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"adapter_model\.safetensors: corrupt safetensors file"):
        read_head_config(path)
    weights.unlink()
    with pytest.raises(CheckpointError, match="not a PEFT adapter folder"):
        read_head_config(path)


def test_a_head_left_aside_by_an_interrupted_rewrite_is_named_in_the_error(tmp_path):
    """A kill between atomic_dir's two renames leaves the complete old head only under its moved-aside name: the
    error must say where it is instead of calling the head missing."""
    from detecture.backbones.qwen import QwenVL
    from detecture.backbones.sam3 import Sam3Backbone
    from detecture.bridge.head import read_head_config
    from detecture.utils.atomic import moved_aside

    path = DetectureHead(HeadConfig.for_backbones(QwenVL.tiny(), Sam3Backbone.tiny())).save_pretrained(tmp_path / "h")
    path.rename(moved_aside(path))
    with pytest.raises(CheckpointError, match=rf"head checkpoint not found, but .* is at {moved_aside(path)} "):
        read_head_config(path)


def test_a_head_records_the_quantization_of_the_qwen_it_was_trained_on(tmp_path, tiny_model_dirs, caplog):
    """A QLoRA head's Bridge was fitted to a 4-bit Qwen's hidden states: the head says so, and loading it on a
    full-precision Qwen warns and names the option that runs it as trained; a head trained in full precision, or one
    saved before the field existed, loads without a word."""
    from detecture.backbones.qwen import QwenVL
    from detecture.backbones.sam3 import Sam3Backbone
    from detecture.bridge.head import read_head_config
    from detecture.pipeline import DetecturePipeline

    qwen_dir, sam3_dir = tiny_model_dirs
    qwen, sam = QwenVL.from_pretrained(qwen_dir, device="cpu"), Sam3Backbone.tiny()
    assert qwen.quantization is None
    qwen.quantization = "4bit"  # as QwenVL.from_pretrained(..., quantization="4bit") records it (needs a GPU)
    qlora = DetectureHead(HeadConfig.for_backbones(qwen, sam)).save_pretrained(tmp_path / "qlora")
    assert read_head_config(qlora).qwen_quantization == "4bit"

    with caplog.at_level("WARNING", logger="detecture.pipeline"):
        DetecturePipeline.from_pretrained(qwen_dir, sam3_dir, head=qlora, device="cpu")
    assert "trained on a 4bit Qwen" in caplog.text and "--quantization 4bit" in caplog.text

    config = json.loads((qlora / "config.json").read_text())
    del config["qwen_quantization"]  # a head saved before heads recorded it
    (qlora / "config.json").write_text(json.dumps(config))
    assert read_head_config(qlora).qwen_quantization is None
    caplog.clear()
    with caplog.at_level("WARNING", logger="detecture.pipeline"):
        DetecturePipeline.from_pretrained(qwen_dir, sam3_dir, head=qlora, device="cpu")
    assert "Qwen" not in caplog.text
