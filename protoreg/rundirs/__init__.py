"""Persistence: run directories (:mod:`.layout`), atomic file writes (:mod:`.io`), checkpoints
(:mod:`.checkpoint`), run statuses and exit codes (:mod:`.status`) and ``protoreg check``
(:mod:`.check`). A new file of a run directory is written by :mod:`.layout` alone.
Kept free of Lightning, so that reading a run is quick."""
