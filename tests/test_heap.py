from __future__ import annotations

import gc
import weakref

import pytest

from exporter import heap


class Node:
    """An object in a reference cycle: only the collector frees it, reference counting never does."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def _thawed():
    yield
    gc.unfreeze()


def test_settle_frees_cycles_dropped_before_it():
    dropped = weakref.ref(Node())
    heap.settle()
    assert dropped() is None


def test_what_lived_through_settle_is_out_of_reach_until_the_next_settle():
    kept = Node()
    heap.settle()
    assert gc.get_freeze_count() > 0
    ref = weakref.ref(kept)
    del kept
    gc.collect()
    assert ref() is not None  # frozen: a full collection does not walk it
    heap.settle()  # the next load thaws and collects once
    assert ref() is None


def test_objects_made_after_settle_are_collected_as_usual():
    heap.settle()
    ref = weakref.ref(Node())
    gc.collect()
    assert ref() is None


def test_release_makes_frozen_objects_collectable_again():
    kept = Node()
    heap.settle()
    ref = weakref.ref(kept)
    del kept
    heap.release()
    gc.collect()
    assert ref() is None
