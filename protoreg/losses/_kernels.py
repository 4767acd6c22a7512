"""Small tensor helpers shared by the built-in losses."""

from __future__ import annotations

from protoreg.model.mlp import pairwise_sq_dists

#: Squared Euclidean distances ``(R, P, d) x (R, Q, d) -> (R, P, Q)``: exact for small problems
#: and in 1-D, the Gram expansion for large high-dimensional ones (see
#: :func:`protoreg.model.mlp.pairwise_sq_dists`).
sq_dists = pairwise_sq_dists
