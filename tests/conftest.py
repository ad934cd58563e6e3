"""Shared test settings. Area-specific fixtures live in tests/<area>/conftest.py."""

import os

import pytest

# Headless MuJoCo (software EGL on CI). Set before anything imports dm_control.
os.environ.setdefault("MUJOCO_GL", "egl")
# Tests must not read the developer's shell settings for runs (AIME_DOMAIN=... would change presets).
for _var in (
    "AIME_DOMAIN",
    "AIME_TASK",
    "AIME_SEED",
    "AIME_NUM_EPISODES",
    "AIME_DATA_PATH",
    "AIME_DEBUG",
    "WANDB_PROJECT",
):
    os.environ.pop(_var, None)


@pytest.fixture
def redis_url():
    url = os.environ.get("AIME_TEST_REDIS_URL")
    if not url:
        pytest.skip("AIME_TEST_REDIS_URL not set (e.g. redis://127.0.0.1:6379/15)")
    return url


@pytest.fixture
def postgres_url():
    url = os.environ.get("AIME_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("AIME_TEST_POSTGRES_URL not set (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    return url


def pytest_collection_modifyitems(config, items):
    """Browser tests last: they are the slowest, and Playwright's sync API keeps an event loop running in the
    main thread for the rest of the session, which would break tests that call asyncio.run()."""
    items.sort(key=lambda item: "tests/browser/" in str(item.path).replace("\\", "/"))
