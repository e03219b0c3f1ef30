"""SavedModel export for TF Serving, with the privacy guarantee attached.

    export_saved_model(model, base_dir, name, *, privacy, version=None) -> str (the version dir)
    read_privacy(path) -> dict

`export_saved_model` writes `base_dir/name/VERSION/` (TF Serving's layout) with a
`serving_default` signature (input "inputs"; outputs "probabilities" and
"classes") and the privacy record in `VERSION/assets.extra/privacy.json`, which
TF Serving ignores and `read_privacy` reads back (epsilon = inf as `math.inf`).
"""

from tfdp.export.privacy_record import (
    RECORD_PATH,
    make_privacy_record,
    privacy_record_path,
    read_privacy,
)
from tfdp.export.saved_model import check_export_target, export_saved_model
from tfdp.export.serving import CLASSES, DEFAULT_INPUT_NAME, PROBABILITIES, SIGNATURE_NAME
from tfdp.export.versions import latest_version, list_versions

__all__ = [
    "export_saved_model",
    "read_privacy",
    "check_export_target",
    "make_privacy_record",
    "privacy_record_path",
    "list_versions",
    "latest_version",
    "RECORD_PATH",
    "SIGNATURE_NAME",
    "DEFAULT_INPUT_NAME",
    "PROBABILITIES",
    "CLASSES",
]
