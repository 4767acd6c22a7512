"""Prototype geometry diagnostics: convex-hull distances and collapse checks.

Every tensor carries a leading *run axis* ``R``: ``R`` independent problems
are processed together and never interact.

* :func:`hull_distance`, :func:`outside_hull`, :func:`outside_hull_frac`,
  :func:`hull_extent` and the cache :class:`HullWarmStart`
  (:mod:`~protoreg.geometry.hull`): the Euclidean distance of each prototype
  to the convex hull of its run's inputs, exact in one dimension and certified
  to a tolerance relative to the extent otherwise, computed by a batched Wolfe
  minimum-norm-point active-set solver (:mod:`~protoreg.geometry.solver`,
  whose docstring explains the method and its certificates);
* :func:`hull_check`, :func:`resolution` and :class:`HullCheck`
  (:mod:`~protoreg.geometry.margin`): expulsion as protoreg reports it -- a hull distance above
  a margin relative to the data's resolution, every flag decided by a certificate;
* :func:`min_prototype_gap`, :func:`duplicate_prototypes`, :func:`dead_units`
  (:mod:`~protoreg.geometry.collapse`): collapse of prototypes or units;
* :func:`geometry_report` (:mod:`~protoreg.geometry.report`): all of them
  for a batch of runs.
"""

from __future__ import annotations

from protoreg.geometry.collapse import dead_units, duplicate_prototypes, min_prototype_gap
from protoreg.geometry.hull import HullWarmStart, hull_distance, hull_extent, outside_hull, outside_hull_frac
from protoreg.geometry.margin import DEFAULT_MARGIN, DEFAULT_REL_TOL, HullCheck, check_bytes, hull_check, resolution
from protoreg.geometry.report import geometry_report

__all__ = [
    "hull_extent",
    "hull_distance",
    "outside_hull",
    "outside_hull_frac",
    "min_prototype_gap",
    "duplicate_prototypes",
    "dead_units",
    "geometry_report",
    "HullWarmStart",
    "hull_check",
    "HullCheck",
    "resolution",
    "check_bytes",
    "DEFAULT_MARGIN",
    "DEFAULT_REL_TOL",
]
