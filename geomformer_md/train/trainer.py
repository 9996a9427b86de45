"""The training loop: AdamW, warm-up + cosine, clipping, EMA, atomic checkpoints, resume, DDP.

Reproducibility contract: the data order of epoch e is a permutation seeded by
(seed, e), and nothing else draws random numbers, so a run killed at any point
and resumed from its last checkpoint replays exactly the same steps. Under
``torchrun`` every global batch is split across ranks (rank r takes items
r, r + W, ...) and the loss is normalised by global counts, so W processes
train the same model as one process with the same global batch.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..io.checkpoint import atomic_save, save_model
from ..io.files import atomic_open, remove_stale_temporaries
from ..model import GeoMFormer, GeoMFormerConfig, init_summary
from ..potential import Potential, model_with_dtype
from .config import TrainConfig
from .data import (
    Batch,
    collate_samples,
    describe,
    fit_e0,
    make_samples,
    read_frames,
    split_indices,
    weight_by_size,
    weight_by_tag,
    weight_path_ends,
)
from .finetune import Replay, freeze_parameters, refit_reference_energies
from .metrics import ErrorSums, final_report, totals, zero_force_atoms, zero_force_message

CHECKPOINT = "checkpoint.pt"
_EXISTS = "{} exists: pass resume (--resume) to continue it, or use a new out_dir"
METRIC_FIELDS = [
    "epoch", "step", "lr", "train_loss", "val_energy_mae_meV_atom",
    "val_forces_mae_meV_A", "val_stress_mae_meV_A3", "elapsed_s",
]
# With replay: the errors on the replay frames, i.e. how far the model has moved from the
# starting model on its old domain (0 in the epoch-0 row).
REPLAY_FIELDS = ["replay_energy_mae_meV_atom", "replay_forces_mae_meV_A"]


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _maybe_init_distributed(device: str) -> bool:
    """Join a torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        return True
    return False


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to min_ratio at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of parameters (decay warmed up as in TF's EMA)."""

    def __init__(self, params, decay: float) -> None:
        self.params = list(params)
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        # Two multi-tensor kernels on a GPU instead of two per parameter (~200 launches a
        # step, which bound a GPU training step); the same arithmetic as s * d + p (1 - d).
        # Frozen parameters are skipped: s * d + s * (1 - d) is not s in floating point.
        pairs = [(s, p.detach()) for s, p in zip(self.shadow, self.params, strict=True)
                 if p.requires_grad]
        shadow, live = [s for s, _ in pairs], [p for _, p in pairs]
        torch._foreach_mul_(shadow, d)
        torch._foreach_add_(shadow, live, alpha=1 - d)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange live and averaged weights (call twice to undo)."""
        for s, p in zip(self.shadow, self.params, strict=True):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)

    def state_dict(self) -> dict:
        return {"shadow": [s.clone() for s in self.shadow], "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        for s, v in zip(self.shadow, state["shadow"], strict=True):
            s.copy_(v)
        self.updates = int(state["updates"])


# Model keys a fine-tune (init_from) may change: the short-range prior has no parameters, so
# a potential trained without it can be fine-tuned onto it (model: {zbl: true}).
PRIOR_KEYS = ("zbl", "zbl_inner", "zbl_outer")


def with_prior(model: GeoMFormer, keys: dict, source: str) -> GeoMFormer:
    """The fine-tuning start ``model`` with the model-section ``keys`` of the training config
    applied. Only the short-range prior (PRIOR_KEYS) may change; any other key must equal the
    loaded model's value (it is not silently ignored)."""
    current = model.config.to_dict()
    changed = {k: v for k, v in keys.items() if k != "dtype" and current.get(k) != v}
    fixed = sorted(k for k in changed if k not in PRIOR_KEYS)
    if fixed:
        raise ValueError(
            f"model.{fixed[0]} = {changed[fixed[0]]!r} differs from the model being fine-tuned "
            f"({source}: {current[fixed[0]]!r}); with init_from only {', '.join(PRIOR_KEYS)} can "
            "change (remove the other model keys)")
    if not changed:
        return model
    new = GeoMFormer(dataclasses.replace(model.config, **changed))
    new.load_state_dict(model.state_dict())
    new.metadata = dict(getattr(model, "metadata", {}))
    return new.train(model.training)


def pointwise_loss(x: torch.Tensor, loss: str = "mse", delta: float = 0.01) -> torch.Tensor:
    """The loss of each error: x^2 ("mse"), or for "huber" x^2 inside ``delta`` and
    2 delta |x| - delta^2 beyond (continuous with its slope; TrainingConfig)."""
    if loss == "mse":
        return x**2
    return 2.0 * torch.nn.functional.huber_loss(x, torch.zeros_like(x), reduction="none",
                                                delta=delta)


def batch_errors(out: dict, batch: Batch, loss: str = "mse",
                 delta: float = 0.01) -> dict[str, torch.Tensor]:
    """Per-quantity sums of loss terms (``pointwise_loss``) and absolute errors, and counts.

    The loss terms carry the batch's per-structure weights (energy weights on the energy
    term, replay weights on every term); the absolute errors do not (the metrics, defined
    in train/metrics.py).
    """
    w = batch.weight.to(out["energy"].dtype)
    de = (out["energy"] - batch.energy) / batch.n_atoms
    df = out["forces"] - batch.forces
    w_atom = w.index_select(0, batch.graph.system_idx).unsqueeze(-1)
    res = {
        "e_sq": (batch.energy_weight.to(de.dtype) * w * pointwise_loss(de, loss, delta)).sum(),
        "e_abs": de.abs().sum(), "e_n": torch.tensor(float(de.numel())),
        "f_sq": (w_atom * batch.forces_weight.to(df.dtype).unsqueeze(-1)
                 * pointwise_loss(df, loss, delta)).sum(),
        "f_abs": df.abs().sum(),
        "f_n": torch.tensor(float(df.numel())),
    }
    if "stress" in out and bool(batch.has_stress.any()):
        ds = (out["stress"] - batch.stress)[batch.has_stress]
        ws = w[batch.has_stress].view(-1, 1, 1)
        res.update(s_sq=(ws * pointwise_loss(ds, loss, delta)).sum(), s_abs=ds.abs().sum(),
                   s_n=torch.tensor(float(ds.numel())))
    else:
        zero = out["energy"].new_zeros(())
        res.update(s_sq=zero, s_abs=zero.detach(), s_n=torch.tensor(0.0))
    return res


class Trainer:
    """Train a GeoMFormer potential from a TrainConfig. See ``train()`` for the entry point.

    ``resume`` (True / False) lets the checks that need it (an existing checkpoint without
    resume) fail before any data is read; None leaves them to ``run()``.
    """

    def __init__(self, cfg: TrainConfig, log=print, progress: bool = True,
                 resume: bool | None = None) -> None:
        self.cfg = cfg
        self.tcfg = cfg.training
        self.out = Path(cfg.out_dir)
        self.progress = progress
        self.distributed = _maybe_init_distributed(self.tcfg.device)
        self.rank, self.world = _dist_info()
        self.log = log if self.rank == 0 else (lambda *a, **k: None)
        if self.tcfg.num_threads:
            torch.set_num_threads(self.tcfg.num_threads)
        torch.manual_seed(self.tcfg.seed)
        self.device = torch.device(self.tcfg.device)
        self._start_time, self._elapsed_before = None, 0.0  # see _elapsed
        self._preflight(resume)
        self._setup()

    # ------------------------------------------------------------------ setup
    def _preflight(self, resume: bool | None) -> None:
        """What can fail without reading the data fails here, before it is read."""
        ckpt = self.out / CHECKPOINT
        if resume is False and ckpt.exists():
            raise FileExistsError(_EXISTS.format(ckpt))
        d = self.cfg.data
        files = [("data.train_file", d.train_file), ("data.test_file", d.test_file),
                 ("replay.file", self.cfg.replay.file if self.cfg.init_from else None)]
        files += [("data.extra_train_files", p) for p in d.extra_train_files]
        for key, path in files:
            if path is not None and not Path(path).exists():
                raise FileNotFoundError(f"{key}: no such file: {path}")

    def _load_starting_model(self) -> GeoMFormer:
        from ..io.registry import load_potential

        model = load_potential(self.cfg.init_from)
        model = with_prior(model, self.cfg.model, self.cfg.init_from)
        self.log(f"fine-tuning from {self.cfg.init_from}: {init_summary(model)}")
        model = model_with_dtype(model, self.tcfg.dtype).train()
        if self.tcfg.freeze:
            frozen = freeze_parameters(model, self.tcfg.freeze)
            n = sum(p.numel() for name, p in model.named_parameters() if name in frozen)
            self.log(f"frozen: {len(frozen)} tensors, {n} of {model.n_parameters()} parameters "
                     f"({', '.join(self.tcfg.freeze)})")
        return model

    def _samples(self, frames, idx, name: str) -> list:
        data = self.cfg.data
        chosen = [frames[k] for k in idx]
        mcfg = self.model.config
        out, dropped = make_samples(chosen, mcfg.cutoff, mcfg.species, name,
                                    data.max_force, self.tcfg.neighbor_backend)
        idx = list(idx)
        for s in out:
            s.frame = int(idx[s.frame])  # make_samples numbers the frames it was given
        if dropped:
            self.log(f"{name}: dropped {dropped} frames with |F| > {data.max_force} eV/Å")
        flagged = [(s.frame, int(zero_force_atoms(s.forces.numpy()).sum())) for s in out]
        flagged = [(k, n) for k, n in flagged if n]
        if flagged:
            self.log("warning: " + zero_force_message(len(flagged), f"frame {flagged[0][0]}",
                                                      flagged[0][1], name))
        return out

    def _kept(self, frames: list, path) -> list:
        """The frames of one file that no ``data.exclude`` rule matches."""
        rules = self.cfg.data.exclude
        if not rules:
            return frames
        from ..distill.space_config import frame_tags, matches

        kept = [a for a in frames if not any(matches(frame_tags(a), r) for r in rules)]
        if len(kept) < len(frames):
            self.log(f"data.exclude: {len(frames) - len(kept)} of {len(frames)} frames of "
                     f"{path} dropped")
        return kept

    def _test_frames(self, path) -> list:
        """The frames of ``data.test_file``. Those an exclude rule matches are what transfer is
        measured on: with ``data.category_key`` they stay, as their rule's own category
        ("heldout:facet=311"); without it they are dropped (the totals stay in-domain).

        A frame several rules match goes to the first of them, unless its ``holdout`` info
        names one of them: a distillation's validation frames carry the rule they were
        sampled for (an NH3 adsorbate on a Cu-Ni slab, sampled for the NHx rule), so the
        categories here count the same frames as the run's own progress table."""
        data = self.cfg.data
        frames = read_frames(path)
        if not data.exclude or not data.category_key:
            return self._kept(frames, path)
        from ..distill.space_config import frame_tags, matches, rule_name

        moved = 0
        for a in frames:
            names = [rule_name(r) for r in data.exclude if matches(frame_tags(a), r)]
            if names:
                own = a.info.get("holdout")
                a.info[data.category_key] = own if own in names else names[0]
                moved += 1
        if moved:
            self.log(f"data.exclude: {moved} of {len(frames)} frames of {path} match a rule; "
                     f"tested as the rule's own category (heldout:...)")
        return frames

    def _setup(self) -> None:
        data = self.cfg.data
        start = self._load_starting_model() if self.cfg.init_from else None
        frames = self._kept(read_frames(data.train_file), data.train_file)
        extra = {path: self._kept(read_frames(path), path) for path in data.extra_train_files}
        every = frames + [a for more in extra.values() for a in more]
        species = sorted({int(z) for a in every for z in a.get_atomic_numbers()})
        if start is None:
            mcfg = dict(self.cfg.model)
            mcfg.setdefault("species", species)
            mcfg["dtype"] = self.tcfg.dtype
            start = GeoMFormer(GeoMFormerConfig(**mcfg))
        self.model = start.to(self.device)
        tr, va, te = split_indices(frames, data)

        self.train_set = self._samples(frames, tr, data.train_file)
        n_ends = weight_path_ends(self.train_set, data)
        for path, more in extra.items():  # train-only: never part of the split
            more_samples = self._samples(more, range(len(more)), path)
            n_ends += weight_path_ends(more_samples, data)
            self.train_set += more_samples
        if n_ends:
            self.log(f"energy weight x{data.path_end_weight:g} on the last frame of {n_ends} paths")
        if data.energy_size_exponent:
            weight_by_size(self.train_set, data.energy_size_exponent)
            w = [s.energy_weight for s in self.train_set]
            self.log(f"energy weights by size (N^{data.energy_size_exponent:g}, mean 1): "
                     f"{min(w):.3g} to {max(w):.3g}")
        for tag, n in weight_by_tag(self.train_set, data).items():
            w_e, w_f = data.energy_weights.get(tag, 1.0), data.forces_weights.get(tag, 1.0)
            self.log(f"{n} training frames with {data.weight_key} = {tag}: energy weight "
                     f"x{w_e:g}, forces weight x{w_f:g}")
        self.val_set = self._samples(frames, va, data.train_file)
        self.test_set = self._samples(frames, te, data.train_file)
        if data.test_file:
            test_frames = self._test_frames(data.test_file)
            self.test_set += self._samples(test_frames, range(len(test_frames)), data.test_file)
        if not self.train_set:
            raise ValueError("no training structures left after the split")
        self._set_energy_reference()
        self.replay, self.replay_set, self.replay_epoch = None, [], 0
        r = self.cfg.replay
        if self.cfg.init_from and r.frames and r.weight:
            self.replay = Replay(self.model, self.cfg, self.train_set, self.device, self.log)
            self.replay_set = self.replay.samples(0)
            self.log(self.replay.describe(self.replay_set))
            if not self.replay_set:
                self.log("warning: replay is on but no replay structure is left: the new data "
                         "covers the starting model's domain")
        elif self.cfg.init_from:
            self.log("replay: off")
        self.n_new = len(self.train_set)  # new-data frames first, then this epoch's replay
        self.train_set += self.replay_set
        self.log(f"train: {describe(self.train_set)}"
                 + (f" ({len(self.replay_set)} replay)" if self.replay_set else "")
                 + f"; val: {describe(self.val_set)}; test: {describe(self.test_set)}")
        # The model as training starts (after the reference-energy refit): the epoch-0 row
        # and the "before" overlays of the final report are computed with it.
        self.initial_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.potential = Potential(self.model)
        self.module = self.potential
        if self.distributed:
            # The energy head's last weight is (1, d): its gradient comes out with strides (1, 1)
            # instead of (d, 1). Both describe the same memory, so DDP's warning about it is noise.
            import warnings

            warnings.filterwarnings("ignore",
                                    message="Grad strides do not match bucket view strides")
            # Only a direct-force (vector) head is left untouched by an energy loss; asking DDP to
            # look for unused parameters otherwise makes every rank warn that it found none.
            self.module = torch.nn.parallel.DistributedDataParallel(
                self.potential, find_unused_parameters=bool(self.model.config.vector_head))
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=self.tcfg.lr,
                                           weight_decay=self.tcfg.weight_decay)
        self.ema = EMA(self.model.parameters(), self.tcfg.ema_decay)
        self.steps_per_epoch = math.ceil(len(self.train_set) / self.tcfg.batch_size)
        self.total_steps = self.tcfg.epochs * self.steps_per_epoch
        # With a stage two, the cosine of stage one ends where stage two starts.
        self.stage_two_step = (None if self.tcfg.stage_two_epoch is None
                               else (self.tcfg.stage_two_epoch - 1) * self.steps_per_epoch)
        self.step = 0
        self.history: list[dict] = []
        self.metric_fields = list(METRIC_FIELDS) + (REPLAY_FIELDS if self.replay_set else [])
        for cat in self._categories(self.val_set):
            self.metric_fields += [f"val_{q}[{cat}]" for q in ("energy_mae_meV_atom",
                                                                "forces_mae_meV_A")]
        self.log(init_summary(self.model))

    def _categories(self, samples) -> list[str]:
        key = self.cfg.data.category_key
        return sorted({_category(s, key) for s in samples}) if key else []

    @contextlib.contextmanager
    def _eval_mode(self):
        """The model in eval mode (no dropout) for labels and references, then back."""
        was = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was)

    def _set_energy_reference(self) -> None:
        """E0 by least squares, and the energy scale from the force RMS (as MACE); when
        fine-tuning, the refit chosen by refit_e0 (train/finetune.py)."""
        model, species = self.model, self.model.config.species
        if self.cfg.init_from:
            with self._eval_mode():
                self.e0_report = refit_reference_energies(model, self.train_set, self.cfg.refit_e0,
                                                          self.device, self.log)
            return
        e0 = fit_e0(self.train_set, species)
        with torch.no_grad():
            f = torch.cat([s.forces for s in self.train_set])
            model.energy_scale.fill_(max(float(f.pow(2).mean().sqrt()), 1e-3))
            model.e0.copy_(torch.as_tensor(e0))
        from ase.data import chemical_symbols

        self.e0_report = {chemical_symbols[z]: {"new": float(e)}
                          for z, e in zip(species, e0, strict=True)}
        self.log("E0 (eV): " + ", ".join(
            f"{chemical_symbols[z]} {e:.4f}" for z, e in zip(species, e0, strict=True)))

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_state(self, epoch: int, step_in_epoch: int) -> dict:
        return {
            "format": "geomformer-md-train-checkpoint-1",
            "config": self.cfg.to_dict(),
            "model_config": self.model.config.to_dict(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict(),
            "step": self.step,
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "history": self.history,
            # training time up to this state, so that metrics.csv's elapsed_s keeps counting
            # across --resume (time after the last checkpoint of a killed run is not counted)
            "elapsed_s": self._elapsed(),
        }

    def _elapsed(self) -> float:
        """Seconds of training in this run and in the runs it resumed."""
        run = time.time() - self._start_time if self._start_time is not None else 0.0
        return self._elapsed_before + run

    def save_checkpoint(self, epoch: int, step_in_epoch: int) -> None:
        if self.rank == 0:
            atomic_save(self._checkpoint_state(epoch, step_in_epoch), self.out / CHECKPOINT)
        if self.distributed:
            dist.barrier()

    def load_checkpoint(self) -> tuple[int, int]:
        path = self.out / CHECKPOINT
        state = torch.load(path, map_location=self.device, weights_only=True)
        # Compared as configs: a checkpoint written before a config key existed has no entry for
        # it, and from_dict gives the key its behaviour-preserving value.
        if GeoMFormerConfig.from_dict(state.get("model_config") or {}) != self.model.config:
            raise ValueError(f"{path} was written for a different model config; use a new out_dir")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        self._elapsed_before = float(state.get("elapsed_s", 0.0))  # absent in older checkpoints
        self.log(f"resumed from {path} at epoch {state['epoch']}, step {self.step}")
        return int(state["epoch"]), int(state["step_in_epoch"])

    def _write_metrics(self) -> None:
        if self.rank != 0:
            return
        with atomic_open(self.out / "metrics.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.metric_fields)
            w.writeheader()
            for row in self.history:
                w.writerow({k: row.get(k, "") for k in self.metric_fields})

    # ------------------------------------------------------------------ steps
    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.tcfg.seed, epoch]).permutation(len(self.train_set))

    def in_stage_two(self, step: int | None = None) -> bool:
        step = self.step if step is None else step
        return self.stage_two_step is not None and step >= self.stage_two_step

    def loss_weights(self, step: int | None = None) -> tuple[float, float, float]:
        """(energy, forces, stress) weights at ``step`` (default: the current step)."""
        t = self.tcfg
        w = (t.energy_weight, t.forces_weight, t.stress_weight)
        if self.in_stage_two(step):
            two = (t.stage_two_energy_weight, t.stage_two_forces_weight, t.stage_two_stress_weight)
            w = tuple(b if b is not None else a for a, b in zip(w, two, strict=True))
        return w

    def learning_rate(self) -> float:
        t = self.tcfg
        if self.in_stage_two():
            return t.stage_two_lr
        total = self.total_steps if self.stage_two_step is None else self.stage_two_step
        return t.lr * lr_factor(self.step, total, t.warmup_steps, t.min_lr_ratio)

    def _train_step(self, items: list[int]) -> float:
        t = self.tcfg
        w_e, w_f, w_s = self.loss_weights()
        local, weight = items[self.rank :: self.world], 1.0
        if not local:
            # A last batch with fewer items than ranks: DDP needs every rank's backward in the
            # gradient all-reduce, so this rank runs a stand-in item with weight 0.
            local, weight = items[:1], 0.0
        batch = collate_samples([self.train_set[k] for k in local]).to(self.device)
        want_stress = bool(batch.has_stress.any()) and w_s > 0
        out = self.module(batch.graph, forces=True, stress=want_stress, create_graph=True)
        err = {k: v * weight
               for k, v in batch_errors(out, batch, t.loss, t.huber_delta).items()}
        counts = torch.stack([err["e_n"], err["f_n"], err["s_n"]]).to(self.device)
        if self.distributed:
            dist.all_reduce(counts)
        counts = counts.clamp(min=1.0)
        loss = (
            w_e * err["e_sq"] / counts[0]
            + w_f * err["f_sq"] / counts[1]
            + w_s * err["s_sq"] / counts[2]
        )
        self.optimizer.zero_grad(set_to_none=True)
        (loss * self.world).backward()  # DDP averages gradients over ranks
        if t.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_grad)
        for g in self.optimizer.param_groups:
            g["lr"] = self.learning_rate()
        self.optimizer.step()
        self.ema.update()
        self.step += 1
        value = loss.detach()
        if self.distributed:
            dist.all_reduce(value)
        return float(value)

    def evaluate(self, samples, batch_size: int | None = None, collect: bool = False) -> dict:
        """MAEs (meV/atom, meV/Å, meV/Å^3; train/metrics.py) with the current weights, on every
        rank: the totals, ``categories`` (by data.category_key) and, with ``collect``, the
        predictions for parity plots (``pairs``)."""
        sums = ErrorSums()
        key = self.cfg.data.category_key
        pairs = {"energy": [], "n_atoms": [], "numbers": [], "forces": []}
        bs = batch_size or max(1, self.tcfg.batch_size)
        for start in range(0, len(samples), bs):
            chunk = samples[start : start + bs]
            batch = collate_samples(chunk).to(self.device)
            want_stress = bool(batch.has_stress.any())
            out = self.potential(batch.graph, forces=True, stress=want_stress)
            energy = out["energy"].detach().double().cpu().numpy()
            forces = out["forces"].detach().double().cpu().numpy()
            stress = out["stress"].detach().double().cpu().numpy() if want_stress else None
            first = 0
            for k, s in enumerate(chunk):
                f = forces[first : first + s.n_atoms]
                first += s.n_atoms
                has = s.stress is not None
                sums.add(energy[k], s.energy, s.n_atoms, f, s.forces.numpy(),
                         stress[k] if has else None, s.stress.numpy() if has else None,
                         category=_category(s, key) if key else None)
                if collect:
                    pairs["energy"].append((s.energy, energy[k]))
                    pairs["n_atoms"].append(s.n_atoms)
                    pairs["numbers"].append(s.graph.numbers.numpy())
                    pairs["forces"].append(np.stack([s.forces.numpy().ravel(), f.ravel()], 1))
        res = {**sums.summary(), "n_structures": len(samples)}
        if key:
            res["categories"] = sums.by_category()
        if collect and samples:
            res["pairs"] = {"energy": np.array(pairs["energy"]),
                            "n_atoms": np.array(pairs["n_atoms"]), "numbers": pairs["numbers"],
                            "forces": np.concatenate(pairs["forces"])}
        return res

    @contextlib.contextmanager
    def _initial_weights(self):
        """The model with the weights training started from (restored afterwards)."""
        now = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.initial_state)
        try:
            yield
        finally:
            self.model.load_state_dict(now)

    # ------------------------------------------------------------------ main loop
    def run(self, resume: bool = False) -> dict:
        """Train to the end (or to max_steps / max_minutes); returns final metrics."""
        t, start_time = self.tcfg, time.time()
        self._start_time = start_time
        self.out.mkdir(parents=True, exist_ok=True)
        ckpt = self.out / CHECKPOINT
        if ckpt.exists() and not resume:
            raise FileExistsError(_EXISTS.format(ckpt))
        if self.rank == 0 and remove_stale_temporaries(self.out):  # left by a kill
            self.log(f"{self.out}: removed unfinished temporary files of a killed run")
        epoch, skip = (self.load_checkpoint() if resume and ckpt.exists() else (0, 0))
        if self.rank == 0:
            with open(self.out / "config.json", "w") as fh:
                json.dump(self.cfg.to_dict(), fh, indent=2)
        # The epoch-0 row: the starting model, before any step (a checkpoint without it, from a
        # version that did not write it, must not get the resumed weights' row labelled 0).
        if not self.history and epoch == 0 and skip == 0:
            self._metrics_row(0, [], 0.0)
        stopped = False
        while epoch < t.epochs and not stopped:
            self._use_replay(epoch)
            order = self._epoch_order(epoch)
            if t.stage_two_epoch == epoch + 1 and skip == 0:
                w_e, w_f, w_s = self.loss_weights(self.stage_two_step)
                self.log(f"stage two from epoch {epoch + 1}: lr {t.stage_two_lr:g}, loss weights "
                         f"energy {w_e:g}, forces {w_f:g}, stress {w_s:g}")
            bar = self._bar(epoch, skip)
            losses = []
            for b in range(skip, self.steps_per_epoch):
                items = order[b * t.batch_size : (b + 1) * t.batch_size].tolist()
                losses.append(self._train_step(items))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.4g}")
                out_of_budget = (t.max_steps is not None and self.step >= t.max_steps) or (
                    t.max_minutes is not None and time.time() - start_time > 60 * t.max_minutes
                )
                if out_of_budget and b + 1 < self.steps_per_epoch:
                    self.save_checkpoint(epoch, b + 1)
                    stopped = True
                    break
                due = t.checkpoint_every and self.step % t.checkpoint_every == 0
                if due and b + 1 < self.steps_per_epoch:
                    self.save_checkpoint(epoch, b + 1)
            if bar is not None:
                bar.close()
            if stopped:
                break
            epoch, skip = epoch + 1, 0
            self._end_of_epoch(epoch, losses, self._elapsed())
            if out_of_budget:
                stopped = epoch < t.epochs
        if stopped:
            self.log(f"stopped at step {self.step} (budget); continue with --resume")
            return {"complete": False, "step": self.step}
        return self.finish()

    def _use_replay(self, epoch: int) -> None:
        """Put epoch ``epoch``'s replay frames (0-based) into the training set."""
        if self.replay is None or not self.cfg.replay.resample or epoch == self.replay_epoch:
            return
        self.replay_set = self.replay.samples(epoch)
        self.train_set[self.n_new :] = self.replay_set
        self.replay_epoch = epoch

    def _bar(self, epoch: int, skip: int):
        if not self.progress or self.rank != 0:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.steps_per_epoch, initial=skip,
                    desc=f"epoch {epoch + 1}/{self.tcfg.epochs}",
                    leave=False, dynamic_ncols=True)

    def _end_of_epoch(self, epoch: int, losses: list[float], elapsed: float) -> None:
        self._metrics_row(epoch, losses, elapsed)
        self.save_checkpoint(epoch, 0)

    def _metrics_row(self, epoch: int, losses: list[float], elapsed: float) -> None:
        """Evaluate (EMA weights) and append one row to metrics.csv."""
        self.ema.swap()
        val = self.evaluate(self.val_set) if self.val_set else {}
        replay = self.evaluate(self.replay_set) if self.replay_set else {}
        self.ema.swap()
        row = {
            "epoch": epoch, "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"] if epoch else self.learning_rate(),
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "val_energy_mae_meV_atom": val.get("energy_mae_meV_atom", float("nan")),
            "val_forces_mae_meV_A": val.get("forces_mae_meV_A", float("nan")),
            "val_stress_mae_meV_A3": val.get("stress_mae_meV_A3", float("nan")),
            "elapsed_s": elapsed,
        }
        if replay:
            row["replay_energy_mae_meV_atom"] = replay["energy_mae_meV_atom"]
            row["replay_forces_mae_meV_A"] = replay["forces_mae_meV_A"]
        for cat, v in val.get("categories", {}).items():
            row[f"val_energy_mae_meV_atom[{cat}]"] = v["energy_mae_meV_atom"]
            row[f"val_forces_mae_meV_A[{cat}]"] = v["forces_mae_meV_A"]
        self.history.append(row)
        extra = (f" | replay E {row['replay_energy_mae_meV_atom']:.2f} "
                 f"F {row['replay_forces_mae_meV_A']:.1f}" if replay else "")
        self.log(
            f"epoch {epoch:4d} step {self.step:6d} loss {row['train_loss']:.4g} | val E "
            f"{row['val_energy_mae_meV_atom']:.2f} meV/atom  "
            f"F {row['val_forces_mae_meV_A']:.1f} meV/Å  "
            f"S {row['val_stress_mae_meV_A3']:.2f} meV/Å³{extra}"
            + ("  (starting model)" if epoch == 0 else "")
        )
        self._write_metrics()

    def finish(self) -> dict:
        """Write the EMA model, test metrics (final and starting model, per category) and parity
        plots of val and test with the starting model overlaid."""
        self.ema.swap()
        final = {name: self.evaluate(samples, collect=True) if samples else {}
                 for name, samples in (("val", self.val_set), ("test", self.test_set))}
        if self.replay_set:
            final["replay"] = self.evaluate(self.replay_set)
        with self._initial_weights():
            start = {name: self.evaluate(samples, collect=True) if samples else {}
                     for name, samples in (("val", self.val_set), ("test", self.test_set))}
        metrics = {
            "test": totals(final["test"]),
            "val": totals(final["val"]),
            "start": {name: totals(v) for name, v in start.items()},
            "steps": self.step,
            "n_parameters": self.model.n_parameters(),
            "reference_energies": self.e0_report,
        }
        if "replay" in final:
            metrics["replay"] = totals(final["replay"])
        for name in ("val", "test"):
            if "categories" in final[name]:
                metrics[f"{name}_categories"] = final[name]["categories"]
                metrics["start"][f"{name}_categories"] = start[name]["categories"]
        if self.rank == 0:
            meta = {
                "training_config": self.cfg.to_dict(),
                "metrics": metrics,
                "train_file": self.cfg.data.train_file,
            }
            save_model(self.model, self.out / "model.pt", meta)
            with open(self.out / "test_metrics.json", "w") as fh:
                json.dump(metrics, fh, indent=2)
            from .plots import parity_plots

            for name, path in (("test", "parity.png"), ("val", "parity-val.png")):
                if "pairs" in final[name]:
                    parity_plots(final[name]["pairs"], self.out / path, final[name],
                                 start=start[name].get("pairs"), start_metrics=start[name],
                                 title=name)
            self.log(final_report(metrics))
            self.log(f"model written to {self.out / 'model.pt'}")
        self.ema.swap()
        if self.distributed:
            dist.barrier()
        return {"complete": True, **metrics}


