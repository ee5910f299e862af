"""collector.atomicfile.replace_text: the old content or the new, never a torn file or a leftover."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.atomicfile import replace_text


@pytest.mark.parametrize("durable", [True, False])
def test_replaces_the_content_and_leaves_no_temp_file(tmp_path: Path, durable: bool) -> None:
    path = tmp_path / "state" / "s.json"
    replace_text(path, "old", durable=durable)
    replace_text(path, "new", durable=durable)
    assert path.read_text(encoding="utf-8") == "new"
    assert [p.name for p in path.parent.iterdir()] == ["s.json"]


def test_a_failed_write_keeps_the_old_content(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    replace_text(path, "old")
    with pytest.raises(UnicodeEncodeError):
        replace_text(path, "\udcff")  # a lone surrogate cannot be encoded: the write fails
    assert path.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]
