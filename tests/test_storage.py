"""Atomic writes on a real full disk and a real read-only directory: a clear error, and nothing already
written is changed or left half-written."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from stasc.errors import StascError
from stasc.run.storage import atomic_directory, write_json, write_parquet


def test_a_full_disk_is_named_and_the_file_it_would_replace_is_kept(small_disk) -> None:
    disk = small_disk(64)
    table = disk / "iteration_01" / "corrections.parquet"
    write_parquet(table, pd.DataFrame({"answer": ["Paris"]}))
    before = table.read_bytes()
    big = pd.DataFrame({"answer": [f"{index:08d}" * 40 for index in range(20_000)]})  # ~6 MB, over the 64 kB
    with pytest.raises(StascError) as error:
        write_parquet(table, big)
    message = str(error.value)
    assert message.startswith(f"The disk is full: writing {table} failed (No space left on device).")
    assert "rerun the same command" in message
    assert table.read_bytes() == before
    assert sorted(path.name for path in table.parent.iterdir()) == ["corrections.parquet"], "no temporary file left"


def test_a_full_disk_while_an_adapter_is_saved_leaves_no_adapter(small_disk) -> None:
    disk = small_disk(64)
    adapter = disk / "iteration_01" / "adapter"
    with pytest.raises(StascError, match="The disk is full: writing .*adapter failed"):
        with atomic_directory(adapter) as staging:
            save_file({"lora_A": torch.zeros(100_000)}, str(staging / "adapter_model.safetensors"))  # safetensors' error
    assert list(adapter.parent.iterdir()) == []


def test_a_read_only_directory_is_named_with_the_way_out(freezable_dir) -> None:
    directory, freeze = freezable_dir
    manifest = directory / "run.json"
    write_json(manifest, {"status": "running"})
    freeze()
    with pytest.raises(StascError) as error:
        write_json(manifest, {"status": "complete"})
    assert "cannot be written" in str(error.value) and "pass another --output-dir" in str(error.value)
    assert manifest.read_text() == '{\n  "status": "running"\n}\n'
