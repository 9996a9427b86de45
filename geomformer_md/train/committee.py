"""A committee around a trained potential: short fine-tunes of it with other seeds.

The recipe of the shipped ``geomformer-catalysis-v11-committee`` (docs/committee.md): the
potential itself is member 0; members 1..K-1 continue from it for a short time (one epoch by
default) on the same data and recipe, each with its own training seed (data order) and
split seed (a different share of the pool in training). Their mean is as accurate as the
potential; their spread grows away from the data. Cheaper than K trainings from scratch, and
measured to rank errors better than successive versions of a potential.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..committee import Committee
from ..io.checkpoint import load_model, save_committee
from .config import load_train_config
from .trainer import train


def _last_stage(training: dict) -> dict:
    """The settings a training config ended with: with a stage two (``stage_two_*``), its
    loss weights and its learning rate, held; else the settings themselves. The fine-tunes
    of a committee continue from the finished potential, so they train as it last did (a
    one-epoch run of a 16-epoch config's first stage would pull every member off the energy
    stage, and the committee's mean off the potential)."""
    if training.get("stage_two_epoch") is None:
        return training
    last = dict(training)
    for term in ("energy", "forces", "stress"):
        weight = last[f"stage_two_{term}_weight"]
        if weight is not None:
            last[f"{term}_weight"] = weight
        last[f"stage_two_{term}_weight"] = None
    last.update(lr=last["stage_two_lr"], min_lr_ratio=1.0, stage_two_epoch=None,
                stage_two_lr=None)
    return last


def finetune_committee(config: str | Path, members: int, output: str | Path,
                       base: str | Path | None = None, work_dir: str | Path | None = None,
                       epochs: int = 1, log: Callable[[str], None] = print,
                       progress: bool = True) -> Committee:
    """Build a committee of ``members`` models around ``base`` (default: the model the training
    config ``config`` wrote, its out_dir/model.pt) and write it to ``output``.

    Member k >= 1 is ``base`` fine-tuned for ``epochs`` epochs with the config's data and
    training settings (those of its stage two where it has one), training.seed and
    data.split_seed raised by k, in
    ``work_dir/member_k`` (default: the config's out_dir + "-committee"); a killed run
    resumes member by member. Returns the committee."""
    if members < 2:
        raise ValueError(f"members must be at least 2 (the base and one fine-tune), got {members}")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    config = Path(config)
    raw = load_train_config(config).to_dict()  # checked, data paths resolved as train reads them
    out_dir = Path(raw["out_dir"])
    if base is None:
        base = out_dir / "model.pt"
        if not Path(base).is_file():
            raise FileNotFoundError(f"{base} does not exist: train {config} first, or give the "
                                    f"potential to build the committee around as base")
    from ..io.registry import load_potential

    base_model = load_potential(str(base))
    if isinstance(base_model, Committee):
        raise ValueError(f"base {base} is a committee; give the single potential to build one "
                         f"around")
    work = Path(work_dir) if work_dir is not None else Path(f"{out_dir}-committee")
    training, data = _last_stage(raw["training"]), raw["data"]
    if training is not raw["training"]:
        log(f"the training ended in a stage two: the fine-tunes use its settings (lr "
            f"{training['lr']:g} held, loss weights energy {training['energy_weight']:g}, "
            f"forces {training['forces_weight']:g}, stress {training['stress_weight']:g})")
    seed, split_seed = training["seed"], data["split_seed"]
    models = [base_model]
    for k in range(1, members):
        member = {key: value for key, value in raw.items() if key != "model"}  # base's own
        member.update(out_dir=str(work / f"member_{k}"), init_from=str(base), refit_e0=False,
                      replay={"frames": 0},  # the base's own data: nothing to protect
                      training={**training, "epochs": epochs, "seed": seed + k},
                      data={**data, "split_seed": split_seed + k})
        log(f"committee member {k} of {members - 1}: {epochs} epoch(s) from {base}, training "
            f"seed {seed + k}, split seed {split_seed + k}, in {work / f'member_{k}'}")
        train(member, resume=True, progress=progress, log=log)
        models.append(load_model(str(work / f"member_{k}" / "model.pt")))
    committee = Committee(models, {"recipe": f"{base} and {members - 1} fine-tunes of "
                                             f"{epochs} epoch(s) with other seeds",
                                   "config": str(config), "base": str(base)})
    save_committee(committee, output)
    log(f"wrote {output}: {members} members")
    return committee

