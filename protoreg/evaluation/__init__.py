"""The evaluation layer: the metrics of trained runs (:mod:`.evaluate`), the optimal matching
behind ``recon_error`` (:mod:`.matching`), image metrics (:mod:`.images`) and the figures of a
run (:mod:`.figures`). A new metric is one function here, reported by :mod:`.evaluate`."""
