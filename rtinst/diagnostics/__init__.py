"""Research diagnostics: questions asked of a model or a trained run, beside the tables.

- ``probe``: a detection-scale linear probe of a backbone's features (is the init good?).
- ``pretrain``: the tiny preset's stand-in for ImageNet pretraining, which the probe judges.
- ``overfit``: can a model fit a handful of fixed images (the first test of a detector).
- ``iam_localization``: are a trained SparseInst's instance activation maps on their objects.
- ``oracle_iam``: would SparseInst learn in its budget if its instance maps were right.
- ``nms_ablation``: YOLACT Table 2a on a trained run, every NMS variant on the same weights.

Each is a command of ``rtinst bench`` writing a JSON (the committed ones are in
``results/benchmarks/``); ``pretrain`` is ``rtinst pretrain``, writing ``rtinst/weights/``.
May import: ``rtinst.config``/``errors``/``io``/``provenance``,
``data``, ``models``, ``ops``, ``rtinst.records`` and ``rtinst.engine``. Not
``rtinst.harness``, ``viz`` nor ``cli`` (tests/test_layers.py checks it).
"""
