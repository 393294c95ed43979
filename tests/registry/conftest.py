from __future__ import annotations

import pytest

from tests.agents.conftest import catalogue, eager, runtime  # noqa: F401 (fixtures)
from tests.factories import make_user


@pytest.fixture
def second_operator(db):
    return make_user("second-operator@portal.test", is_staff=True)
