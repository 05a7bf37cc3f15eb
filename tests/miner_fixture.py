"""A small ADE20K-layout dataset and a Textured-ADE20K degree copy, built from ``skimage.data`` photos.

Scenes (128x96, label maps drawn here with real ADE20K class ids):

* ``ADE_train_clean2``  brick wall over grass, split by a straight line               -> should be kept, K = 2
* ``ADE_train_clean3``  wall | grass | sand bands plus a 1.6 % earth patch           -> kept, K = 4
* ``ADE_train_fragment`` grass / sky with a sub-1 % "earth" fragment and a chair       -> kept, fragment absorbed
* ``ADE_train_astronaut`` the astronaut photo labelled as a person, flag, sculpture... -> cluttered, not kept
* ``ADE_train_coffee``  the coffee photo: table, plate, cup (glass), food              -> cluttered, not kept
* ``ADE_train_badimage`` a clean scene whose JPEG is truncated                         -> rejected (image)
* ``ADE_train_badlabel`` garbage bytes as label PNG                                    -> rejected (label)
* ``ADE_train_badclass`` a label map with class id 200                                 -> rejected (label)
* ``ADE_train_nolabel`` an image without annotation                                    -> rejected (label)

Textured copy: ``<textured>/eta_0.3/images/training/`` (colour-jittered) and ``<textured>/degree_1/images/training/``
(textures swapped: brick <-> gravel), for every scene; ``degree_1``'s clean3 image has the wrong size (rejected).
:func:`build_flat` writes the same kind of variants in TextureSAM's flat release naming instead.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

H, W = 96, 128
WALL, SKY, TREE, GRASS, PERSON, EARTH, TABLE, CHAIR, SAND = 1, 3, 5, 10, 13, 14, 16, 20, 47
FOOD, PLATE, GLASS, FLAG, SCULPTURE, LAMP = 121, 143, 148, 150, 133, 37


def _texture(gray: np.ndarray, tint: tuple[float, float, float], offset: int = 0) -> np.ndarray:
    crop = gray[offset : offset + H, offset : offset + W].astype(np.float32)
    return np.clip(crop[..., None] * np.array(tint, dtype=np.float32), 0, 255).astype(np.uint8)


def textures() -> dict[str, np.ndarray]:
    return {
        "brick": _texture(data.brick(), (1.0, 0.7, 0.55)),
        "grass": _texture(data.grass(), (0.55, 1.0, 0.45)),
        "gravel": _texture(data.gravel(), (1.0, 0.95, 0.8)),
        "sky": np.broadcast_to(np.array([120, 170, 230], np.uint8), (H, W, 3)).copy(),
    }


def _compose(label: np.ndarray, by_class: dict[int, np.ndarray], base: np.ndarray | None = None) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8) if base is None else base.copy()
    for cls, tex in by_class.items():
        img[label == cls] = tex[label == cls]
    return img


def _scene(photo: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(photo).resize((W, H), Image.BILINEAR))


def scenes() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """scene id -> (RGB image, label map) for the valid scenes."""
    t = textures()
    out = {}
    lab = np.full((H, W), GRASS, np.uint8)
    lab[: H // 2] = WALL
    out["ADE_train_clean2"] = (_compose(lab, {WALL: t["brick"], GRASS: t["grass"]}), lab)

    lab = np.full((H, W), GRASS, np.uint8)
    lab[:, :40] = WALL
    lab[:, 88:] = SAND
    lab[70:80, 50:70] = EARTH  # 200 px = 1.6 %: a small but valid fourth texture
    out["ADE_train_clean3"] = (
        _compose(lab, {WALL: t["brick"], GRASS: t["grass"], SAND: t["gravel"], EARTH: t["brick"]}),
        lab,
    )

    lab = np.full((H, W), GRASS, np.uint8)
    lab[:40] = SKY
    lab[60:68, 20:28] = EARTH  # 64 px = 0.5 %: a fragment inside the grass
    lab[50:80, 90:110] = CHAIR
    out["ADE_train_fragment"] = (
        _compose(lab, {SKY: t["sky"], GRASS: t["grass"], EARTH: t["gravel"], CHAIR: t["brick"]}),
        lab,
    )

    astro = _scene(data.astronaut())
    lab = np.full((H, W), WALL, np.uint8)
    lab[20:, 20:90] = PERSON
    lab[0:25, 90:128] = FLAG
    lab[60:96, 95:128] = SCULPTURE
    lab[5:20, 5:20] = LAMP
    out["ADE_train_astronaut"] = (astro, lab)

    coffee = _scene(data.coffee())
    lab = np.full((H, W), TABLE, np.uint8)
    lab[:15] = WALL
    lab[20:85, 15:110] = PLATE
    lab[30:70, 35:85] = GLASS
    lab[75:90, 100:125] = FOOD
    out["ADE_train_coffee"] = (coffee, lab)
    return out


def degree_images(image: np.ndarray, label: np.ndarray) -> dict[str, np.ndarray]:
    """The Textured-ADE20K copies of one scene: a colour jitter and a texture swap."""
    jitter = np.clip(image.astype(np.int16)[..., ::-1] * 0.9 + 20, 0, 255).astype(np.uint8)
    swapped = image.copy()
    t = textures()
    for cls in np.unique(label):
        swapped[label == cls] = np.roll(t["gravel"] if cls % 2 else t["brick"], int(cls), axis=1)[label == cls]
    return {"eta_0.3": jitter, "degree_1": swapped}


def header_only_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` 8-bit grey pixels, with almost no data (a decompression bomb
    when the size is large: Pillow refuses it on opening, before decoding anything)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
                     + chunk(b"IEND", b""))
    return path


def build(root: Path, with_textured: bool = True) -> tuple[Path, Path | None]:
    """Write the ADE20K fixture under ``root/ADEChallengeData2016`` (and ``root/textured``); return both roots."""
    ade = root / "ADEChallengeData2016"
    images, annotations = ade / "images" / "training", ade / "annotations" / "training"
    images.mkdir(parents=True)
    annotations.mkdir(parents=True)
    textured = root / "textured" if with_textured else None
    valid = scenes()
    for sid, (img, lab) in valid.items():
        Image.fromarray(img).save(images / f"{sid}.jpg", quality=92)
        Image.fromarray(lab, mode="L").save(annotations / f"{sid}.png")
        if textured is not None:
            for degree, copy in degree_images(img, lab).items():
                folder = textured / degree / "images" / "training"
                folder.mkdir(parents=True, exist_ok=True)
                if degree == "degree_1" and sid == "ADE_train_clean3":
                    copy = copy[:, : W // 2]
                Image.fromarray(copy).save(folder / f"{sid}.jpg", quality=92)
    clean_img, clean_lab = valid["ADE_train_clean2"]
    good = (images / "ADE_train_clean2.jpg").read_bytes()
    (images / "ADE_train_badimage.jpg").write_bytes(good[: len(good) // 3])
    Image.fromarray(clean_lab, mode="L").save(annotations / "ADE_train_badimage.png")
    Image.fromarray(clean_img).save(images / "ADE_train_badlabel.jpg")
    (annotations / "ADE_train_badlabel.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    bad = clean_lab.copy()
    bad[0, 0] = 200
    Image.fromarray(clean_img).save(images / "ADE_train_badclass.jpg")
    Image.fromarray(bad, mode="L").save(annotations / "ADE_train_badclass.png")
    Image.fromarray(clean_img).save(images / "ADE_train_nolabel.jpg")
    return ade, textured


@dataclass
class FlatRelease:
    """Two flat Textured-ADE20K folders named as TextureSAM releases them, and what a correct reader finds there.

    ``variants`` (scene -> degree labels) and ``rejected`` (file name -> kind) are written down while the files
    are made, independently of the code under test.
    """

    release: Path  # ADE20K_0.3: ..._textured_degree0_1.jpg, .json beside each image, plain copies
    full: Path  # ADE20K_textured_images, flattened: ..._textured_degree0.1.jpg ... 1.0.jpg
    mapping: Path  # {file name: {"base_ade20k_id", "degree"}} for a file whose name says neither
    variants: dict[str, set[str]] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    json_files: int = 0


COPY_ONLY = "ADE_train_copyonly"  # annotated in ADE20K, its image only as a copy inside ADE20K_0.3
MAPPED_FILE = "texture_mix_0005.jpg"


def build_flat(root: Path, ade: Path) -> FlatRelease:
    """Write the flat folders under ``root`` for the ADE20K fixture ``ade`` (from ``build(..., with_textured=False)``).

    ADE20K_0.3 holds degrees 0_1 and 0_3 of four scenes, each image with a SAM-format ``.json`` beside it and a
    plain copy of the scene image; a scene without annotation (nolabel, whose variant the miner rejects with the
    scene); a copy-only scene (annotation in ADE20K, image only here); an image + variant of a scene that has no
    annotation anywhere (ghost); an orphan variant; a name with an unreadable strength. ADE20K_textured_images
    repeats degrees 0.1 and 0.3 of three scenes (duplicates: the first folder wins) and adds 1.0.
    """
    valid = scenes()
    out = FlatRelease(root / "ADE20K_0.3", root / "ADE20K_textured_images", root / "image_mapping.json")
    out.release.mkdir(parents=True)
    out.full.mkdir(parents=True)

    def save(folder: Path, name: str, image: np.ndarray, with_json: bool = False) -> None:
        Image.fromarray(image).save(folder / name, quality=92)
        if with_json:
            (folder / name).with_suffix(".json").write_text('{"annotations": []}')
            out.json_files += 1

    def variant(sid: str, strength: float, flip: bool = False) -> np.ndarray:
        img, lab = valid[sid]
        jitter, swapped = degree_images(img, lab).values()
        return swapped if flip else np.clip(jitter.astype(np.int16) + int(40 * strength), 0, 255).astype(np.uint8)

    release_scenes = ["ADE_train_clean2", "ADE_train_clean3", "ADE_train_fragment", "ADE_train_astronaut"]
    for sid in release_scenes:
        save(out.release, f"{sid}.jpg", valid[sid][0], with_json=True)
        for spec, label in (("0_1", "0.1"), ("0_3", "0.3")):
            save(out.release, f"{sid}_textured_degree{spec}.jpg", variant(sid, float(label)), with_json=True)
            out.variants.setdefault(sid, set()).add(label)
    for sid in release_scenes[:3]:
        for spec in ("0.1", "0.3"):
            save(out.full, f"{sid}_textured_degree{spec}.jpg", variant(sid, float(spec)))
            out.rejected[f"{sid}_textured_degree{spec}.jpg"] = "duplicate"
        save(out.full, f"{sid}_textured_degree1.0.jpg", variant(sid, 1.0, flip=True))
        out.variants[sid].add("1.0")

    clean_img, clean_lab = valid["ADE_train_clean2"]
    Image.fromarray(clean_lab, mode="L").save(ade / "annotations" / "training" / f"{COPY_ONLY}.png")
    save(out.release, f"{COPY_ONLY}.jpg", clean_img, with_json=True)
    save(out.release, f"{COPY_ONLY}_textured_degree0_3.jpg", variant("ADE_train_clean2", 0.3), with_json=True)
    out.variants[COPY_ONLY] = {"0.3"}
    save(out.release, "ADE_train_nolabel_textured_degree0_3.jpg", clean_img)
    out.variants["ADE_train_nolabel"] = {"0.3"}
    for name, kind in (("ADE_train_ghost.jpg", "no_annotation"), ("ADE_train_ghost_textured_degree0_1.jpg",
                        "no_annotation"), ("ADE_train_99999999_textured_degree0_1.jpg", "no_scene"),
                       ("ADE_train_clean2_textured_degree_high.jpg", "unparsable_name")):
        save(out.release, name, clean_img)
        out.rejected[name] = kind
    save(out.full, MAPPED_FILE, variant("ADE_train_clean2", 0.5))  # unparsable unless the mapping names it
    out.rejected[MAPPED_FILE] = "unparsable_name"
    out.mapping.write_text(json.dumps({
        MAPPED_FILE: {"base_ade20k_id": "ADE_train_clean2", "degree": 0.5},
        "ADE_train_00000001_textured_degree0.5.jpg": {"base_ade20k_id": "ADE_train_00000001", "degree": 0.5},
    }))
    return out
