"""``detecture demo``: a local Gradio web app over the same segmenters as ``detecture segment``.

``engine`` holds the loaded models and does the work (no Gradio inside, so it is testable on its own), ``uploads``
reads uploads within bounded memory, ``examples`` builds the bundled texture mosaics, ``app`` lays out the page.
"""
