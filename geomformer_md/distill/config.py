"""The distillation config: a YAML file, validated in full before anything runs.

```yaml
out_dir: runs/distill-cuagau
seed: 0
teacher: {calculator: ase.calculators.emt.EMT, kwargs: {}, name: EMT}
space:   {elements: [Cu, Ag, Au], alloy_pairs: [[Cu, Ag]], miller: ["111", "100"], ...}
model:   {d_model: 32, n_layers: 2, cutoff: 4.5}   # a new model (or init_from: a potential)
committee_size: 4
iterations: 5
initial_frames: 40          # random structures labelled before the first training
frames_per_iteration: 20    # labelling budget of each iteration
training: {epochs: 40, batch_size: 4, lr: 3.0e-3}   # the first training
finetune: {epochs: 15, lr: 1.0e-3}                  # each later iteration (continues the members)
```

Every key is listed in DistillConfig with its meaning; unknown keys and wrongly typed
values are one clear error naming the key.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..model import GeoMFormerConfig
from ..train.config import TrainingConfig
from .space_config import SpaceConfig, parse_space

EXPLORE_MODES = ("md", "relax", "rattle", "minimize")
DEFAULT_EXPLORE = ("md", "relax", "rattle")
TEACHER_KEYS = ("calculator", "kwargs", "name", "max_force", "python", "timeout")
SELECTIONS = ("uncertainty", "random")
BALANCES = ("none", "category")
MD_DRIVERS = ("committee", "member")


@dataclass(frozen=True)
class DistillConfig:
    """An active-learning distillation run.

    Attributes:
        out_dir: where everything goes; re-running the same config continues the run there.
        seed: seeds every random choice (sampling, exploration, selection, training).
        teacher: {calculator: import path of an ASE calculator class or factory, kwargs:
            {...}, name: label stored in each frame's info, max_force: frames above this
            |F| (eV/Å) count as teacher failures (default 50), python: an interpreter of
            another environment to run the calculator in (one long-lived process, restarted
            after a crash; distill/teacher_process.py), timeout: seconds one structure may
            take there before it counts as a teacher failure (with python only; default
            no limit)}.
        space: the configuration space (distill/space.py, SpaceConfig).
        lattice_constants: fcc lattice constants (Å) by element; missing ones are measured
            with the teacher (a parabola through 7 energies).
        extra_data: labelled files (any ASE-readable, .xz too) by the same teacher that
            every member trains on besides the run's own frames (e.g. an earlier data set):
            each frame must name the teacher in its info (``teacher`` or ``source`` equal
            to ``teacher.name``); frames that a hold-out rule matches are dropped.
        init_from: a shipped potential, model file or committee file to start from (then
            ``model`` must be empty); None trains new models with ``model``.
        refit_e0: with init_from, refit per-element reference energies to the teacher
            (needed when the teacher is not the labeller of the starting potential).
        model: GeoMFormerConfig keys of a new model (species come from the space).
        committee_size: K >= 2 members; 4 or more for a useful uncertainty.
        bootstrap: each member trains on its own bootstrap resample of the data (besides
            its own seed and data order), which widens the committee's spread off data.
        iterations: active-learning iterations after the initial training.
        initial_frames: random structures from the space, rattled and labelled, that the
            first committee is trained on.
        frames_per_iteration: new labelled frames per iteration (the selection budget).
        structures_per_iteration: starting structures explored per iteration.
        explore: exploration modes, assigned to starting structures in turn: md (Langevin
            at one of ``temperatures``), relax (FIRE path), rattle (random displacements),
            minimize (FIRE with one member, member k % K for structure k, to
            ``minimize_fmax`` or ``minimize_steps``: one candidate, the minimum it ends at).
        temperatures: MD temperatures, K.
        md_steps / timestep_fs / snapshot_every: length, step and sampling of exploration MD.
        md_driver: what moves the atoms in exploration MD. "committee" (the members' mean
            forces at every step) or "member": one member, member k % K for starting
            structure k, with the committee evaluated only at the snapshots that become
            candidates. MD is most of the exploration's cost, and "member" cuts it by ~3x
            with K = 4 and snapshot_every = 10 (docs/distill.md); trajectories then follow
            one member's forces, which is how each member's holes get visited.
        relax_steps: steps of an exploration relaxation (every step is a candidate).
        minimize_steps / minimize_fmax: the longest a "minimize" exploration runs, and the
            largest force (eV/Å) at which it counts as converged.
        minima_per_iteration: how much of ``frames_per_iteration`` goes first to the minima of
            "minimize" explorations, the highest committee energy std per atom first (then
            the rest of the budget as ``selection`` says, leftover minima included).
            Adsorption, surface and formation energies are differences of minima, where
            forces (and so force stds, the usual ranking) are near zero: without this a
            distillation labels almost none, and its potential's energies are worst there
            (docs/distill.md).
        rattle: largest random displacement (Å) of rattled frames.
        selection: "uncertainty" (the committee's largest per-atom force std, highest
            first) or "random" (the same candidates and budget, chosen at random: the
            baseline that uncertainty selection must beat).
        balance: "category" deals the budget round-robin over the categories of the space
            (each category's candidates in the order of ``selection``); "none" ranks all
            candidates together.
        max_per_trajectory: at most this many frames from one exploration trajectory
            (the diversity rule), at least ``min_separation`` snapshots apart.
        min_displacement: Å. A candidate whose atoms all lie within this distance of a
            frame already chosen in the same iteration (same composition and cell, rigid
            translations aside) is a duplicate and is not labelled; 0 = off. Without it,
            ~8 % of the issue-24 run's budget went to relaxations of perfect crystals,
            which do not move, and to isolated atoms (docs/distill.md).
        validation_per_category: fixed validation frames per category of the space (and
            per hold-out rule), labelled once at the start; errors on them are reported
            each iteration.
        validation_every_kind: true builds every kind of structure of the space at least
            once (so a category with more kinds than validation_per_category gets one frame
            per kind); false draws exactly validation_per_category kinds per category at
            random: for large spaces, where every kind once is thousands of frames.
        training: TrainingConfig keys of the first training of each member.
        finetune: TrainingConfig keys that override ``training`` in later iterations, which
            continue each member from its last weights on all data so far.
        finetune_frames: 0 (every later iteration continues each member on all data so
            far), or a cap N: each member continues on the frames labelled in this
            iteration plus a seeded random sample of the earlier ones, N in all (its own
            sample per member and iteration). Training grows with the data otherwise, and
            is nearly all of a long run's cost; the final potential is trained on all data
            afterwards anyway (the committee only chooses the data).
        retrain: train every iteration from scratch instead (slower; for comparisons).
        workers: train the K members in this many processes at once (one thread each).
            Results do not depend on it, so it may change when a run is continued.
    """

    out_dir: str = "runs/distill"
    seed: int = 0
    teacher: dict = field(default_factory=dict)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    lattice_constants: dict = field(default_factory=dict)
    extra_data: tuple[str, ...] = ()
    init_from: str | None = None
    refit_e0: bool = False
    model: dict = field(default_factory=dict)
    committee_size: int = 4
    bootstrap: bool = True
    iterations: int = 5
    initial_frames: int = 40
    frames_per_iteration: int = 20
    structures_per_iteration: int = 12
    explore: tuple[str, ...] = DEFAULT_EXPLORE
    temperatures: tuple[float, ...] = (300.0, 600.0)
    md_steps: int = 40
    timestep_fs: float = 2.0
    snapshot_every: int = 4
    md_driver: str = "committee"
    relax_steps: int = 15
    minimize_steps: int = 200
    minimize_fmax: float = 0.05
    minima_per_iteration: int = 0
    rattle: float = 0.1
    selection: str = "uncertainty"
    balance: str = "none"
    max_per_trajectory: int = 3
    min_separation: int = 2
    min_displacement: float = 0.01
    validation_per_category: int = 8
    validation_every_kind: bool = True
    training: dict = field(default_factory=dict)
    finetune: dict = field(default_factory=dict)
    finetune_frames: int = 0
    retrain: bool = False
    workers: int = 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_INTS = ("seed", "committee_size", "iterations", "initial_frames", "frames_per_iteration",
         "structures_per_iteration", "md_steps", "snapshot_every", "relax_steps",
         "minimize_steps", "minima_per_iteration",
         "max_per_trajectory", "min_separation", "validation_per_category", "finetune_frames",
         "workers")
_FLOATS = ("timestep_fs", "rattle", "minimize_fmax")
_BOOLS = ("refit_e0", "bootstrap", "retrain", "validation_every_kind")


def _finite(value) -> bool:
    """A finite int or float (YAML's true/false are not numbers here)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _check_training(section: dict, where: str) -> dict:
    if not isinstance(section, dict):
        raise ValueError(f"{where} must be a mapping of training keys")
    fields = {f.name: f for f in dataclasses.fields(TrainingConfig)}
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; valid keys: {sorted(fields)}")
    for key, value in section.items():
        default = getattr(TrainingConfig(), key)
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if numeric and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{where}.{key} must be a number, got {value!r}")
    return dict(section)


def distill_config_from_dict(raw: dict) -> DistillConfig:
    """Validate a config mapping (as read from YAML); ValueError names the bad key."""
    if not isinstance(raw, dict):
        raise ValueError("the distillation config must be a mapping")
    valid = {f.name for f in dataclasses.fields(DistillConfig)}
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in the distillation config; valid keys: "
                         f"{sorted(valid)}")
    d = dict(raw)
    for key in _INTS:
        if key in d and (isinstance(d[key], bool) or not isinstance(d[key], int)):
            raise ValueError(f"{key} must be an integer, got {d[key]!r}")
    if "min_displacement" in d and (not _finite(d["min_displacement"])
                                    or d["min_displacement"] < 0):
        raise ValueError("min_displacement must be a number >= 0 (Å; 0 = off), "
                         f"got {d['min_displacement']!r}")
    for key in _FLOATS:
        if key in d and (not _finite(d[key]) or d[key] <= 0):
            raise ValueError(f"{key} must be a positive number, got {d[key]!r}")
    for key in _BOOLS:
        if key in d and not isinstance(d[key], bool):
            raise ValueError(f"{key} must be true or false, got {d[key]!r}")
    teacher = d.get("teacher")
    if not isinstance(teacher, dict) or "calculator" not in teacher:
        raise ValueError("teacher must be given as {calculator: <import path>, kwargs: {...}}")
    extra = sorted(set(teacher) - set(TEACHER_KEYS))
    if extra:
        raise ValueError(f"unknown key(s) {extra} in teacher; valid: {', '.join(TEACHER_KEYS)}")
    if not isinstance(teacher.get("kwargs", {}), dict):
        raise ValueError("teacher.kwargs must be a mapping of keyword arguments")
    if "python" in teacher and (not isinstance(teacher["python"], str) or not teacher["python"]):
        raise ValueError(f"teacher.python must be the path of a Python interpreter, got "
                         f"{teacher['python']!r}")
    for key in ("timeout", "max_force"):
        value = teacher.get(key)
        if key in teacher and (isinstance(value, bool) or not isinstance(value, (int, float))
                               or not math.isfinite(value) or value <= 0):
            raise ValueError(f"teacher.{key} must be a positive number, got {value!r}")
    if "timeout" in teacher and "python" not in teacher:
        raise ValueError("teacher.timeout needs teacher.python: only a teacher in its own "
                         "process can be stopped when it hangs")
    d["space"] = parse_space(d.get("space") or {})
    model = d.get("model") or {}
    valid_model = {f.name for f in dataclasses.fields(GeoMFormerConfig)} - {"species", "dtype"}
    bad = sorted(set(model) - valid_model)
    if bad:
        raise ValueError(f"unknown key(s) {bad} in model; valid keys: {sorted(valid_model)}")
    if d.get("init_from") and model:
        raise ValueError("give either init_from (a potential to start from) or model (a new "
                         "model), not both: a model section would be ignored")
    d["training"] = _check_training(d.get("training") or {}, "training")
    d["finetune"] = _check_training(d.get("finetune") or {}, "finetune")
    for key in ("explore", "temperatures"):
        if key in d:
            d[key] = tuple(d[key])
    extra = d.get("extra_data", ())
    if isinstance(extra, str) or not all(isinstance(p, str) for p in extra):
        raise ValueError(f"extra_data must be a list of file paths, got {extra!r}")
    d["extra_data"] = tuple(extra)
    bad = [m for m in d.get("explore", ()) if m not in EXPLORE_MODES]
    if bad or ("explore" in d and not d["explore"]):
        raise ValueError(f"explore must be a non-empty list of {list(EXPLORE_MODES)}, got "
                         f"{list(d['explore'])}")
    if not all(isinstance(t, (int, float)) and t > 0 for t in d.get("temperatures", (1,))):
        raise ValueError(f"temperatures must be positive numbers (K), got {d['temperatures']}")
    d["temperatures"] = tuple(float(t) for t in d.get("temperatures", (300.0, 600.0)))
    if d.get("selection", "uncertainty") not in SELECTIONS:
        raise ValueError(f"selection must be one of {list(SELECTIONS)}, got {d['selection']!r}")
    if d.get("balance", "none") not in BALANCES:
        raise ValueError(f"balance must be one of {list(BALANCES)}, got {d['balance']!r}")
    if d.get("md_driver", "committee") not in MD_DRIVERS:
        raise ValueError(f"md_driver must be one of {list(MD_DRIVERS)}, got {d['md_driver']!r}")
    cfg = DistillConfig(**d)
    if cfg.committee_size < 2:
        raise ValueError(f"committee_size must be at least 2, got {cfg.committee_size}")
    for key in ("iterations", "min_separation", "finetune_frames", "minima_per_iteration"):
        if getattr(cfg, key) < 0:
            raise ValueError(f"{key} must be >= 0, got {getattr(cfg, key)}")
    for key in ("initial_frames", "frames_per_iteration", "structures_per_iteration", "md_steps",
                "snapshot_every", "relax_steps", "minimize_steps", "max_per_trajectory",
                "validation_per_category", "workers"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.minima_per_iteration and "minimize" not in cfg.explore:
        raise ValueError(f"minima_per_iteration ({cfg.minima_per_iteration}) needs the "
                         f"minimize mode in explore, got {list(cfg.explore)}")
    if cfg.minima_per_iteration > cfg.frames_per_iteration:
        raise ValueError(f"minima_per_iteration ({cfg.minima_per_iteration}) must be at most "
                         f"frames_per_iteration ({cfg.frames_per_iteration})")
    return cfg


def load_distill_config(path: str | Path) -> DistillConfig:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"distillation config not found: {path}")
    with open(path) as fh:
        try:
            raw = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return distill_config_from_dict(raw)
