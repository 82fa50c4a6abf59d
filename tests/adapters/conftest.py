"""Adapter test fixtures: the tiny DiT's layer shapes, a private DiT copy, the shared pipeline cleaned up."""

import copy

import pytest

from newbie.adapters import linear_shapes


@pytest.fixture(scope="session")
def shapes(tiny_pipeline):
    return linear_shapes(tiny_pipeline.dit)


@pytest.fixture
def dit(tiny_pipeline):
    """A private copy of the tiny DiT, so hooks and fused weights never leak into other tests."""
    return copy.deepcopy(tiny_pipeline.dit)


@pytest.fixture
def pipe(tiny_pipeline):
    yield tiny_pipeline
    tiny_pipeline.adapters.clear()
