"""One process per run directory: a second one is told which pid holds it; a killed holder's lock is taken over."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from stasc.errors import StascError
from stasc.run.lock import RunLock, check_unlocked, lock_path

from testing_utils import assert_documented


def hold(run_dir: Path, ready: Connection) -> None:
    """In a child process: take the lock, say so, and keep it until killed."""
    try:
        RunLock(run_dir).acquire()
    except StascError as error:
        ready.send(str(error))
        return
    ready.send("held")
    time.sleep(600)


def start_holder(run_dir: Path) -> tuple[multiprocessing.process.BaseProcess, Connection]:
    """A forked process (its own pid, no fresh interpreter to start) that tries to take run_dir's lock."""
    receiving, sending = multiprocessing.Pipe(duplex=False)
    holder = multiprocessing.get_context("fork").Process(target=hold, args=(run_dir, sending), daemon=True)
    holder.start()
    return holder, receiving


def hold_in_another_process(run_dir: Path) -> multiprocessing.process.BaseProcess:
    holder, ready = start_holder(run_dir)
    assert ready.poll(60) and ready.recv() == "held"
    return holder


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = hold_in_another_process(run_dir)
    try:
        with pytest.raises(StascError) as early:
            check_unlocked(run_dir)
        with pytest.raises(StascError) as refused:
            RunLock(run_dir).acquire()
    finally:
        holder.kill()
        holder.join()
    for error in (early.value, refused.value):
        assert str(error) == (
            f"{run_dir} is in use by another stasc process (pid {holder.pid}), which holds {run_dir}/run.lock. "
            f"Wait for it to finish (or stop it: kill {holder.pid}), or pass another --output-dir."
        )


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_dir = tmp_path / "run"
    holder = hold_in_another_process(run_dir)
    holder.kill()  # SIGKILL: no cleanup runs, run.lock stays and names the dead process
    holder.join()
    assert lock_path(run_dir).read_text().strip() == str(holder.pid)
    lock = RunLock(run_dir)
    with caplog.at_level(logging.WARNING):
        lock.acquire()
    assert lock_path(run_dir).read_text().strip() == str(os.getpid())
    assert f"was left by process {holder.pid}, which no longer holds it" in caplog.text
    assert_documented("a lock left by a killed run", caplog.text)
    lock.release()
    assert not lock_path(run_dir).exists(), "a run that ends removes its lock"
    check_unlocked(run_dir)


def test_one_of_two_processes_racing_for_a_free_lock_gets_it(tmp_path: Path) -> None:
    racers = [start_holder(tmp_path / "run") for _ in range(2)]
    try:
        answers = [ready.recv() for _, ready in racers if ready.poll(60)]
    finally:
        for racer, _ in racers:
            racer.kill()
            racer.join()
    assert len(answers) == 2 and answers.count("held") == 1, answers
    assert "is in use by another stasc process" in next(answer for answer in answers if answer != "held")


def test_checking_creates_nothing(tmp_path: Path) -> None:
    check_unlocked(tmp_path / "new-run")
    assert list(tmp_path.iterdir()) == []
