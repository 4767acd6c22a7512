"""``protoreg sweep``: a grid of ordinary ``fit`` runs, trained as a few groups of runs.

A sweep config is a ``fit`` config plus a ``sweep`` section:

* ``sweep.grid``: dotted key -> list of values (``data.n: [3, 5, 10]``,
  ``losses.separation.tau: [0.1, 1, 10]``); the runs are the Cartesian product;
* ``sweep.masks``: losses whose on/off subsets are enumerated (``2**k`` masks, the baseline
  ``none`` first); the weight of an "on" loss is ``losses.<name>.weight``, an "off" loss gets 0;
* ``sweep.seeds``: a count (seeds ``0..n-1``) or a list; each becomes ``train.seed``;
* ``sweep.max_runs_per_batch``: the most runs trained together in one group;
* ``sweep.study``: a registered study whose claims are checked on the results (none by default).

The flow, one module each: :mod:`.grid` (expand the runs) -> :mod:`.plan` (validate every run
before anything is written; group compatible runs) -> :mod:`.store` (the sweep directory, its
lock and CSV files) -> :mod:`.runner` (train group by group through
:func:`protoreg.training.train_group`, record each finished group atomically) -> :mod:`.report`
(``summary.md``, the study's claims) and :mod:`.plots`; :mod:`.table` parses the results.

Submodules are imported where they are needed: :mod:`.table` and :mod:`.grid` load without
Lightning, so a study can use them cheaply.
"""
