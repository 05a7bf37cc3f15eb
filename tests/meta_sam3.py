"""Meta's own SAM3 (PyPI ``sam3``) at reduced size, built under the CI's pinned CPU torch.

``sam3`` 0.1.4 cannot be installed with its dependencies here: they pull ``torchvision``, whose index wheels need
another torch. CI therefore installs ``sam3`` and ``timm`` with ``--no-deps`` (.ci/run) and this module imports the
image-path modules directly:

* ``sam3/__init__.py`` imports the whole video/tracker stack (``triton`` kernels, ``torchvision`` ops), none of which
  the image path runs, so the package is registered without executing its ``__init__`` and only the modules needed
  are imported;
* ``timm`` (for the ViT's ``Mlp``/``DropPath``) imports ``torchvision`` at module level; when ``torchvision`` cannot
  be imported, a stand-in is registered whose every symbol is a class that raises when called or instantiated, so
  anything that actually needed ``torchvision`` fails loudly instead of computing something else.

The reduced model mirrors ``sam3.model_builder``'s construction (same classes, same flags) at the widths of
:func:`detecture.backbones.tiny.tiny_sam3_config`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

import torch.nn as nn


class _Unavailable(type):
    """Metaclass of the stand-in symbols: attribute access yields more stand-ins; calling one raises."""

    def __getattr__(cls, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _standin(f"{cls.__qualname__}.{attr}")

    def __call__(cls, *args, **kwargs):
        raise RuntimeError(f"{cls.__qualname__} is a stand-in: torchvision is not installed in this environment")


def _standin(name: str) -> type:
    return _Unavailable(name.rsplit(".", 1)[-1], (), {"__qualname__": name})


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def getattr_(attr: str, _module=spec.name):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return _standin(f"{_module}.{attr}")

        module.__getattr__ = getattr_
        return module

    def exec_module(self, module) -> None:
        pass


def import_sam3_image_modules() -> types.SimpleNamespace:
    """Meta's image-path classes; raises ImportError when ``sam3`` (or ``timm``) is not installed."""
    spec = importlib.util.find_spec("sam3")
    if spec is None or importlib.util.find_spec("timm") is None:
        raise ImportError("Meta's sam3 (and timm) are not installed: pip install --no-deps sam3==0.1.4 timm")
    standin = _TorchvisionStandIn() if importlib.util.find_spec("torchvision") is None else None
    if standin is not None:
        sys.meta_path.append(standin)
    try:
        if "sam3" not in sys.modules:
            package = importlib.util.module_from_spec(spec)  # registered, its __init__ (video stack) not executed
            sys.modules["sam3"] = package
        mods = {name: importlib.import_module(f"sam3.model.{name}") for name in
                ("vitdet", "necks", "position_encoding", "vl_combiner", "text_encoder_ve", "encoder",
                 "maskformer_segmentation", "model_misc")}
    finally:
        if standin is not None:  # only the modules imported above keep the stand-ins; `import torchvision` fails again
            sys.meta_path.remove(standin)
            for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
                del sys.modules[name]
    return types.SimpleNamespace(**mods)


