"""Small shared helpers: atomic writes, YAML reading, headless plotting, stage timing, COCO RLE."""
