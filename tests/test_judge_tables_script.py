"""scripts/judge_tables.py: docs/judges.md's generated blocks are the rendering of the committed judge tables."""

import importlib.util
import shutil
from pathlib import Path

from vaccine_lib.paths import REPO_ROOT


def _script():
    spec = importlib.util.spec_from_file_location("judge_tables", REPO_ROOT / "scripts" / "judge_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_blocks_are_the_rendering_of_the_committed_tables(tmp_path, monkeypatch):
    docs = tmp_path / "judges.md"
    shutil.copy(REPO_ROOT / "docs" / "judges.md", docs)
    monkeypatch.chdir(REPO_ROOT)  # the blocks name the tables by their repository path
    _script().update_docs(Path("figures") / "tables", docs)
    assert docs.read_text(encoding="utf-8") == (REPO_ROOT / "docs" / "judges.md").read_text(encoding="utf-8"), \
        "docs/judges.md differs from the committed tables: run python scripts/judge_tables.py --docs"
