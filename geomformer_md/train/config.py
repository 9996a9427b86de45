"""Training configuration: a YAML file with four sections, each a frozen dataclass.

```yaml
out_dir: runs/my-potential
init_from: null            # a shipped potential name or a model file to fine-tune
data:    {train_file: data.extxyz, val_fraction: 0.1, test_fraction: 0.1, ...}
model:   {d_model: 64, n_layers: 3, cutoff: 5.0, ...}   # GeoMFormerConfig fields
training: {epochs: 100, batch_size: 8, lr: 1e-3, ...}
```

Unknown keys are an error that lists the valid ones (a typo must not be ignored).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..model import GeoMFormerConfig


@dataclass(frozen=True)
class DataConfig:
    """Where the labelled structures are and how they are split.

    Attributes:
        train_file: any ASE-readable file (extxyz, ASE db, ...) with energies and forces.
        test_file: optional separate test file; otherwise test_fraction of train_file.
        extra_train_files: more files whose frames all go to training. They do not take
            part in the split, so adding data this way leaves val/test (and the split of
            train_file) exactly as they were: a model fine-tuned on them is still
            evaluated on frames it never saw.
        val_fraction / test_fraction: fractions of the pool held out (split_seed fixes them).
        split_key: an ``atoms.info`` key grouping frames that must stay in the same
            split (e.g. ``config_id``: all frames of one relaxation path); None = by frame.
        holdout_key / holdout_value: frames with ``info[holdout_key] == holdout_value``
            always go to the test split (a held-out adsorbate/site combination).
        train_key / train_value: frames with ``info[train_key] == train_value`` always
            go to the training split (e.g. gas-phase reference molecules).
        stratify_keys: ``atoms.info`` keys (e.g. metal, facet, adsorbate, site) whose
            combination defines a stratum; val/test groups are drawn per stratum and
            each stratum keeps at least one group in training, so no combination that
            is not held out on purpose ends up only in val/test. None = one stratum.
        max_force: frames with any |F| above this (eV/Å) are dropped as unphysical.
        path_key / path_step_key / path_kinds / path_end_weight: the training frames sharing
            ``info[path_key]`` (e.g. ``config_id``) form a path ordered by
            ``info[path_step_key]``; the last frame of each path whose ``info["kind"]`` is
            in ``path_kinds`` (empty: every path) has its energy term in the loss
            multiplied by ``path_end_weight``. For relaxation paths this weights the
            minima, which adsorption energies are differences of. 1.0 = off.
        energy_size_exponent: p in [0, 2]. The energy term of each training frame (the
            squared error of the energy per atom) is multiplied by N**p / mean(N**p), N its
            atom count, the mean over the training frames (so the mean weight stays 1).
            0 = the per-atom energy loss (default); 2 = a loss on total energies, which is
            what adsorption and surface energies are differences of; 1 = in between (the
            right weight if per-atom errors add up independently).
        weight_key / energy_weights / forces_weights: loss weights by a tag, as MACE's
            config_type_weights: a training frame whose ``info[weight_key]`` (e.g. ``kind``)
            is a key of ``energy_weights`` (``forces_weights``) has its energy term (its force
            terms) multiplied by that value; other frames keep 1. E.g. compressed short-range
            frames, whose labels are less certain and whose forces are 10-50 eV/Å, so that
            they shape the repulsive wall without outweighing the frames of the domain.
    """

    train_file: str = ""
    test_file: str | None = None
    extra_train_files: tuple[str, ...] = ()
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    split_key: str | None = None
    holdout_key: str | None = None
    holdout_value: str | None = None
    train_key: str | None = None
    train_value: str | None = None
    stratify_keys: tuple[str, ...] | None = None
    max_force: float = 20.0
    path_key: str | None = None
    path_step_key: str = "step"
    path_kinds: tuple[str, ...] = ()
    path_end_weight: float = 1.0
    energy_size_exponent: float = 0.0
    weight_key: str | None = None
    energy_weights: dict = field(default_factory=dict)
    forces_weights: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation settings.

    Loss = w_E * MSE(E/atom) + w_F * MSE(force components) + w_S * MSE(stress), the last
    over structures that carry a stress. The learning rate warms up linearly for
    ``warmup_steps`` then follows a cosine to ``lr * min_lr_ratio`` at the last step.

    Stage two (as MACE's ``--swa``): from epoch ``stage_two_epoch`` (1-based) to the end,
    the loss uses the ``stage_two_*_weight`` values (unset ones keep the first stage's) and
    the learning rate is held at ``stage_two_lr``; the cosine then ends where stage two
    begins. A large energy weight there lowers energy errors, and with them the errors of
    energy differences such as adsorption energies, at little cost in force error.
    """

    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-3
    min_lr_ratio: float = 0.02
    weight_decay: float = 1e-6
    warmup_steps: int = 100
    clip_grad: float = 10.0
    ema_decay: float = 0.99
    energy_weight: float = 1.0
    forces_weight: float = 10.0
    stress_weight: float = 10.0
    seed: int = 0
    checkpoint_every: int = 200
    device: str = "cpu"
    dtype: str = "float32"
    num_threads: int = 2
    neighbor_backend: str = "matscipy"
    max_steps: int | None = None  # stop early (tests, time budgets); the schedule keeps `epochs`
    max_minutes: float | None = None  # wall-clock budget per invocation; resume continues
    stage_two_epoch: int | None = None
    stage_two_lr: float | None = None
    stage_two_energy_weight: float | None = None
    stage_two_forces_weight: float | None = None
    stage_two_stress_weight: float | None = None


