"""`load_dataset(name, ...)`: one entry point for every data set tfdp can load."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from tfdp.data.bundled import load_breast_cancer, load_digits
from tfdp.data.dataset import Dataset

# name -> (loader, needs a data_dir, one-line description)
_LOADERS: Dict[str, Any] = {
    "digits": (load_digits, False, "scikit-learn digits, 8x8x1, 10 classes (bundled)"),
    "breast_cancer": (
        load_breast_cancer, False, "scikit-learn breast cancer, 30 features, binary (bundled)"
    ),
}


def register_dataset(
    name: str, loader: Callable[..., Dataset], *, needs_data_dir: bool, description: str
) -> None:
    """Makes `loader` available as `load_dataset(name, ...)`."""
    _LOADERS[name] = (loader, needs_data_dir, description)


def available_datasets() -> Dict[str, str]:
    """Names `load_dataset` accepts (TFDS names use the prefix "tfds:"), with descriptions."""
    return {name: entry[2] for name, entry in _LOADERS.items()}


def load_dataset(name: str, data_dir: Optional[str] = None, **kwargs: Any) -> Dataset:
    """Loads a data set by name.

    Args:
      name: one of `available_datasets()`, or "tfds:<name>" for a TFDS data set
        prepared in `data_dir`.
      data_dir: where the files are, for the data sets that are not bundled.
      **kwargs: passed to the loader (e.g. `seed`, `test_fraction`, `image_size`).
    """
    if isinstance(name, str) and name.startswith("tfds:"):
        loader = _LOADERS.get("tfds:")
        if loader is None:
            raise ValueError("TFDS data sets are not available in this version of tfdp.")
        return loader[0](name[len("tfds:"):], data_dir=data_dir, **kwargs)
    if name not in _LOADERS or name == "tfds:":
        names = ", ".join(sorted(n for n in _LOADERS if n != "tfds:"))
        raise ValueError(
            f"Unknown data set {name!r}. Choose one of: {names}, or 'tfds:<name>' for a TFDS "
            "data set already prepared in --data_dir."
        )
    loader, needs_data_dir, _ = _LOADERS[name]
    if needs_data_dir:
        return loader(data_dir, **kwargs)
    if data_dir is not None:
        raise ValueError(
            f"The {name!r} data set is bundled with scikit-learn and takes no data_dir "
            f"(got {data_dir!r})."
        )
    return loader(**kwargs)
