"""The example notebooks run top to bottom, show at least one figure, and are committed without outputs.

Each notebook runs in a fresh kernel of *this* interpreter (the one pytest runs in, where riverbed
is installed): the kernelspec is written to a temporary directory with ipykernel's own
``write_kernel_spec``, so no ``python3`` kernel needs to be installed and a user-installed one
pointing at another Python is never picked up.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 300  # seconds per cell
KERNEL = "riverbed-test-python"


def _kernel_manager(tmp_path: Path) -> KernelManager:
    kernels = tmp_path / "kernels"
    write_kernel_spec(kernels / KERNEL)  # argv: this sys.executable -m ipykernel_launcher
    ksm = KernelSpecManager(kernel_dirs=[str(kernels)])
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=ksm)


def _images(nb: nbformat.NotebookNode) -> int:
    return sum(
        1
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    )


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # A copy of the notebooks directory is the working directory: whatever a notebook writes
    # next to itself stays out of the source tree.
    workdir = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, workdir, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    # The kernel inherits the environment: an MPLBACKEND such as Agg would hide the figures.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # silences jupyter_core's path migration warning

    nb = nbformat.read(workdir / path.name, as_version=4)
    client = NotebookClient(
        nb,
        km=_kernel_manager(tmp_path),
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(workdir)}},
    )
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"{path.name}: a cell failed:\n{e}", pytrace=False)

    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors, f"{path.name}: error outputs: {errors}"
    assert _images(nb) >= 1, f"{path.name} produced no image/png output (no figure shown)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_committed_without_outputs(path: Path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = [
        i
        for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} have outputs or execution counts; strip them before committing "
        f"(jupyter nbconvert --clear-output --inplace {path.relative_to(NOTEBOOK_DIR.parent)})"
    )
