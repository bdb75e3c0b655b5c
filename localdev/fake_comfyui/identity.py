"""What the fake says it is: a version that says "fake", and the features a real 0.33.0 announces."""

from __future__ import annotations

FAKE_VERSION = "0.33.0-fake"
DEFAULT_MAX_UPLOAD = 100 * 1024 * 1024
SERVER_FEATURES = {
    "supports_preview_metadata": True,
    "supports_model_type_tags": True,
    "max_upload_size": DEFAULT_MAX_UPLOAD,
    "extension": {"manager": {"supports_v4": False}},
    "node_replacements": True,
    "assets": False,
}
