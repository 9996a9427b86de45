"""Relabel a finished data set with another labeller, resumably, chunk by chunk.

    python scripts/datagen/relabel.py data/catalysis-v1/frames.extxyz.xz \
        --labeller 7net-l3i5 --out data/relabel-7net-l3i5          # run or continue
    python scripts/datagen/relabel.py data/catalysis-v1/frames.extxyz.xz \
        --labeller 7net-l3i5 --out data/relabel-7net-l3i5 --merge data/catalysis-v2/frames.extxyz.xz

Same structures and tags, new energies, forces and (3-D periodic cells) stresses; `source`
becomes the new labeller's name. Frames are taken in fixed chunks (`--chunk`, default 250);
each finished chunk is written atomically as `chunk-NNNN.extxyz.xz`, so a killed run loses
at most the chunk in progress and the next run skips finished chunks. The chunks are small
enough to commit, so another session can continue. `--merge` checks that every chunk is
there, concatenates them in order and writes `summary.json` beside the chunks: the new
labels' shift from the old ones per frame kind (energy per atom, force MAE). Frames whose new
max |F| exceeds 10 eV/Å are kept (the trainer's `max_force` drops them).
Run it in the labeller environment (sevenn; ../shared/DATA.md), not the package's.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from ase.io import read

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labeller import Labeller, atomic_write_bytes, frames_to_text, snapshot  # noqa: E402


def read_xyz(path: Path) -> list:
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "rt") as fd:
        return read(io.StringIO(fd.read()), index=":", format="extxyz")


def write_xz(path: Path, frames: list) -> None:
    """Frames as xz-compressed extxyz, written atomically."""
    atomic_write_bytes(str(path), lzma.compress(frames_to_text(frames).encode()))


def chunk_path(out: Path, i: int) -> Path:
    return out / f"chunk-{i:04d}.extxyz.xz"


def relabel(frames: list, lab: Labeller, out: Path, chunk: int) -> None:
    n_chunks = (len(frames) + chunk - 1) // chunk
    todo = [i for i in range(n_chunks) if not chunk_path(out, i).exists()]
    print(
        f"{len(frames)} frames in {n_chunks} chunks of {chunk}; {n_chunks - len(todo)} done, "
        f"{len(todo)} to do",
        flush=True,
    )
    t0, done = time.time(), 0
    for i in todo:
        new = []
        for a in frames[i * chunk : (i + 1) * chunk]:
            info = {k: v for k, v in a.info.items() if k not in ("energy", "free_energy", "stress")}
            info["source"] = lab.name
            new.append(snapshot(a, lab.label(a), **info))
        write_xz(chunk_path(out, i), new)
        done += len(new)
        rate = (time.time() - t0) / done
        left = sum(min(chunk, len(frames) - j * chunk) for j in todo[todo.index(i) + 1 :])
        print(
            f"chunk {i + 1}/{n_chunks} written; {rate:.2f} s/frame, about "
            f"{left * rate / 60:.0f} min left",
            flush=True,
        )


def merge(frames: list, out: Path, chunk: int, target: Path, labeller: str) -> None:
    n_chunks = (len(frames) + chunk - 1) // chunk
    missing = [i for i in range(n_chunks) if not chunk_path(out, i).exists()]
    if missing:
        raise SystemExit(
            f"cannot merge: {len(missing)} chunks missing (first: {missing[0]}); "
            "run without --merge to finish them"
        )
    new = [a for i in range(n_chunks) for a in read_xyz(chunk_path(out, i))]
    if len(new) != len(frames):
        raise SystemExit(
            f"chunks hold {len(new)} frames, the source {len(frames)}: "
            "was --chunk changed between runs?"
        )
    shift = defaultdict(lambda: {"de": [], "df": []})
    for a, b in zip(frames, new, strict=True):
        # frames from elsewhere than generate.py (a distillation's) have no config_id, and
        # snapshot() gives the relabelled copy generate.py's default tags
        if not np.allclose(a.positions, b.positions) or (
            "config_id" in a.info and a.info["config_id"] != b.info.get("config_id")
        ):
            raise SystemExit(f"frame order differs at config {a.info.get('config_id')}")
        if a.calc is None:  # an unlabelled source (structures to label): no shift to report
            continue
        de = (b.get_potential_energy() - a.get_potential_energy()) / len(a)
        df = float(np.abs(b.get_forces() - a.get_forces()).mean())
        for key in ("all", f"kind:{a.info.get('kind')}"):
            shift[key]["de"].append(de)
            shift[key]["df"].append(df)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_xz(target, new)
    summary = {
        "labeller": labeller,
        "source_file": str(target),
        "n_frames": len(new),
        "shift_new_minus_old": {
            k: {
                "n": len(v["de"]),
                "energy_mean_meV_atom": 1000 * float(np.mean(v["de"])),
                "energy_std_meV_atom": 1000 * float(np.std(v["de"])),
                "forces_mae_meV_A": 1000 * float(np.mean(v["df"])),
            }
            for k, v in sorted(shift.items())
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["shift_new_minus_old"].get("all", "unlabelled source: no shift")),
          f"-> {target}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "frames", type=Path, help="labelled extxyz(.xz) whose structures are relabelled"
    )
    ap.add_argument("--labeller", required=True, help="a SevenNet checkpoint name, e.g. 7net-l3i5")
    ap.add_argument("--out", type=Path, required=True, help="folder for the chunks")
    ap.add_argument("--chunk", type=int, default=250)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--merge",
        type=Path,
        default=None,
        metavar="FILE",
        help="write all chunks as one file (after every chunk is done)",
    )
    args = ap.parse_args(argv)
    frames = read_xyz(args.frames)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        merge(frames, args.out, args.chunk, args.merge, args.labeller)
    else:
        relabel(frames, Labeller(args.labeller, threads=args.threads), args.out, args.chunk)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
