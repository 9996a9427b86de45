"""geomformer_md.io.files: outputs are written whole or not at all."""

import os
import stat

import pytest
from ase.build import bulk
from ase.io import read

from geomformer_md.io.files import (
    atomic_open,
    copy_file,
    remove_stale_temporaries,
    write_frames,
    write_json,
    write_text,
)


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "table.csv"
    write_text(path, "old\n")
    with pytest.raises(RuntimeError), atomic_open(path) as fh:
        fh.write("half a ne")
        raise RuntimeError("crash mid-write")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_new_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "sub" / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "sub" / "a.json").stat().st_mode) == 0o644


def test_frames_and_copies(tmp_path):
    frames = [bulk("Cu"), bulk("Ag")]
    write_frames(tmp_path / "f.extxyz", frames)
    assert [a.get_chemical_formula() for a in read(tmp_path / "f.extxyz", ":")] == ["Cu", "Ag"]
    write_frames(tmp_path / "empty.extxyz", [])
    assert (tmp_path / "empty.extxyz").stat().st_size == 0
    copy_file(tmp_path / "f.extxyz", tmp_path / "g.extxyz")
    assert (tmp_path / "g.extxyz").read_bytes() == (tmp_path / "f.extxyz").read_bytes()
    with pytest.raises(ValueError, match="mode must start with 'w'"), \
            atomic_open(tmp_path / "x", "a"):
        pass


def test_a_killed_write_leaves_a_temporary_that_a_restart_removes(tmp_path):
    """SIGKILL between the temporary's creation and its rename runs no cleanup: the hidden
    temporary stays, and a Python glob of the target's suffix matches it. A long job
    removes such files when it starts; nothing else in its folder is touched."""
    import subprocess
    import sys

    target = tmp_path / "data" / "iter_001.extxyz"
    code = ("import os, signal, sys\n"
            "from geomformer_md.io.files import atomic_open\n"
            "with atomic_open(sys.argv[1]) as fh:\n"
            "    fh.write('half a frame')\n"
            "    fh.flush()\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], check=False)
    assert proc.returncode == -9 and not target.exists()
    (stale,) = (tmp_path / "data").glob("*.extxyz")  # the temporary, hidden
    assert stale.name.startswith(".iter_001.")
    keep = [tmp_path / ".gitignore", tmp_path / "data" / ".notes.txt", tmp_path / "model.pt"]
    for path in keep:
        path.write_text("mine")
    write_text(tmp_path / "data" / "iter_000.extxyz", "whole")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and all(p.exists() for p in keep)
    assert [p.name for p in (tmp_path / "data").glob("*.extxyz")] == ["iter_000.extxyz"]
