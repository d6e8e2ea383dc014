"""rtinst's papermill engine: kernels on private IPC sockets, warm reuse, nothing left behind."""

import json
import os
import tempfile
from pathlib import Path

import nbformat
import pytest

from rtinst.harness.notebook_exec import execute_notebook, shutdown_kernels

pytestmark = pytest.mark.skipif(os.name == "nt", reason="IPC transport does not exist on Windows")

PROBE = """import json, os
from ipykernel import get_connection_info
info = json.loads(get_connection_info())
print(json.dumps({"transport": info["transport"], "ip": info["ip"], "pid": os.getpid(), "x": x}))"""


def _notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(PROBE)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _probe(path: Path) -> dict:
    cell = nbformat.read(path, as_version=4).cells[-1]
    return json.loads("".join(o["text"] for o in cell.outputs if o.get("name") == "stdout"))


def _kernel_folders() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("rtinst-kernel-")}


def test_kernels_use_private_ipc_sockets_and_warm_ones_are_reused(tmp_path):
    before = _kernel_folders()
    src = _notebook(tmp_path / "probe.ipynb")
    try:
        execute_notebook(src, tmp_path / "a.ipynb", {"x": 1}, warm=True, cwd=tmp_path)
        execute_notebook(src, tmp_path / "b.ipynb", {"x": 2}, warm=True, cwd=tmp_path)
        a, b = _probe(tmp_path / "a.ipynb"), _probe(tmp_path / "b.ipynb")
        assert a["transport"] == b["transport"] == "ipc"  # no TCP port on localhost
        assert (a["x"], b["x"]) == (1, 2)  # parameters injected per notebook
        assert a["pid"] == b["pid"]  # the warm kernel was reused
        folder = Path(a["ip"]).parent
        assert folder.name.startswith("rtinst-kernel-") and (folder.stat().st_mode & 0o077) == 0
    finally:
        shutdown_kernels()
    assert _kernel_folders() == before  # sockets and their folder removed with the kernel
    assert not any(p.name.startswith("kernel") for p in tmp_path.iterdir())  # none in the cwd


def test_a_fresh_kernel_is_shut_down_and_cleaned_after_its_notebook(tmp_path):
    before = _kernel_folders()
    src = _notebook(tmp_path / "probe.ipynb")
    execute_notebook(src, tmp_path / "a.ipynb", {"x": 3}, warm=False, cwd=tmp_path)
    execute_notebook(src, tmp_path / "b.ipynb", {"x": 4}, warm=False, cwd=tmp_path)
    a, b = _probe(tmp_path / "a.ipynb"), _probe(tmp_path / "b.ipynb")
    assert a["transport"] == "ipc" and a["pid"] != b["pid"]
    assert _kernel_folders() == before


def test_a_new_warm_kernel_imports_preload_while_it_starts_and_runs_in_cwd(tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import json, os, sys\nprint(json.dumps({'loaded': 'wave' in sys.modules, 'cwd': os.getcwd()}))")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "probe.ipynb"
    nbformat.write(nb, src)
    work = tmp_path / "work"
    work.mkdir()
    try:
        # `wave`: a stdlib module nothing else here imports
        execute_notebook(src, tmp_path / "a.ipynb", {"x": 1}, warm=True, cwd=work, preload=("wave",))
        first = _probe(tmp_path / "a.ipynb")
        shutdown_kernels()
        execute_notebook(src, tmp_path / "b.ipynb", {"x": 1}, warm=True, cwd=work)
        second = _probe(tmp_path / "b.ipynb")
    finally:
        shutdown_kernels()
    assert first == {"loaded": True, "cwd": str(work.resolve())}
    assert second == {"loaded": False, "cwd": str(work.resolve())}  # no preload asked, none done
