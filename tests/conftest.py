"""Suite-wide: no test leaves MLflow pointed at its store for the tests after it (tests/fixtures/tracking.py)."""

from __future__ import annotations

import pytest

from tests.fixtures.tracking import current_state, restore_state


@pytest.fixture(autouse=True)
def _mlflow_store_is_put_back_after_each_test():
    # set up before the test's function-scoped fixtures, so it sees the URIs as the test found them
    before = current_state()
    yield
    restore_state(before)
