"""The layout's promises that import-linter cannot see: light stages stay light at import time.

The CLI imports a stage's module to run it, so `fgalign label` and `fgalign edit` (task or API editor) must not
pull in torch or transformers through a top-level fgalign import. The layering itself is `lint-imports`'s job
(contracts in pyproject.toml, run by `make test`).
"""
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "openai")


@pytest.mark.parametrize("module", ["fgalign.cli", "fgalign.data", "fgalign.labels.stage", "fgalign.editors.stage",
                                    "fgalign.eval.judges", "fgalign.llm.client"])
def test_light_modules_import_no_heavy_library(module):
    code = f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing {module} imports {out.stdout.strip()}"
