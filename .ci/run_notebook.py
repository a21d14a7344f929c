"""Execute a notebook headless in a scratch folder; a cell that raises fails the run (exit 1)."""

import sys
import tempfile

import nbformat
from nbclient import NotebookClient

for path in sys.argv[1:]:
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as folder:
        NotebookClient(notebook, timeout=1200, kernel_name="python3", resources={"metadata": {"path": folder}}).execute()
    print(f"{path}: {len(notebook.cells)} cells ran")
