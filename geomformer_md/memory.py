"""How much memory a force call needs, and how much there is: a call that cannot fit is
refused with one line (needed vs available) before it starts, instead of failing deep in
torch's allocator (or being killed by the kernel's OOM killer).

The need is measured, not modelled: a small calibration structure is run once per model
(config, dtype, device, lean or not) and what autograd keeps for backward is counted per
attention edge (neighbour pairs plus one self edge per atom: cost and memory grow with
those, see docs/batching.md). On CUDA the peak of that run is read directly.
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms

from .data.graph import AtomGraph, atoms_to_graph
from .model.attention import tally_saved
from .potential import Potential

# Peak resident memory of a CPU force call relative to what autograd keeps for backward,
# measured with benchmarks/bench_memory.py on Cu supercells of 500-4000 atoms (default
# potential): 1.05 for the plain graph (the backward frees about what it allocates) and
# 1.4-1.8 for the lean one (its per-range gradients and recomputed gathers are then a
# larger share). Rounded up, plus a fixed CALL_OVERHEAD (conversion, neighbour list,
# allocator): the estimate guards calls, so it errs on the safe side (it is 1.2-1.4x the
# measured peak from 500 to 4000 atoms).
PEAK_FACTOR = {False: 1.3, True: 2.0}
CALL_OVERHEAD = 64 * 2**20
_BYTES_PER_EDGE: dict[tuple, float] = {}  # per (config, device, lean)
SMALL_CALL_BYTES = 256 * 2**20  # calls estimated below this are not checked


class InsufficientMemoryError(MemoryError):
    """A call was refused because its estimated memory exceeds what is available."""


def available_memory(device: torch.device | str) -> int:
    """Bytes that can still be allocated on ``device``.

    CUDA: free device memory plus what torch's caching allocator holds unused.
    CPU: the smaller of MemAvailable (psutil if installed, else /proc/meminfo, else a
    conservative 4 GiB) and the room left under this process's cgroup memory limit
    (a batch job's allocation), where there is one.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    avail = None
    try:
        import psutil

        avail = int(psutil.virtual_memory().available)
    except ImportError:
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        avail = int(line.split()[1]) * 1024
        except OSError:
            pass
    avail = 4 << 30 if avail is None else avail
    room = _cgroup_room()
    return avail if room is None else min(avail, room)


# (limit, usage) files of cgroup v2 and v1, the first readable pair is used
CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def process_memory_mb(field: str) -> float:
    """A memory field of this process from /proc/self/status (Linux), MiB: "VmRSS" (resident
    now), "VmHWM" (its peak; writing "5" to /proc/self/clear_refs resets it to VmRSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _cgroup_room() -> int | None:
    """Bytes left under the cgroup memory limit (v2 or v1), None without a limit."""
    for limit_file, usage_file in CGROUP_FILES:
        try:
            with open(limit_file) as fh:
                limit = fh.read().strip()
            with open(usage_file) as fh:
                usage = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:
            return None  # no limit (v1 writes "unlimited" as ~2^63)
        return max(0, int(limit) - usage)
    return None


def _calibration_graph(cutoff: float, species, device: torch.device) -> AtomGraph:
    """A small dense periodic structure (simple cubic, 2.2 Å, 27 atoms) of the model's
    elements: ~30 neighbours per atom at 4.5 Å, denser than most real structures."""
    n = 3
    grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3) * 2.2
    numbers = [species[k % len(species)] for k in range(len(grid))]
    atoms = Atoms(numbers=numbers, positions=grid, cell=np.eye(3) * 2.2 * n, pbc=True)
    return atoms_to_graph(atoms, cutoff, "torch" if device.type == "cuda" else "matscipy",
                          device=device)


def _measure(potential: Potential, device: torch.device) -> float:
    """Peak bytes of one force + stress call per attention edge."""
    cfg = potential.model.config
    graph = _calibration_graph(cfg.cutoff, cfg.species, device)
    n_edges = graph.n_edges + graph.n_atoms
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with torch.enable_grad():
            out = potential(graph, forces=True, stress=True)
        del out
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / n_edges
    # The CPU has no peak counter: count what autograd keeps for backward.
    params = {p.untyped_storage().data_ptr() for p in potential.parameters()}
    saved: dict[int, int] = {}

    def record(t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()

    with torch.enable_grad(), tally_saved(record):
        potential(graph, forces=True, stress=True)
    return PEAK_FACTOR[potential.lean] * sum(saved.values()) / n_edges


def bytes_per_edge(potential: Potential) -> float:
    """Peak bytes of a force + stress call per attention edge, measured once per model
    config, device and backward mode; an eager measurement also serves a compiled model
    (an upper bound for it). A committee's members run one after the other: one member's."""
    from .committee import CommitteePotential

    if isinstance(potential, CommitteePotential):
        potential = potential.potentials[0]
    model = getattr(potential.model, "_orig_mod", potential.model)
    device = next(model.parameters()).device
    key = (repr(sorted(model.config.to_dict().items())), str(device), potential.lean)
    if key not in _BYTES_PER_EDGE:
        eager = potential if model is potential.model else Potential(model)
        _BYTES_PER_EDGE[key] = _measure(eager, device)
    return _BYTES_PER_EDGE[key]


def estimate_call_bytes(potential: Potential, n_atoms: int, n_edges: int) -> int:
    """Estimated peak bytes of one energy + forces + stress call on a graph of
    ``n_atoms`` atoms and ``n_edges`` neighbour pairs."""
    return int(bytes_per_edge(potential) * (n_edges + n_atoms)) + CALL_OVERHEAD


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def check_call_memory(potential: Potential, graph: AtomGraph, what: str = "this call",
                      extra_bytes: int = 0) -> None:
    """Raise :class:`InsufficientMemoryError` (one line: needed vs available) when a
    force call on ``graph`` would not fit in the memory of its device; ``extra_bytes``:
    what else the call needs (D3 dispersion's pair list)."""
    device = graph.device
    need = estimate_call_bytes(potential, graph.n_atoms, graph.n_edges) + int(extra_bytes)
    if need < SMALL_CALL_BYTES:
        return  # skip reading /proc at every step of MD on small structures
    have = available_memory(device)
    if need <= have:
        return
    dtype = str(potential.dtype).replace("torch.", "")
    hint = "fewer atoms" + (", float32" if dtype == "float64" else "")
    raise InsufficientMemoryError(
        f"not enough memory: {what} ({graph.n_atoms} atoms, {graph.n_edges} neighbour pairs, "
        f"{dtype} on {device}) needs about {_gb(need)} but {_gb(have)} is available; "
        f"use {hint} or a machine with more memory"
    )