@dataclass(frozen=True)
class TrainConfig:
    out_dir: str = "runs/geomformer"
    init_from: str | None = None
    refit_e0: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: dict = field(default_factory=dict)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, raw: dict, where: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"config section {where!r} must be a mapping, got {type(raw).__name__}")
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; valid keys: {sorted(valid)}")
    return cls(**raw)


def train_config_from_dict(raw: dict) -> TrainConfig:
    """Validate a config dict (as read from YAML) into a TrainConfig."""
    raw = dict(raw or {})
    top = _build(TrainConfig, {k: v for k, v in raw.items() if k not in ("data", "training", "model")}, "top level")
    model = raw.get("model") or {}
    valid_model = {f.name for f in dataclasses.fields(GeoMFormerConfig)}
    unknown = sorted(set(model) - valid_model)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in model; valid keys: {sorted(valid_model)}")
    cfg = dataclasses.replace(
        top,
        data=_build(DataConfig, raw.get("data"), "data"),
        training=_build(TrainingConfig, raw.get("training"), "training"),
        model=dict(model),
    )
    if not cfg.data.train_file:
        raise ValueError("data.train_file is required")
    extra = cfg.data.extra_train_files
    if isinstance(extra, str) or not all(isinstance(p, str) for p in extra or ()):
        raise ValueError(f"data.extra_train_files must be a list of file paths, got {extra!r}")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, extra_train_files=tuple(extra or ())))
    d = cfg.data
    if not isinstance(d.path_kinds, (list, tuple)):
        raise ValueError(f"data.path_kinds must be a list of kinds, got {d.path_kinds!r}")
    if not (isinstance(d.path_end_weight, (int, float)) and math.isfinite(d.path_end_weight)
            and d.path_end_weight > 0):
        raise ValueError(
            f"data.path_end_weight must be a positive number, got {d.path_end_weight!r}")
    p = d.energy_size_exponent
    number = isinstance(p, (int, float)) and not isinstance(p, bool)
    if not (number and math.isfinite(p) and 0 <= p <= 2):
        raise ValueError(f"data.energy_size_exponent must be a number from 0 to 2, got {p!r}")
    for name in ("energy_weights", "forces_weights"):
        w = getattr(d, name)
        numbers = isinstance(w, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in w.values())
        if not (numbers and all(math.isfinite(v) and v >= 0 for v in w.values())):
            raise ValueError(f"data.{name} must map tags to numbers >= 0, got {w!r}")
        if w and d.weight_key is None:
            raise ValueError(f"data.{name} needs data.weight_key (the info key holding the tags)")
    if d.path_end_weight != 1.0 and d.path_key is None:
        raise ValueError(
            "data.path_end_weight needs data.path_key (the info key naming each path)")
    kinds = tuple(str(k) for k in d.path_kinds)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(d, path_kinds=kinds))
    t = cfg.training
    if t.dtype not in ("float32", "float64"):
        raise ValueError(f"training.dtype must be float32 or float64, got {t.dtype!r}")
    if t.stage_two_epoch is not None:
        if not 1 < t.stage_two_epoch <= t.epochs:
            raise ValueError(f"training.stage_two_epoch must be in 2..epochs ({t.epochs}), "
                             f"got {t.stage_two_epoch}")
        if t.stage_two_lr is None:
            raise ValueError("training.stage_two_epoch needs training.stage_two_lr")
    else:
        stray = [k for k in ("stage_two_lr", "stage_two_energy_weight", "stage_two_forces_weight",
                             "stage_two_stress_weight") if getattr(t, k) is not None]
        if stray:
            raise ValueError(f"training.{stray[0]} is set but training.stage_two_epoch is not")
    return cfg


def read_setting_value(text: str):
    """A KEY=VALUE setting's value from the command line: YAML, except that 3e-3 (a string
    to YAML 1.1, which wants 3.0e-3) is a number, as a user writing it means."""
    import yaml

    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def read_settings(items) -> dict:
    """Command-line KEY=VALUE settings -> {KEY: value}, values by read_setting_value.
    Raises ValueError naming an item that is not KEY=VALUE."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r} is not KEY=VALUE")
        settings[key.strip()] = read_setting_value(value)
    return settings


def read_variant(text: str) -> tuple[str, dict]:
    """NAME or NAME:KEY=VALUE[,KEY=VALUE...] (a variant of a sweep or benchmark) ->
    (NAME, settings); a ValueError names the variant and the bad item."""
    name, _, rest = text.partition(":")
    try:
        return name, read_settings(filter(None, rest.split(",")))
    except ValueError as err:
        raise ValueError(f"variant {text!r}: {err}") from None


def load_train_config(path: str | Path) -> TrainConfig:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}")
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    cfg = train_config_from_dict(raw)
    # A relative data path is looked up beside the config file first, then in the cwd.
    def rel(p):
        if p is None or Path(p).is_absolute() or not (path.parent / p).exists():
            return p
        return str(path.parent / p)

    data = cfg.data
    data = dataclasses.replace(
        data,
        train_file=rel(data.train_file) or data.train_file,
        test_file=rel(data.test_file) if data.test_file else None,
        extra_train_files=tuple(rel(p) or p for p in data.extra_train_files),
    )
    return dataclasses.replace(cfg, data=data)
