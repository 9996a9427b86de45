"""Training configuration: a YAML file with up to five sections, each a frozen dataclass.

```yaml
out_dir: runs/my-potential
init_from: null            # a shipped potential name or a model file to fine-tune
refit_e0: present          # fine-tuning: which per-element reference energies to refit
data:    {train_file: data.extxyz, val_fraction: 0.1, test_fraction: 0.1, ...}
model:   {d_model: 64, n_layers: 3, cutoff: 5.0, ...}   # GeoMFormerConfig (not with init_from)
training: {epochs: 100, batch_size: 8, lr: 1.0e-3, ...}
replay:  {frames: 200, weight: 3.0}                     # fine-tuning only, see ReplayConfig
```

Every key is checked at load, before any data is read: unknown keys are an error that lists
the valid ones (a typo must not be ignored), and a value of the wrong type (a number given as
text, a single string where a list is meant) is refused in one line naming the key. YAML 1.1
reads ``2e-4`` (no decimal point) as text; ``load_train_config`` reads it as the number the
user meant, as YAML 1.2 does.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..model import GeoMFormerConfig


@dataclass(frozen=True)
class DataConfig:
    """Where the labelled structures are and how they are split.

    Attributes:
        train_file: any ASE-readable file (extxyz, ASE db, ...) with energies and forces.
        test_file: optional separate test file. Its frames join the test split; whether
            train_file also gives a random test split is test_fraction's choice.
        extra_train_files: more files whose frames all go to training. They do not take
            part in the split, so adding data this way leaves val/test (and the split of
            train_file) exactly as they were: a model fine-tuned on them is still
            evaluated on frames it never saw.
        val_fraction / test_fraction: fractions of the pool held out (split_seed fixes them).
            test_fraction unset = 0.1 without a test_file and 0 with one (the behaviour of
            earlier versions); set it to have both a test_file and a random test split.
        split_key: an ``atoms.info`` key grouping frames that must stay in the same
            split (e.g. ``config_id``: all frames of one relaxation path); None = by frame.
        holdout_key / holdout_value: frames with ``info[holdout_key]`` equal to
            ``holdout_value`` (one value or a list of values) always go to the test split
            (held-out adsorbate/site combinations).
        train_key / train_value: frames with ``info[train_key] == train_value`` always
            go to the training split (e.g. gas-phase reference molecules).
        stratify_keys: ``atoms.info`` keys (e.g. metal, facet, adsorbate, site) whose
            combination defines a stratum; val/test groups are drawn per stratum and
            each stratum keeps at least one group in training, so no combination that
            is not held out on purpose ends up only in val/test. None = one stratum.
        category_key: an ``atoms.info`` key (e.g. ``config_type``) whose values are
            categories: the errors of each category are reported in metrics.csv (val) and
            in the final report (val and test), beside the totals.
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
        exclude: hold-out rules, as ``space.holdout`` of a distillation (docs/distill.md):
            e.g. ``[{elements: Cu-Ni}, {facet: "311"}, {adsorbate: [NH, NH2, NH3]}]``. A
            frame of any file that matches one of them is dropped before the split and never
            trained on, so that whole categories stay unseen and transfer to them can be
            measured: frames of ``test_file`` that match stay in the test as the rule's own
            category ("heldout:facet=311") when ``category_key`` is set (else they are
            dropped too, and the test totals stay in-domain). Tags come from the frame's
            info (category, elements, facet, adsorbate, shape, cluster_size) and, for
            ``elements``, from its metal atoms when the info lacks it.
    """

    train_file: str = ""
    test_file: str | None = None
    extra_train_files: tuple[str, ...] = ()
    val_fraction: float = 0.1
    test_fraction: float | None = None
    split_seed: int = 0
    split_key: str | None = None
    holdout_key: str | None = None
    holdout_value: str | tuple[str, ...] | None = None
    train_key: str | None = None
    train_value: str | None = None
    stratify_keys: tuple[str, ...] | None = None
    category_key: str | None = None
    max_force: float = 20.0
    path_key: str | None = None
    path_step_key: str = "step"
    path_kinds: tuple[str, ...] = ()
    path_end_weight: float = 1.0
    energy_size_exponent: float = 0.0
    weight_key: str | None = None
    energy_weights: dict = field(default_factory=dict)
    forces_weights: dict = field(default_factory=dict)
    exclude: tuple[dict, ...] = ()


def test_fraction_of(data: DataConfig) -> float:
    """The random test split's fraction: test_fraction, or its default (0.1; 0 beside a
    test_file)."""
    if data.test_fraction is not None:
        return data.test_fraction
    return 0.0 if data.test_file else 0.1


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation settings.

    Loss = w_E * MSE(E/atom) + w_F * MSE(force components) + w_S * MSE(stress), the last
    over structures that carry a stress. ``loss: huber`` replaces each squared error x^2
    by x^2 for |x| <= ``huber_delta`` and 2 delta |x| - delta^2 beyond (twice torch's
    Huber loss, so small errors weigh as in MSE and the weights keep their meaning there):
    the few frames with the largest errors (hot, crowded, far from equilibrium) then pull
    on the gradient linearly, not quadratically, as in MACE's ``--loss huber``. delta is in
    the labels' units: eV/atom for energies, eV/Å for forces, eV/Å^3 for stresses. The
    reported metrics are MAEs either way. The learning rate warms up linearly for
    ``warmup_steps`` then follows a cosine to ``lr * min_lr_ratio`` at the last step.

    Stage two (as MACE's ``--swa``): from epoch ``stage_two_epoch`` (1-based) to the end,
    the loss uses the ``stage_two_*_weight`` values (unset ones keep the first stage's) and
    the learning rate is held at ``stage_two_lr``; the cosine then ends where stage two
    begins. In training on a full data set a large energy weight there lowered energy errors;
    in small fine-tunes it did not (docs/finetune.md).

    ``freeze``: parameter-name prefixes (``embed``, ``blocks.0``, ``energy_mlp``, ...) whose
    parameters are not trained (fine-tuning only). ``num_threads``: torch CPU threads; unset
    = torch's default, which follows OMP_NUM_THREADS.
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
    loss: str = "mse"
    huber_delta: float = 0.01
    seed: int = 0
    checkpoint_every: int = 200
    device: str = "cpu"
    dtype: str = "float32"
    num_threads: int | None = None
    neighbor_backend: str = "matscipy"
    max_steps: int | None = None  # stop early (tests, time budgets); the schedule keeps `epochs`
    max_minutes: float | None = None  # wall-clock budget per invocation; resume continues
    stage_two_epoch: int | None = None
    stage_two_lr: float | None = None
    stage_two_energy_weight: float | None = None
    stage_two_forces_weight: float | None = None
    stage_two_stress_weight: float | None = None
    freeze: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReplayConfig:
    """Replay of the starting model's domain while fine-tuning (``init_from`` only).

    Fine-tuning on a few hundred frames of one system moves the whole potential; replay
    keeps what the starting model knew by training on structures of its domain labelled by
    the starting model itself (pseudo-labels, after the reference-energy refit, so they share
    the new data's energy zero). No training data of the base model is needed, so this works
    from an installed wheel.

    Attributes:
        frames: how many replay structures (0 = replay off). Generated from the starting
            model's elements: bulk crystals, clean slabs and slabs with an adsorbate of its
            non-metal elements, gas molecules, all rattled (train/replay.py).
        weight: multiplier of the replay frames' energy, force and stress terms in the loss.
            3 kept far-away chemistry within 1.22x the starting model's force error in the
            measured example (docs/finetune.md); lower it to favour the new domain.
        file: structures to replay instead of generated ones (any ASE-readable file, e.g.
            the base model's own training data in a source checkout); their labels are
            ignored and replaced by the starting model's.
        resample: new replay structures every epoch (seeded by ``seed`` and the epoch, so a
            resumed run sees the same ones): the same cost per epoch, more of the old domain
            covered over a run. Off: the same structures every epoch.
        skip_covered: leave out replay structures made mostly (more than half their atoms)
            of the new data's elements: their chemistry is what the new labels are meant to
            change, and the starting model's labels there would pull against them.
        rattle: the displacement scale of generated structures, Å (each structure's atoms
            move with a standard deviation drawn from 0.5 to 3 times it).
        seed: the random seed of the generated structures.
    """

    frames: int = 200
    weight: float = 3.0
    file: str | None = None
    resample: bool = True
    skip_covered: bool = True
    rattle: float = 0.05
    seed: int = 0


REFIT_E0 = ("present", "all", "none")


@dataclass(frozen=True)
class TrainConfig:
    """The whole training config.

    ``refit_e0`` (fine-tuning only) says which per-element reference energies are refitted
    to the new data before training: ``present`` (default) shifts those of the elements in
    the new data by a least-squares fit of the new labels' residual against the starting
    model and keeps every other element's; ``all`` refits every element from the new data
    alone, as training from scratch does (each element must then occur in it); ``none``
    keeps all. ``true`` / ``false`` of earlier versions read as ``present`` / ``none``.
    """

    out_dir: str = "runs/geomformer"
    init_from: str | None = None
    refit_e0: str = "present"
    data: DataConfig = field(default_factory=DataConfig)
    model: dict = field(default_factory=dict)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- typed validation

_SECTIONS = {"data": DataConfig, "training": TrainingConfig, "replay": ReplayConfig}


def _describe(tp) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if typing.get_origin(tp) is tuple:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            dict: "a mapping"}.get(tp, str(tp))


def _show(value) -> str:
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def _coerce(value, tp, where: str):
    """``value`` as type ``tp`` (a list becomes a tuple, an int a float); ValueError in one
    line naming ``where`` otherwise."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ValueError:
                pass
    elif origin is tuple and isinstance(value, (list, tuple)):
        return tuple(_coerce(v, args[0], f"{where}[{k}]") for k, v in enumerate(value))
    elif tp is bool and isinstance(value, bool):
        return value
    elif tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif tp in (str, dict) and isinstance(value, tp):
        return value
    hint = ""
    if isinstance(value, str) and _describe(tp).startswith(("a number", "an integer")):
        hint = " (quoted in the YAML file? write the number without quotes)"
    raise ValueError(f"{where} must be {_describe(tp)}, got {_show(value)}{hint}")


def _build(cls, raw, where: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"config section {where!r} must be a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls) if f.name not in (*_SECTIONS, "model")]
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; valid keys: {sorted(valid)}")
    prefix = "" if where == "top level" else f"{where}."
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in raw.items()})


def _info_values(value):
    """holdout_value / train_value: info values compare as text, so 1 and '1' are the same."""
    if isinstance(value, (list, tuple)):
        return [v if isinstance(v, (list, tuple, dict)) else str(v) for v in value]
    if isinstance(value, (int, float, bool)):
        return str(value)
    return value


def _check_model_section(model, init_from) -> dict:
    if model is None:
        return {}
    if not isinstance(model, dict):
        raise ValueError(f"config section 'model' must be a mapping, got {_show(model)}")
    # with init_from only the short-range prior may be added or changed (it has no weights)
    prior = ("zbl", "zbl_inner", "zbl_outer")
    if model and init_from and set(model) - set(prior):
        raise ValueError(
            f"the model section is not used with init_from (the architecture is that of "
            f"{init_from}) except for {', '.join(prior)}; remove the other keys "
            f"({sorted(set(model) - set(prior))})")
    hints = typing.get_type_hints(GeoMFormerConfig)
    unknown = sorted(set(model) - set(hints))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in model; valid keys: {sorted(hints)}")
    out = {}
    for k, v in model.items():
        if k == "species" and isinstance(v, (list, tuple)):
            from ase.data import atomic_numbers

            v = [atomic_numbers.get(z, z) if isinstance(z, str) else z for z in v]
        out[k] = _coerce(v, hints[k], f"model.{k}")
    return out


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def train_config_from_dict(raw: dict) -> TrainConfig:
    """Validate a config dict (as read from YAML) into a TrainConfig; ValueError naming the
    first bad key otherwise. Reads no file."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"a training config must be a mapping of sections, got {_show(raw)}")
    raw = dict(raw)
    if isinstance(raw.get("refit_e0"), bool):  # earlier versions: true / false
        raw["refit_e0"] = "present" if raw["refit_e0"] else "none"
    top = _build(TrainConfig, {k: v for k, v in raw.items() if k not in (*_SECTIONS, "model")},
                 "top level")
    data_raw = raw.get("data")
    if isinstance(data_raw, dict):
        data_raw = dict(data_raw)
        for key in ("holdout_value", "train_value"):
            if key in data_raw:
                data_raw[key] = _info_values(data_raw[key])
        if isinstance(data_raw.get("holdout_value"), list):
            data_raw["holdout_value"] = tuple(data_raw["holdout_value"])
        kinds = data_raw.get("path_kinds", ())
        if not isinstance(kinds, (list, tuple)):
            raise ValueError(f"data.path_kinds must be a list of kinds, got {kinds!r}")
        data_raw["path_kinds"] = [str(k) for k in kinds]  # info["kind"] compares as text
        if "exclude" in data_raw:
            data_raw["exclude"] = _exclude_rules(data_raw["exclude"])
    if isinstance(data_raw, dict) and isinstance(data_raw.get("extra_train_files"), str):
        raise ValueError(f"data.extra_train_files must be a list of file paths, got "
                         f"{data_raw['extra_train_files']!r}")
    try:
        data = _build(DataConfig, data_raw, "data")
    except ValueError as err:
        if "extra_train_files" in str(err):
            raise ValueError(
                f"data.extra_train_files must be a list of file paths ({err})") from None
        raise
    cfg = dataclasses.replace(
        top, data=data,
        training=_build(TrainingConfig, raw.get("training"), "training"),
        replay=_build(ReplayConfig, raw.get("replay"), "replay"),
        model=_check_model_section(raw.get("model"), top.init_from),
    )
    _check_top(cfg, raw)
    _check_data(cfg.data)
    _check_training(cfg.training, cfg)
    r = cfg.replay
    _require(r.frames >= 0, f"replay.frames must be >= 0 (0 = replay off), got {r.frames}")
    _require(math.isfinite(r.weight) and r.weight >= 0,
             f"replay.weight must be >= 0, got {r.weight}")
    _require(math.isfinite(r.rattle) and r.rattle >= 0,
             f"replay.rattle must be >= 0 Å, got {r.rattle}")
    return cfg


def _exclude_rules(raw) -> tuple[dict, ...]:
    from ..distill.space_config import HOLDOUT_KEYS

    if not isinstance(raw, (list, tuple)):
        raise ValueError(f"data.exclude must be a list of rules such as {{facet: \"311\"}}, "
                         f"got {raw!r}")
    rules = []
    for rule in raw:
        if not isinstance(rule, dict) or not rule or set(rule) - set(HOLDOUT_KEYS):
            raise ValueError(f"data.exclude: {rule!r} must match on one or more of "
                             f"{', '.join(HOLDOUT_KEYS)}")
        values = {k: [str(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
                  for k, v in rule.items()}
        if not all(values.values()):
            raise ValueError(f"data.exclude: {rule!r} has an empty list")
        rules.append(values)
    return tuple(rules)


def _check_top(cfg: TrainConfig, raw: dict) -> None:
    _require(cfg.refit_e0 in REFIT_E0,
             f"refit_e0 must be one of {', '.join(REFIT_E0)}, got {cfg.refit_e0!r}")
    if not cfg.init_from:
        if cfg.replay != ReplayConfig():  # a dict written by to_dict() has the defaults
            raise ValueError("the replay section needs init_from: it replays the domain of the "
                             "model fine-tuning starts from")
        _require(not cfg.training.freeze, "training.freeze needs init_from (a trained model "
                                          "whose layers to keep)")
    _require(bool(cfg.out_dir), "out_dir must not be empty")


def _check_data(d: DataConfig) -> None:
    _require(bool(d.train_file), "data.train_file is required")
    _require(0 <= d.val_fraction < 1, f"data.val_fraction must be in [0, 1), got {d.val_fraction}")
    test = test_fraction_of(d)
    _require(0 <= test < 1, f"data.test_fraction must be in [0, 1), got {d.test_fraction}")
    _require(d.val_fraction + test < 1,
             "data.val_fraction + data.test_fraction must be below 1, got "
             f"{d.val_fraction + test:g}")
    _require(math.isfinite(d.max_force) and d.max_force > 0,
             f"data.max_force must be a positive number (eV/Å), got {d.max_force}")
    _require(not (d.holdout_value is not None and d.holdout_key is None),
             "data.holdout_value needs data.holdout_key")
    _require(not (d.holdout_key is not None and d.holdout_value is None),
             "data.holdout_key needs data.holdout_value (one value or a list)")
    _require(not (d.train_key is not None and d.train_value is None),
             "data.train_key needs data.train_value")
    _require(not (d.train_value is not None and d.train_key is None),
             "data.train_value needs data.train_key")
    _require(math.isfinite(d.path_end_weight) and d.path_end_weight > 0,
             f"data.path_end_weight must be a positive number, got {d.path_end_weight!r}")
    p = d.energy_size_exponent
    _require(math.isfinite(p) and 0 <= p <= 2,
             f"data.energy_size_exponent must be a number from 0 to 2, got {p!r}")
    for name in ("energy_weights", "forces_weights"):
        w = getattr(d, name)
        numbers = isinstance(w, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in w.values())
        _require(numbers and all(math.isfinite(v) and v >= 0 for v in w.values()),
                 f"data.{name} must map tags to numbers >= 0, got {w!r}")
        _require(not (w and d.weight_key is None),
                 f"data.{name} needs data.weight_key (the info key holding the tags)")
    _require(not (d.path_end_weight != 1.0 and d.path_key is None),
             "data.path_end_weight needs data.path_key (the info key naming each path)")


LOSSES = ("mse", "huber")


def _check_training(t: TrainingConfig, cfg: TrainConfig) -> None:
    positive = {"epochs": t.epochs, "batch_size": t.batch_size, "lr": t.lr}
    for key, value in positive.items():
        _require(value > 0 and math.isfinite(value), f"training.{key} must be > 0, got {value}")
    for key in ("weight_decay", "warmup_steps", "clip_grad", "energy_weight", "forces_weight",
                "stress_weight", "checkpoint_every"):
        value = getattr(t, key)
        _require(math.isfinite(value) and value >= 0, f"training.{key} must be >= 0, got {value}")
    _require(t.loss in LOSSES, f"training.loss must be one of {list(LOSSES)}, got {t.loss!r}")
    _require(math.isfinite(t.huber_delta) and t.huber_delta > 0,
             f"training.huber_delta must be > 0, got {t.huber_delta}")
    _require(0 <= t.min_lr_ratio <= 1,
             f"training.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}")
    _require(0 <= t.ema_decay < 1, f"training.ema_decay must be in [0, 1), got {t.ema_decay}")
    _require(t.dtype in ("float32", "float64"),
             f"training.dtype must be float32 or float64, got {t.dtype!r}")
    _require(t.num_threads is None or t.num_threads >= 1,
             f"training.num_threads must be >= 1 (or unset: OMP_NUM_THREADS), got {t.num_threads}")
    _require(t.max_steps is None or t.max_steps >= 1,
             f"training.max_steps must be >= 1, got {t.max_steps}")
    _require(t.max_minutes is None or t.max_minutes > 0,
             f"training.max_minutes must be > 0, got {t.max_minutes}")
    _require(bool(re.fullmatch(r"cpu|cuda(:\d+)?|mps|auto", t.device)),
             f"training.device must be cpu, cuda, cuda:N or mps, got {t.device!r}")
    from ..data.neighbors import NEIGHBOR_BACKENDS

    backends = sorted(NEIGHBOR_BACKENDS) + ["auto"]
    _require(t.neighbor_backend in backends,
             f"training.neighbor_backend must be one of {backends}, got {t.neighbor_backend!r}")
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


def apply_settings(raw: dict, settings: dict) -> dict:
    """A config dict with ``{"training.lr": 1e-4, ...}`` settings applied (dotted keys name a
    section's key; a key without a dot is a top-level one). Returns a new dict."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (raw or {}).items()}
    for key, value in settings.items():
        section, dot, name = key.partition(".")
        if not dot:
            raw[key] = value
            continue
        if section not in (*_SECTIONS, "model"):
            raise ValueError(f"--set {key}: unknown section {section!r}; sections: "
                             f"{sorted((*_SECTIONS, 'model'))}")
        if not name or "." in name:
            raise ValueError(f"--set {key}: expected SECTION.KEY, e.g. training.lr")
        sub = raw.get(section)
        raw[section] = {**(sub if isinstance(sub, dict) else {}), name: value}
    return raw


class _Yaml12Loader:
    """A yaml SafeLoader that reads 2e-4 and 1E5 as numbers (YAML 1.2), not as text."""

    _cls = None

    @classmethod
    def get(cls):
        if cls._cls is None:
            import yaml

            loader = type("Yaml12SafeLoader", (yaml.SafeLoader,), {})
            loader.add_implicit_resolver(
                "tag:yaml.org,2002:float",
                re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.[\d_]*)?[eE][-+]?\d+$"),
                list("-+0123456789."))
            cls._cls = loader
        return cls._cls


def read_config_file(path: str | Path) -> dict:
    """The raw dict of a YAML config file (numbers as YAML 1.2 reads them)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}")
    try:
        with open(path) as fh:
            return yaml.load(fh, Loader=_Yaml12Loader.get()) or {}
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())[:200]
        raise ValueError(f"cannot read {path} as YAML: {first}") from None


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


def load_train_config(path: str | Path, settings: dict | None = None) -> TrainConfig:
    """Read and validate a YAML config; ``settings`` ({"training.lr": 1e-4, ...}, as the
    command line's --set) override its values before validation."""
    path = Path(path)
    raw = read_config_file(path)
    if settings:
        raw = apply_settings(raw, settings)
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
    replay = dataclasses.replace(cfg.replay, file=rel(cfg.replay.file))
    return dataclasses.replace(cfg, data=data, replay=replay)
