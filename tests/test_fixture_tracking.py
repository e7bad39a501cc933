"""The suite's MLflow store is per test (tests/fixtures/tracking.py): a shared fixture's store is current only
while it is built and in the tests that ask for it, whatever order the tests run in."""

from __future__ import annotations

import os

import mlflow

from tests.fixtures.tracking import current_state, restore_state, tracking_store


def test_inside_the_store_is_current_for_mlflow_and_child_processes_and_after_it_everything_is_as_before():
    before = current_state()
    mlflow.set_tracking_uri("sqlite:///elsewhere.db")  # what an earlier test or fixture left behind
    mlflow.set_registry_uri("sqlite:///other-registry.db")
    left = current_state()
    with tracking_store("sqlite:///mine.db"):
        assert mlflow.get_tracking_uri() == "sqlite:///mine.db" == os.environ["MLFLOW_TRACKING_URI"]
        assert mlflow.get_registry_uri() == "sqlite:///mine.db" and "MLFLOW_REGISTRY_URI" not in os.environ
    assert current_state() == left
    assert mlflow.get_tracking_uri() == "sqlite:///elsewhere.db"
    restore_state(before)
    assert current_state() == before


def test_the_store_is_put_back_even_when_the_block_fails():
    before = current_state()
    try:
        with tracking_store("sqlite:///mine.db"):
            raise RuntimeError("a failing build")
    except RuntimeError:
        pass
    assert current_state() == before


def test_a_test_that_points_mlflow_at_its_store_does_not_leave_it_there():
    mlflow.set_tracking_uri("sqlite:///leaked-by-a-test.db")  # put back by tests/conftest.py after this test


def test_so_the_next_test_does_not_find_it():  # runs after the one above in the suite's order
    assert mlflow.get_tracking_uri() != "sqlite:///leaked-by-a-test.db"
    assert os.environ.get("MLFLOW_TRACKING_URI") != "sqlite:///leaked-by-a-test.db"
