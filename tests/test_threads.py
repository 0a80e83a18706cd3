"""The CPU thread count: chosen by --threads, set for a run and put back after it."""

from __future__ import annotations

import pytest
import torch

from stasc.config import StascConfig, check_threads
from stasc.errors import StascError
from stasc.sampling.threads import cpu_threads, resolve_threads, usable_cores


def test_auto_is_omp_num_threads_when_set_else_one_core_spared(monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads("auto") == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert resolve_threads("auto") == max(1, usable_cores() - 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert resolve_threads("auto") == max(1, usable_cores() - 1)
    assert resolve_threads("5") == 5


@pytest.mark.parametrize("setting", ["0", "-1", "two", "1.5", ""])
def test_a_bad_thread_count_is_refused(setting: str) -> None:
    with pytest.raises(StascError, match="--threads"):
        check_threads(setting)
    with pytest.raises(StascError, match="--threads"):
        StascConfig(threads=setting).validate()


def test_a_run_computes_on_its_thread_count_and_puts_torch_s_back() -> None:
    before = torch.get_num_threads()
    with cpu_threads("2") as count:
        assert count == torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
