"""The model layer: the Gaussian MLP (:mod:`.mlp`) and its forward paths, dense, shared
distances and banded (:mod:`.banded`), over the underflow-flushed kernels (:mod:`.kernels`).
A new forward path is one module here, chosen by the model."""
