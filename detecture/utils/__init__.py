"""Small shared helpers: atomic writes, YAML reading, typed configs, input/output path checks, optional backends,
headless plotting, stage timing, COCO RLE."""
