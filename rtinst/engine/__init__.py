"""The training and evaluation engine: what turns a config into a trained, measured run.

``train`` (one run: build, train, evaluate, write the record), ``loop`` (the training loop,
checkpoints via ``checkpoint``, ``optim``), ``inference`` (predictions -> COCO results),
``evaluate`` (COCO mask AP), ``tide`` (TIDE error breakdown), ``restore`` (a run folder back
into a model), ``flops`` / ``latency`` (cost measurement).

May import: ``rtinst.config``/``errors``/``io``/``provenance``, ``data``, ``models``,
``ops`` and ``rtinst.records`` (the engine writes and restores run records). Nothing above
it: not ``diagnostics``, ``harness``, ``viz`` nor ``cli`` (tests/test_layers.py checks it).
"""
