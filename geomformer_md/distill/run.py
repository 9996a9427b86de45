"""Active-learning distillation: a committee learns a teacher where it is least sure.

Iteration 0 labels ``initial_frames`` random rattled structures of the space and trains
K members. Each later iteration:

    explore  start structures from the space, run MD / relaxations / rattles with the
             current committee, keep snapshots with their force uncertainty
    select   the most uncertain snapshots (or random ones), at most max_per_trajectory per
             trajectory, within the frames_per_iteration budget
    label    the teacher labels them; failures are logged and skipped, never stored
    train    every member continues from its last weights on all data so far
    evaluate the committee on the fixed validation set, per category; one CSV row

Everything lives in ``out_dir``. Each phase writes its result atomically and is skipped
when it exists; labelling stores one file per frame and training resumes from its
checkpoint, so a run killed at any point continues where it stopped, and (all randomness
being seeded per iteration and phase) ends with the same data and models as a run that
was never interrupted. A re-run with a different config in the same out_dir is refused.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read

from ..io.checkpoint import load_any, save_committee
from ..io.files import atomic_open, copy_file, remove_stale_temporaries, write_frames, write_json
from .config import DistillConfig, distill_config_from_dict, load_distill_config
from .evaluate import category_of, committee_errors, plot_progress, summarise
from .explore import explore_structure, select_frames
from .space import KIND_CATEGORY, Space, matches, rule_name
from .space_config import frame_tags
from .teacher import Teacher

# Each iteration's committee gets flag thresholds that catch this fraction of the validation
# frames (outside the hold-out rules) with a force error above 0.3 eV/Å: issue 23's target.
CALIBRATION_CATCH = 0.8


def _read_frames(path: Path) -> list[Atoms]:
    return read(path, index=":", format="extxyz") if path.stat().st_size else []


def _atomic_json(path: Path, obj) -> None:
    write_json(path, obj, default=float)


class DistillRun:
    """One distillation run in ``cfg.out_dir`` (see the module docstring)."""

    def __init__(self, cfg: DistillConfig, log=print, progress: bool = True) -> None:
        self.cfg, self.progress = cfg, progress
        self.out = Path(cfg.out_dir)
        self._log = log
        self._check_out_dir()
        stale = remove_stale_temporaries(self.out)
        if stale:  # a kill between an atomic write's temporary and its rename
            self.log(f"removed {len(stale)} unfinished temporary file(s) of a killed run")
        elements = set(cfg.space.elements)
        for a in cfg.space.all_adsorbates:
            elements |= set(Atoms(_formula_atoms(a.formula)).get_chemical_symbols())
        self.elements = sorted(elements)
        self._check_model_elements()
        self.teacher = Teacher(**{"max_force": 50.0, **cfg.teacher},
                               log_path=self.out / "teacher.log")
        try:
            self.teacher.check_elements(self.elements)
            self._record_teacher()
        except BaseException:
            self.teacher.close()
            raise

    # ------------------------------------------------------------------ setup
    def log(self, msg: str) -> None:
        self._log(msg)
        with open(self.out / "log.txt", "a") as fh:
            fh.write(time.strftime("%Y-%m-%d %H:%M:%S ") + msg + "\n")

    def _check_out_dir(self) -> None:
        """Continue a run only if it was started with this config (iterations may grow)."""
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "config.json"
        mine = self.cfg.to_dict()
        if path.is_file():
            # keys added to the config since the run started compare as their defaults
            stored = _with_defaults(json.loads(path.read_text()),
                                    json.loads(json.dumps(DistillConfig().to_dict(), default=str)))
            diff = sorted(k for k in set(mine) | set(stored)
                          if k not in ("iterations", "workers", "teacher_record")
                          and json.dumps(mine.get(k), default=str)
                          != json.dumps(stored.get(k), default=str))
            if diff:
                raise ValueError(
                    f"{self.out} holds a distillation run with a different config (differs in "
                    f"{', '.join(diff)}): use a new out_dir, or delete {self.out} to start over")
        else:
            _atomic_json(path, json.loads(json.dumps(mine, default=str)))

    def _record_teacher(self) -> None:
        """Store what labels (teacher.record(): versions, settings) in config.json; refuse
        to continue a run whose labels came from other versions of the teacher."""
        path = self.out / "config.json"
        stored = json.loads(path.read_text())
        mine = json.loads(json.dumps(self.teacher.record(), default=str))
        before = stored.get("teacher_record")
        if before is None:
            stored["teacher_record"] = mine
            _atomic_json(path, stored)
        elif before.get("versions") != mine["versions"]:
            was = ", ".join(f"{k} {v}" for k, v in before.get("versions", {}).items())
            raise ValueError(
                f"{self.out} was labelled by {was}; the teacher now runs {self.teacher.version}: "
                f"labels of two versions would mix in one run; use a new out_dir (or restore "
                f"the teacher's environment)")
        self.log(f"teacher {self.teacher.name}: {self.teacher.version}"
                 + (f" (in {self.teacher.python})" if self.teacher.python else ""))

    def close(self) -> None:
        """Stop the teacher's process (a teacher run with teacher.python)."""
        self.teacher.close()

    def _check_model_elements(self) -> None:
        if not self.cfg.init_from:
            return
        base = load_any(_resolve(self.cfg.init_from))
        from ase.data import chemical_symbols

        known = {chemical_symbols[z] for z in base.config.species}
        missing = sorted(set(self.elements) - known)
        if missing:
            raise ValueError(f"init_from {self.cfg.init_from} does not know element(s) {missing} "
                             f"of the space; it knows {sorted(known)}")

    def lattice_constants(self) -> dict[str, float]:
        path = self.out / "lattice_constants.json"
        if path.is_file():
            return json.loads(path.read_text())
        a0 = {}
        for el in self.cfg.space.elements:
            given = self.cfg.lattice_constants.get(el)
            a0[el] = float(given) if given else self.teacher.lattice_constant(el)
        _atomic_json(path, a0)
        self.log("fcc lattice constants (Å): " + ", ".join(f"{k} {v:.3f}" for k, v in a0.items()))
        return a0

    def rng(self, *stream: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, *stream])

    # ------------------------------------------------------------------ labelling
    def label_all(self, frames: list[Atoms], folder: Path, desc: str) -> list[Atoms]:
        """Label frames one file each (resumable); failures go to failures.csv, and the
        structure the teacher failed on, unlabelled, to ``NNNNN.failed.extxyz`` for inspection
        (never to the data)."""
        from ..simulate._progress import progress_bar

        folder.mkdir(parents=True, exist_ok=True)
        done = []
        bar = progress_bar(len(frames), desc, enabled=self.progress, unit="frame")
        for k, atoms in enumerate(frames):
            ok, bad = folder / f"{k:05d}.extxyz", folder / f"{k:05d}.failed"
            if not ok.exists() and not bad.exists():
                t0 = time.perf_counter()
                labelled, why = self.teacher.label(atoms)
                self._record_time(desc, k, atoms, time.perf_counter() - t0, why is None)
                if labelled is None:
                    failed = atoms.copy()
                    failed.calc = None
                    failed.info["teacher_failure"] = why
                    write_frames(folder / f"{k:05d}.failed.extxyz", [failed])
                    bad.write_text(why)  # last: marks the frame done
                    with open(self.out / "failures.csv", "a", newline="") as fh:
                        csv.writer(fh).writerow([desc, k, atoms.get_chemical_formula(), why])
                    self.log(f"{desc}: teacher failed on frame {k} "
                             f"({atoms.get_chemical_formula()}): {why}; skipped")
                else:
                    write_frames(ok, [labelled])
            if ok.exists():
                done.extend(_read_frames(ok))
            bar.update(1)
        bar.close()
        return done

    def _record_time(self, desc: str, k: int, atoms: Atoms, seconds: float, ok: bool) -> None:
        """One row of teacher_times.csv: the cost of each teacher call, by category."""
        path = self.out / "teacher_times.csv"
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(["phase", "frame", "category", "n_atoms", "seconds", "ok"])
            w.writerow([desc, k, category_of(atoms), len(atoms), f"{seconds:.3f}", int(ok)])

    # ------------------------------------------------------------------ phases
    def validation_set(self, space: Space) -> list[Atoms]:
        path = self.out / "validation.extxyz"
        if path.exists():
            return _read_frames(path)
        rng, frames = self.rng(0, 1), []
        n, rules = self.cfg.validation_per_category, space.cfg.holdout
        for atoms in _validation_structures(space, n, self.cfg.validation_every_kind,
                                            self.cfg.seed):
            frames.append(_rattled(atoms, rng, self.cfg.rattle))
        for r, rule in enumerate(rules):  # held-out structures are only ever validation
            for atoms in space.sample(self.rng(0, 2, r), n, rule=rule):
                atoms.info["holdout"] = rule_name(rule)
                frames.append(_rattled(atoms, rng, self.cfg.rattle))
        labelled = self.label_all(frames, self.out / "validation", "label validation")
        write_frames(path, labelled)
        return labelled

    def initial_data(self, space: Space) -> Path:
        path = self.out / "data" / "iter_000.extxyz"
        if not path.exists():
            rng = self.rng(0, 3)
            frames = [_rattled(a, rng, self.cfg.rattle)
                      for a in space.sample(rng, self.cfg.initial_frames)]
            labelled = self.label_all(frames, self.out / "iter_000" / "label", "label initial")
            path.parent.mkdir(exist_ok=True)
            write_frames(path, labelled)
        return path

    def extra_data(self) -> Path | None:
        """The frames of ``extra_data`` that every member trains on: checked to come from
        this run's teacher, held-out structures dropped; written once (data/extra.extxyz)."""
        if not self.cfg.extra_data:
            return None
        path = self.out / "data" / "extra.extxyz"
        if path.exists():
            return path
        from ..train.data import read_frames

        kept, dropped = [], 0
        for file in self.cfg.extra_data:
            for i, atoms in enumerate(read_frames(file)):
                who = atoms.info.get("teacher", atoms.info.get("source"))
                if str(who) != self.teacher.name:
                    who = who or "an unnamed teacher"
                    raise ValueError(
                        f"extra_data {file}: frame {i} was labelled by {who} (info teacher or "
                        f"source), not by this run's teacher {self.teacher.name}: never mix "
                        f"labellers in one data set")
                if any(matches(frame_tags(atoms), rule) for rule in self.cfg.space.holdout):
                    dropped += 1
                else:
                    kept.append(atoms)
        path.parent.mkdir(exist_ok=True)
        write_frames(path, kept)
        self.log(f"extra_data: {len(kept)} frames from {len(self.cfg.extra_data)} file(s); "
                 f"{dropped} dropped by the hold-out rules")
        return path

    def explore(self, it: int, space: Space, committee) -> list[Atoms]:
        path = self.out / f"iter_{it:03d}" / "candidates.extxyz"
        if path.exists():
            return _read_frames(path)
        from ..simulate._progress import progress_bar

        t0 = time.perf_counter()
        starts = space.sample(self.rng(it, 4), self.cfg.structures_per_iteration)
        jobs = [(k, atoms, self.cfg.explore[k % len(self.cfg.explore)], [self.cfg.seed, it, 5, k])
                for k, atoms in enumerate(starts)]
        bar = progress_bar(len(starts), f"explore {it}", enabled=self.progress, unit="structure")
        found = {}
        for k, frames in _explore_jobs(jobs, committee, self.cfg,
                                       self.out / f"iter_{it - 1:03d}" / "committee.pt"):
            found[k] = frames
            bar.update(1)
        bar.close()
        candidates = [a for k in sorted(found) for a in found[k]]
        took = time.perf_counter() - t0
        self.log(f"iteration {it}: explored {len(starts)} structures, {len(candidates)} "
                 f"candidates in {took:.0f} s ({took / max(1, len(candidates)):.2f} s each)")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_frames(path, candidates)
        # what was stored (positions rounded by extxyz), so that a resumed run, which reads
        # the file, labels exactly the same structures
        return _read_frames(path)

    def train_members(self, it: int, data_files: list[Path]) -> list[Path]:
        """Train (iteration 0) or continue (later) every member; returns model files.

        Members are independent (own data sample, seed and folder), so with ``workers`` > 1
        they train in that many processes at once, with the same results."""
        data = [_read_frames(p) for p in data_files]
        paths, jobs = [], []
        for k in range(self.cfg.committee_size):
            folder = self.out / f"iter_{it:03d}" / f"member_{k}"
            model = folder / "model.pt"
            paths.append(model)
            if model.exists():
                continue
            folder.mkdir(parents=True, exist_ok=True)
            train_file = folder / "train.extxyz"
            if not train_file.exists():
                write_frames(train_file, self._member_frames(it, k, data))
            previous = self._start_model(it, k)
            settings = dict(self.cfg.training)
            if it > 0 and not self.cfg.retrain:
                settings.update(self.cfg.finetune)
            settings.setdefault("num_threads", 1)
            settings["seed"] = self.cfg.seed * 1000 + 10 * it + k
            extra = self.extra_data()
            config = {
                "out_dir": str(folder), "init_from": str(previous) if previous else None,
                "refit_e0": ("present" if self.cfg.refit_e0 and previous == self._base_member(k)
                             else "none"),
                "data": {"train_file": str(train_file), "val_fraction": 0.0,
                         "test_fraction": 0.0, "max_force": self.teacher.max_force,
                         "extra_train_files": [str(extra)] if extra else []},
                "model": {} if previous else {**self.cfg.model, "species": self._species()},
                "training": settings,
            }
            if previous:  # no pseudo-label replay: members continue on all teacher data
                config["replay"] = {"frames": 0}
            n_train = sum(1 for _ in _read_frames(train_file))
            self.log(f"iteration {it}: training member {k} on {n_train} frames"
                     f"{' (bootstrap)' if self.cfg.bootstrap else ''}"
                     f"{f' from {previous}' if previous else ' from scratch'}")
            jobs.append((k, config))
        for k, seconds in _train_jobs(jobs, self.cfg.workers):
            self.log(f"iteration {it}: member {k} trained in {seconds:.0f} s")
        return paths

    def _member_frames(self, it: int, k: int, data: list[list[Atoms]]) -> list[Atoms]:
        """Member k's training frames at iteration it: all data, or (finetune_frames) this
        iteration's frames plus a sample of the earlier ones; then its bootstrap resample."""
        frames = [a for part in data for a in part]
        cap = self.cfg.finetune_frames
        if it > 0 and not self.cfg.retrain and cap and len(frames) > cap:
            new, old = data[-1], [a for part in data[:-1] for a in part]
            n_old = max(0, cap - len(new))
            pick = self.rng(it, 9, k).choice(len(old), n_old, replace=False)
            frames = [old[i] for i in np.sort(pick)] + new
        if self.cfg.bootstrap:
            idx = self.rng(it, 6, k).integers(0, len(frames), len(frames))
            frames = [frames[i] for i in np.sort(idx)]
        return frames

    def _species(self) -> list[int]:
        from ase.data import atomic_numbers

        return sorted(atomic_numbers[e] for e in self.elements)

    def _base_member(self, k: int) -> Path | None:
        """Starting model of member k from init_from (None = new model)."""
        if not self.cfg.init_from:
            return None
        base = load_any(_resolve(self.cfg.init_from))
        path = self.out / "init" / f"member_{k}.pt"
        if not path.exists():
            from ..committee import Committee
            from ..io.checkpoint import save_model

            one = base.members[k % len(base)] if isinstance(base, Committee) else base
            save_model(one, path, getattr(one, "metadata", {}))
        return path

    def _start_model(self, it: int, k: int) -> Path | None:
        if it == 0 or self.cfg.retrain:
            return self._base_member(k)
        return self.out / f"iter_{it - 1:03d}" / f"member_{k}" / "model.pt"

    def committee(self, it: int, member_files: list[Path]):
        from ..committee import Committee
        from ..io.checkpoint import load_model

        path = self.out / f"iter_{it:03d}" / "committee.pt"
        if not path.exists():
            committee = Committee([load_model(p) for p in member_files],
                                  {"distill_iteration": it, "teacher": self.teacher.name,
                                   "config": self.cfg.to_dict()})
            save_committee(committee, path, json.loads(json.dumps(committee.metadata, default=str)))
        return load_any(path)

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict:
        start = time.time()
        space = Space(self.cfg.space, self.lattice_constants())
        self.extra_data()  # checked before the teacher spends time on anything
        validation = self.validation_set(space)
        self.log(f"validation: {len(validation)} frames in categories "
                 f"{sorted({category_of(a) for a in validation})}")
        data = [self.initial_data(space)]
        rows = self._rows()
        for it in range(self.cfg.iterations + 1):
            t0 = time.time()
            added, failed, unc = None, 0, {}
            if it > 0:
                path = self.out / "data" / f"iter_{it:03d}.extxyz"
                if not path.exists():
                    committee = self.committee(it - 1, self._members(it - 1))
                    candidates = self.explore(it, space, committee)
                    selected = select_frames(candidates, self.cfg, self.rng(it, 7))
                    labelled = self.label_all(selected, self.out / f"iter_{it:03d}" / "label",
                                              f"label {it}")
                    failed = len(selected) - len(labelled)
                    write_frames(path, labelled)
                data.append(path)
                added = len(_read_frames(path))
                if not any(r["iteration"] == it for r in rows):  # only what its row needs:
                    # a finished iteration resumes without its candidates (not archived)
                    cands = _read_frames(self.out / f"iter_{it:03d}" / "candidates.extxyz")
                    unc = _uncertainty_summary(cands, _read_frames(path))
            label_dir = self.out / f"iter_{it:03d}" / "label"
            failed = failed or sum(1 for _ in label_dir.glob("*.failed"))
            if any(r["iteration"] == it + 1 for r in rows):
                # a later iteration is finished: nothing after it reads this one's members
                # or committee, so an archive of the run needs only its newest members
                continue
            members = self.train_members(it, data)
            committee = self.committee(it, members)
            if any(r["iteration"] == it for r in rows):
                continue
            scores = self.evaluate(it, committee, validation)
            row = {"iteration": it, "frames_total": sum(len(_read_frames(p)) for p in data),
                   "frames_added": added if added is not None else len(_read_frames(data[0])),
                   "teacher_failures": failed, **unc, **scores,
                   "wall_s": round(time.time() - t0, 1)}
            rows.append(row)
            self._write_rows(rows)
            self.log(f"iteration {it}: " + ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        final = self.out / "committee.pt"
        copy_file(self.out / f"iter_{self.cfg.iterations:03d}" / "committee.pt", final)
        plot_progress(rows, self.out / "progress.png")
        self.log(f"done in {time.time() - start:.0f} s: committee {final}, "
                 f"progress {self.out / 'progress.csv'}, plot {self.out / 'progress.png'}")
        return {"committee": str(final), "rows": rows}

    def evaluate(self, it: int, committee, validation: list[Atoms]) -> dict:
        """Errors and calibration of the committee of iteration ``it`` on the validation set.

        The flag's thresholds are calibrated on the validation frames outside the hold-out
        rules (per element, to catch CALIBRATION_CATCH of the frames with a large force error;
        geomformer_md/uncertainty.py) and stored in the iteration's committee file, so that
        ``uncertainty_threshold="auto"`` uses them; the row reports how they transfer to the
        held-out categories. Exploration never reads them: the run does not depend on them.
        """
        from ..uncertainty import calibrate, flag_stats, is_held_out, limit_from_metadata

        rows = committee_errors(committee, validation)
        scores = summarise(rows)
        inside = [r for r in rows if not is_held_out(r["category"])]
        try:
            meta = calibrate(inside, catch=CALIBRATION_CATCH)
        except ValueError as exc:  # too few large errors left to calibrate on: say so
            self.log(f"iteration {it}: flag thresholds not calibrated ({exc})")
            return scores
        limit = limit_from_metadata(meta)
        outside = [r for r in rows if is_held_out(r["category"])]
        scores["flag_threshold"] = meta["force_std_threshold"]
        for name, part in (("", inside), ("_heldout", outside)):
            if part:
                stats = flag_stats(part, limit)
                scores[f"caught_calibrated{name}"] = stats["caught"]
                scores[f"false_alarms{name}"] = stats["false_alarms"]
        path = self.out / f"iter_{it:03d}" / "committee.pt"
        committee.metadata.update(meta)
        save_committee(committee, path, json.loads(json.dumps(committee.metadata, default=str)))
        return scores

    def _members(self, it: int) -> list[Path]:
        return [self.out / f"iter_{it:03d}" / f"member_{k}" / "model.pt"
                for k in range(self.cfg.committee_size)]

    def _rows(self) -> list[dict]:
        path = self.out / "progress.json"
        return json.loads(path.read_text()) if path.exists() else []

    def _write_rows(self, rows: list[dict]) -> None:
        _atomic_json(self.out / "progress.json", rows)
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with atomic_open(self.out / "progress.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in fields})


def _explore_one(committee, job, cfg) -> list[Atoms]:
    """The candidates of one starting structure, with a calculator of its own (a shared
    one would carry neighbour-list state from the structure before into the last bits)."""
    from ..calculator import GeoMFormerCalculator

    k, atoms, mode, seed = job
    calc = GeoMFormerCalculator(committee, uncertainty_threshold=None)
    driver = None
    if (mode == "md" and cfg.md_driver == "member") or mode == "minimize":
        driver = GeoMFormerCalculator(committee.members[k % len(committee.members)])
    return explore_structure(atoms, calc, mode, cfg, np.random.default_rng(seed), trajectory=k,
                             driver=driver)


_WORKER_COMMITTEE = None


def _explore_init(committee_file: str) -> None:
    global _WORKER_COMMITTEE
    import torch

    _die_with_parent()
    torch.set_num_threads(1)
    _WORKER_COMMITTEE = load_any(committee_file)


def _explore_in_worker(job, cfg) -> tuple[int, list[Atoms]]:
    return job[0], _explore_one(_WORKER_COMMITTEE, job, cfg)


def _explore_jobs(jobs: list, committee, cfg, committee_file: Path):
    """Yield (structure, candidates) as explorations finish, in ``cfg.workers`` processes
    (each loads the committee from its file); any order, the same candidates."""
    if cfg.workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield job[0], _explore_one(committee, job, cfg)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(min(cfg.workers, len(jobs)), mp_context=mp.get_context("spawn"),
                             initializer=_explore_init, initargs=(str(committee_file),)) as pool:
        for future in as_completed([pool.submit(_explore_in_worker, job, cfg) for job in jobs]):
            yield future.result()


def _train_one(config: dict) -> float:
    from ..train import train

    t0 = time.perf_counter()
    train(config, resume=True, progress=False, log=lambda m: None)
    return time.perf_counter() - t0


def _die_with_parent() -> None:
    """A training worker stops when the run is killed (Linux: PR_SET_PDEATHSIG), so a
    resumed run never trains a member beside an orphan writing the same checkpoints."""
    import signal

    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _train_jobs(jobs: list[tuple[int, dict]], workers: int):
    """Yield (member, seconds) as the training jobs finish, in ``workers`` processes."""
    if workers <= 1 or len(jobs) <= 1:
        for k, config in jobs:
            yield k, _train_one(config)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("spawn"),
                             initializer=_die_with_parent) as pool:
        futures = {pool.submit(_train_one, config): k for k, config in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _uncertainty_summary(candidates: list[Atoms], selected: list[Atoms]) -> dict:
    u = np.array([a.info.get("force_std_max", np.nan) for a in candidates], float)
    s = np.array([a.info.get("force_std_max", np.nan) for a in selected], float)
    if not len(u):
        return {}
    return {"candidates": len(u), "unc_median": float(np.nanmedian(u)),
            "unc_p90": float(np.nanpercentile(u, 90)), "unc_max": float(np.nanmax(u)),
            "unc_selected_min": float(np.nanmin(s)) if len(s) else float("nan")}


def _rattled(atoms: Atoms, rng, amount: float) -> Atoms:
    out = atoms.copy()
    sigma = rng.uniform(0.2, 1.0) * amount / 2
    free = np.ones(len(out), bool)
    for c in out.constraints:
        free[c.get_indices()] = False
    out.positions[free] += rng.normal(0, sigma, (int(free.sum()), 3))
    out.info["mode"] = "rattle"
    return out


def _kinds_in_category(space: Space, kind: str) -> int:
    mine = KIND_CATEGORY.get(kind, kind)
    return sum(1 for k, _ in space.kinds if KIND_CATEGORY.get(k, k) == mine)


def _validation_structures(space: Space, n: int, every_kind: bool, seed: int) -> list[Atoms]:
    """The validation structures outside the hold-out rules: every kind, about n per
    category (every_kind), or exactly n per category, kinds drawn at random without
    replacement (again, with new random draws, when a category has fewer kinds than n or
    its kinds are held out)."""
    def build(k: int, rep: int) -> Atoms | None:
        kind, args = space.kinds[k]
        atoms = space.build(kind, args, np.random.default_rng([seed, 1, k, rep]))
        return None if any(matches(atoms.info, r) for r in space.cfg.holdout) else atoms

    if every_kind:
        built = (build(k, rep) for k, (kind, _) in enumerate(space.kinds)
                 for rep in range(max(1, round(n / _kinds_in_category(space, kind)))))
        return [a for a in built if a is not None]
    by_category: dict[str, list[int]] = {}
    for k, (kind, _) in enumerate(space.kinds):
        by_category.setdefault(KIND_CATEGORY.get(kind, kind), []).append(k)
    out, rng = [], np.random.default_rng([seed, 8])
    for cat in sorted(by_category):
        kinds = [by_category[cat][i] for i in rng.permutation(len(by_category[cat]))]
        mine = []
        for i in range(50 * n):
            if len(mine) == n:
                break
            atoms = build(kinds[i % len(kinds)], i // len(kinds))
            if atoms is not None:
                mine.append(atoms)
        out += mine
    return out


def _with_defaults(stored, default):
    """``stored`` with the keys it lacks taken from ``default``, in nested mappings too."""
    if not isinstance(stored, dict) or not isinstance(default, dict):
        return stored
    return {**default, **{k: _with_defaults(v, default.get(k)) for k, v in stored.items()}}


def _formula_atoms(formula: str) -> Atoms:
    from .space import adsorbate_molecule

    return adsorbate_molecule(formula)[1]


def _resolve(name: str) -> str:
    from ..io.registry import resolve_potential

    return str(resolve_potential(name))


def distill(config, log=print, progress: bool = True) -> dict:
    """Run (or continue) an active-learning distillation from a DistillConfig, a dict or
    a YAML path; returns {"committee": path, "rows": per-iteration metrics}."""
    if isinstance(config, (str, Path)):
        config = load_distill_config(config)
    elif isinstance(config, dict):
        config = distill_config_from_dict(config)
    run = DistillRun(config, log=log, progress=progress)
    try:
        return run.run()
    finally:
        run.close()


