"""Shared fixtures live in tests/support/*; each module is a pytest plugin."""

pytest_plugins = [
    "tests.support.s3",
    "tests.support.comfy",
    "tests.support.media",
    "tests.support.model_setup",
    "tests.support.logs",
]
