"""The experiment harness: paper-table specs -> a plan of runs -> runs -> records -> tables.

- ``specs``: the YAML table specs of ``experiments/`` (rows, claims), validated; the
  papers' own numbers they point to are read by ``paper_tables``.
- ``plan``: every row x seed of a set of specs resolved into run jobs (one per config hash)
  and cost jobs (one per model and input size); what of it is not cached yet.
- ``estimates``: how long the missing work takes, and what fits in a time budget.
- ``sweep``: executes a plan's missing runs and costs on an executor (``executors``), each
  run through ``runner`` (one run folder, locked, resumable; ``notebooks/run.ipynb`` via
  ``notebook_exec``).
- ``costs``: FLOPs / params / latency of one model at paper scale, cached per model.
- ``external``: a user's own detector builder (``RTINST_BUILD_MODEL``) for runs and costs.
- ``tables``: the paper's numbers beside ours, claims judged, saved as CSV + parquet (data
  only: ``rtinst.viz.table_plots`` draws the figures).
- ``archive``: run folders that no current spec row matches leave the runs folder (their
  record and config kept in an archive that nothing reads).

May import: ``rtinst.config``/``errors``/``io``/``provenance``, the model library
(``data``, ``models``, ``ops``), ``rtinst.records`` and ``rtinst.engine``. Not ``viz``,
``cli``, nor ``rtinst.diagnostics`` (tests/test_layers.py checks it).
"""