def _category(sample, key: str) -> str:
    value = sample.info.get(key)
    return "(none)" if value is None else str(value)


def train(config, resume: bool = False, progress: bool = True, log=print,
          settings: dict | None = None) -> dict:
    """Train from a TrainConfig, a dict or a YAML path. Returns the final metrics.

    ``settings`` ({"training.lr": 1e-4, ...}) override a dict's or a file's values; every
    check that can fail without the data (config keys and types, the starting model, files,
    an existing checkpoint without ``resume``) fails before the data is read.
    """
    from .config import TrainConfig, apply_settings, load_train_config, train_config_from_dict

    if isinstance(config, (str, Path)):
        config = load_train_config(config, settings)
    elif isinstance(config, dict):
        config = train_config_from_dict(apply_settings(config, settings or {}))
    elif not isinstance(config, TrainConfig):
        raise TypeError("config must be a TrainConfig, a dict or a path to a YAML file")
    elif settings:
        config = train_config_from_dict(apply_settings(config.to_dict(), settings))
    return Trainer(config, log=log, progress=progress, resume=resume).run(resume=resume)


def export_checkpoint(checkpoint: str | Path, model_path: str | Path,
                      use_ema: bool = True) -> GeoMFormer:
    """Write a model file from a training checkpoint (EMA weights by default).

    Lets a run that is still going, or was stopped, be evaluated or shipped as is.
    ``checkpoint`` is the file or the run's out_dir holding checkpoint.pt.
    """
    path = Path(checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no training checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"cannot read {path} as a training checkpoint ({type(exc).__name__})") from None
    kind = str(state.get("format", "")) if isinstance(state, dict) else ""
    if not kind.startswith("geomformer-md-train-checkpoint"):
        raise ValueError(f"{path} is not a geomformer-md training checkpoint (a model file is "
                         f"already exported: use it as it is)")
    model = GeoMFormer(GeoMFormerConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    if use_ema:
        with torch.no_grad():
            for p, s in zip(model.parameters(), state["ema"]["shadow"], strict=True):
                p.copy_(s)
    meta = {"training_config": state["config"], "exported_from": str(path), "step": state["step"],
            "epoch": state["epoch"], "history": state["history"], "ema": use_ema}
    save_model(model, model_path, meta)
    return model
