"""``tests/integration_vllm`` runs only under ``make test-vllm`` (``WILDSERVE_TEST_VLLM=1``, from
``.venv-vllm``): ``make test`` never collects it, so it never starts or imports vLLM."""

from __future__ import annotations

import os

import pytest


def pytest_ignore_collect(collection_path, config):
    return os.environ.get("WILDSERVE_TEST_VLLM") != "1"


@pytest.fixture(scope="session")
def fleet():
    """Two real vLLM CPU engines and the gateway in front, for the whole session."""
    from tests.integration_vllm.fleet import start_fleet

    with start_fleet() as f:
        yield f
