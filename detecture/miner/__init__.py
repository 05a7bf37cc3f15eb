"""The Miner: turn a semantic-segmentation dataset into Detecture's multi-texture training set.

Pipeline per scene (a source image with its class-index label map):
``sources`` reads it, ``scoring`` rates the label map 0-100 from geometry alone, ``regions`` merges the texture
classes of a kept scene into 2-5 disjoint region masks, ``describers`` writes one ``Texture of ...`` phrase per
region for the original image and every Textured-ADE20K degree, and ``orchestrate`` writes everything resumably in the
unified metadata format (docs/ARCHITECTURE.md, Data), with ``split`` (train/val by scene), ``review`` (contact
sheet, summary) and ``hub`` (HuggingFace ``datasets`` export) on top.
"""
