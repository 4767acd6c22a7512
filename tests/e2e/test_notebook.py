"""docs/notebooks/quickstart.ipynb, executed in a real Jupyter kernel (ipykernel driven by
nbclient), as a user runs it: the user's figures display inline after a fit, progress appears,
no tqdm warning, warnings point at the cell, and the kernel's matplotlib backend is untouched."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "notebooks" / "quickstart.ipynb"


def _text(outputs: list[Any]) -> str:
    parts = []
    for o in outputs:
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        elif "data" in o:
            parts.append(o["data"].get("text/plain", ""))
        elif o.get("output_type") == "error":
            parts.append("\n".join(o.get("traceback", [])))
    return "".join(parts)


@pytest.fixture(scope="module")
def executed() -> Any:
    env = {k: os.environ.pop(k) for k in ("CI", "PROTOREG_PROGRESS", "MPLBACKEND") if k in os.environ}  # as on a laptop
    os.environ["PROTOREG_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    try:
        nb = nbformat.read(NOTEBOOK, as_version=4)
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}})
        client.execute()
    finally:
        os.environ.update(env)
    return nb


def _cell(nb: Any, needle: str) -> Any:
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and needle in c.source]
    return cell


def test_the_notebook_runs_and_its_figures_display_inline(executed: Any) -> None:
    for cell in executed.cells:
        if cell.cell_type == "code":
            assert not [o for o in cell.outputs if o.output_type == "error"], _text(cell.outputs)
    first = _text(_cell(executed, "mkdtemp").outputs)
    assert "inline" in first  # the kernel's own backend
    fig_cell = _cell(executed, "plt.show()")
    assert any("image/png" in o.get("data", {}) for o in fig_cell.outputs), "the user's figure was not displayed"
    assert "backend after fit: module://matplotlib_inline.backend_inline" in _text(fig_cell.outputs)


def test_progress_appears_without_tqdm_warnings_and_warnings_point_at_the_cell(executed: Any) -> None:
    fit_cell = _cell(executed, "protoreg.fit(")
    text = _text(fit_cell.outputs)
    widget = any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in fit_cell.outputs)
    assert widget or ("fit:" in text and "300/300" in text), text
    assert "completed" in text
    sweep_cell = _cell(executed, "protoreg.sweep(")
    assert "16 runs, 0 failed" in _text(sweep_cell.outputs)
    assert "batch_" in _text(sweep_cell.outputs) or any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in sweep_cell.outputs)
    everything = "".join(_text(c.outputs) for c in executed.cells if c.cell_type == "code")
    assert "TqdmWarning" not in everything and "IProgress" not in everything
    warned = [line for line in everything.splitlines() if "Warning:" in line]
    assert any("PairingWarning" in line and "ipykernel" in line for line in warned), warned  # the sweep's unpaired repulsor, at the cell
    for line in warned:  # a warning's location is the user's cell, not protoreg's source
        assert "site-packages" not in line and "/protoreg/" not in line, line
    assert "exit code 0" in _text(_cell(executed, '"check"').outputs)
