"""HostSlots: a bound on work in flight across the processes of one host."""

import multiprocessing
import os
import signal
import threading

import pytest

from flashcart.host_slots import HostSlots, NoSlotFree


@pytest.fixture
def directory(tmp_path):
    return str(tmp_path / "slots")


def _hold_until_told(directory, count, ready, release):
    with HostSlots("work", count, directory).held():
        ready.set()
        release.wait(30)


def _holder(directory, count):
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    process = context.Process(target=_hold_until_told, args=(directory, count, ready, release))
    process.start()
    assert ready.wait(30), "the holder never took a slot"
    return process, release


def test_slots_exclude_one_another_across_processes(directory):
    first, release_first = _holder(directory, 2)
    second, release_second = _holder(directory, 2)
    try:
        with pytest.raises(NoSlotFree), HostSlots("work", 2, directory).held():
            pass
        release_first.set()
        first.join(30)
        with HostSlots("work", 2, directory).held():
            pass
    finally:
        release_first.set()
        release_second.set()
        for process in (first, second):
            process.join(30)


def test_a_process_killed_holding_a_slot_frees_it(directory):
    holder, _ = _holder(directory, 1)
    with pytest.raises(NoSlotFree), HostSlots("work", 1, directory).held():
        pass

    os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)

    with HostSlots("work", 1, directory).held():
        pass


def test_threads_of_one_process_each_need_their_own_slot(directory):
    slots = HostSlots("work", 2, directory)
    with slots.held(), slots.held(), pytest.raises(NoSlotFree), slots.held():
        pass
    with slots.held():
        pass


def test_a_slot_is_freed_when_the_work_raises(directory):
    slots = HostSlots("work", 1, directory)
    with pytest.raises(ZeroDivisionError), slots.held():
        raise ZeroDivisionError
    with slots.held():
        pass


def test_a_directory_owned_by_someone_else_is_not_used(directory, tmp_path):
    os.makedirs(tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", directory)
    with pytest.raises(PermissionError), HostSlots("work", 1, directory).held():
        pass


def test_a_waiter_takes_a_slot_freed_while_it_waits(directory):
    slots = HostSlots("work", 1, directory)
    held = slots.take()
    threading.Timer(0.1, held.release).start()
    slot = slots.take(wait_seconds=30)
    with pytest.raises(NoSlotFree):
        slots.take()
    slot.release()
    slots.take().release()


def test_a_waiter_gives_up_when_no_slot_comes_free(directory):
    slots = HostSlots("work", 1, directory)
    with slots.held(), pytest.raises(NoSlotFree):
        slots.take(wait_seconds=0.05)
