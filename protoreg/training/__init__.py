"""Training a group of runs: building it (:mod:`.group`), the LightningModule (:mod:`.module`),
why a step failed (:mod:`.diagnosis`), structural loss terms and the plugin call boundary
(:mod:`.terms`), Lightning plumbing (:mod:`.trainer`), the geometry callback (:mod:`.callbacks`)
and the engine (:mod:`.engine`).

Three words, three things: a *group* is R runs trained together as one program, a *minibatch*
is the samples of one optimisation step (``train.batch_size``), a *chunk* is the optimisation
steps between two Lightning batches (``train.log_every_n_steps``).
"""

from protoreg.training.callbacks import ExpulsionWarning, GeometryCallback, geometry_callback
from protoreg.training.engine import GroupOutcome, RunOutcome, Units, train_group
from protoreg.training.group import RunGroup, RunSpec, build_group, group_key, load_data, run_spec

__all__ = [
    "ExpulsionWarning",
    "GeometryCallback",
    "GroupOutcome",
    "RunGroup",
    "RunOutcome",
    "RunSpec",
    "Units",
    "build_group",
    "geometry_callback",
    "group_key",
    "load_data",
    "run_spec",
    "train_group",
]