class MetaSam3ImagePath(nn.Module):
    """The parts of Meta's ``Sam3Image`` the published code runs, under the same attribute names (so the state dict
    has the checkpoint's key names): ``backbone``, ``transformer.encoder``, ``segmentation_head``."""

    def __init__(self, backbone: nn.Module, encoder: nn.Module, segmentation_head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.transformer = nn.Module()
        self.transformer.encoder = encoder
        self.segmentation_head = segmentation_head
        self.num_feature_levels = 1


def reduced_config(text_vocab_size: int = 400):
    """:func:`~detecture.backbones.tiny.tiny_sam3_config` with the two text-encoder ratios Meta's classes fix (MLP
    4x wide, pooled projection 512): the text encoder is not on the compared path, but its weights convert too."""
    from detecture.backbones.tiny import tiny_sam3_config

    config = tiny_sam3_config(text_vocab_size)
    config.text_config.intermediate_size = 4 * config.text_config.hidden_size
    config.text_config.projection_dim = 512
    return config


def build_reduced_meta_sam3(config, seed: int = 0) -> MetaSam3ImagePath:
    """Meta's classes with ``sam3.model_builder``'s flags at the sizes of a (tiny) ``Sam3Config``; random weights."""
    import torch

    m = import_sam3_image_modules()
    torch.manual_seed(seed)
    vit_cfg = config.vision_config.backbone_config
    d = config.detr_encoder_config.hidden_size
    vit = m.vitdet.ViT(
        img_size=vit_cfg.image_size, pretrain_img_size=vit_cfg.pretrain_image_size, patch_size=vit_cfg.patch_size,
        embed_dim=vit_cfg.hidden_size, depth=vit_cfg.num_hidden_layers, num_heads=vit_cfg.num_attention_heads,
        mlp_ratio=vit_cfg.intermediate_size / vit_cfg.hidden_size, norm_layer="LayerNorm", drop_path_rate=0.0,
        qkv_bias=True, use_abs_pos=True, tile_abs_pos=True, global_att_blocks=tuple(vit_cfg.global_attn_indexes),
        rel_pos_blocks=(), use_rope=True, use_interp_rope=True, window_size=vit_cfg.window_size,
        pretrain_use_cls_token=True, retain_cls_token=False, ln_pre=True, ln_post=False,
        return_interm_layers=False, bias_patch_embed=False, use_act_checkpoint=False,
    )
    position = m.position_encoding.PositionEmbeddingSine(num_pos_feats=d, normalize=True, scale=None,
                                                         temperature=10000)
    neck = m.necks.Sam3DualViTDetNeck(position_encoding=position, d_model=d, scale_factors=[4.0, 2.0, 1.0, 0.5],
                                      trunk=vit, add_sam2_neck=False)
    text_cfg = config.text_config
    text = m.text_encoder_ve.VETextEncoder(
        d_model=d, tokenizer=None, width=text_cfg.hidden_size, heads=text_cfg.num_attention_heads,
        layers=text_cfg.num_hidden_layers, vocab_size=text_cfg.vocab_size, use_act_checkpoint=False,
    )
    backbone = m.vl_combiner.SAM3VLBackbone(visual=neck, text=text, scalp=1)
    enc_cfg = config.detr_encoder_config
    attention = m.model_misc.MultiheadAttentionWrapper
    layer = m.encoder.TransformerEncoderLayer(
        activation="relu", d_model=d, dim_feedforward=enc_cfg.intermediate_size, dropout=0.1, pos_enc_at_attn=True,
        pos_enc_at_cross_attn_keys=False, pos_enc_at_cross_attn_queries=False, pre_norm=True,
        self_attention=attention(num_heads=enc_cfg.num_attention_heads, dropout=0.1, embed_dim=d, batch_first=True),
        cross_attention=attention(num_heads=enc_cfg.num_attention_heads, dropout=0.1, embed_dim=d,
                                  batch_first=True),
    )
    encoder = m.encoder.TransformerEncoderFusion(
        layer=layer, num_layers=enc_cfg.num_layers, d_model=d, num_feature_levels=1, frozen=False,
        use_act_checkpoint=False, add_pooled_text_to_img_feat=False, pool_text_with_mask=True,
    )
    dec_cfg = config.mask_decoder_config
    head = m.maskformer_segmentation.UniversalSegmentationHead(
        hidden_dim=d, upsampling_stages=dec_cfg.num_upsampling_stages, aux_masks=False, presence_head=False,
        dot_product_scorer=None, act_ckpt=False,
        cross_attend_prompt=attention(num_heads=dec_cfg.num_attention_heads, dropout=0, embed_dim=d),
        pixel_decoder=m.maskformer_segmentation.PixelDecoder(
            num_upsampling_stages=dec_cfg.num_upsampling_stages, interpolation_mode="nearest", hidden_dim=d),
    )
    model = MetaSam3ImagePath(backbone, encoder, head).eval()
    with torch.no_grad():  # Meta's init leaves norms at one and some biases at zero: randomise all for a real check
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model
