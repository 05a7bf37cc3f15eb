"""``detecture bench``: score Detecture and its peers on texture-segmentation datasets through one metric code path.

``metrics`` (scoring), ``datasets`` (unified + RWTD layouts), ``regimes`` (regime and dispatch tables), ``methods``
(one module per method, a registry by name; ``model_keys``: the models each reads), ``runner`` + ``results``
(resumable, shardable cells), ``tables`` and ``gallery`` (tables, charts, galleries); ``suite.run`` ties them together.
"""
