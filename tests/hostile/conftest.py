"""Fixtures shared by the hostile-peer tests."""

from __future__ import annotations

import pytest

from tests.servers.http import PKI, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """A test CA with valid, expired and wrong-host server certificates and a client certificate."""
    return make_pki(tmp_path_factory.mktemp("pki"))
