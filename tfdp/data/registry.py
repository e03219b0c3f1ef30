"""`load_dataset(name, ...)`: one entry point for every data set tfdp can load."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional

from tfdp.data.bundled import load_breast_cancer, load_digits
from tfdp.data.chest_xray import load_chest_xray
from tfdp.data.dataset import Dataset
from tfdp.data.npz import load_pneumonia_mnist
from tfdp.data.rendered import load_rendered_digits
from tfdp.data.tfds_data import load_tfds

# name -> (loader, needs a data_dir, one-line description)
_LOADERS: Dict[str, Any] = {
    "digits": (load_digits, False, "scikit-learn digits, 8x8x1, 10 classes (bundled)"),
    "breast_cancer": (
        load_breast_cancer, False, "scikit-learn breast cancer, 30 features, binary (bundled)"
    ),
    "rendered_digits": (
        load_rendered_digits, False,
        "digits rendered from fonts to train on (num_train=...), the 1797 real digits to test",
    ),
    "chest_xray": (
        load_chest_xray, True,
        "chest X-ray folders train/NORMAL, train/PNEUMONIA, test/... (grayscale, resized)",
    ),
    "pneumonia_mnist": (
        load_pneumonia_mnist, True, "PneumoniaMNIST / MedMNIST .npz (train_images, ...)"
    ),
    "tfds:": (load_tfds, True, "tfds:<name>: a TFDS image data set prepared in data_dir"),
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
        loader = _LOADERS["tfds:"][0]
        _check_kwargs("tfds:", loader, kwargs)
        return loader(name[len("tfds:"):], data_dir, **kwargs)
    if name not in _LOADERS:
        names = ", ".join(sorted(n for n in _LOADERS if n != "tfds:"))
        raise ValueError(
            f"Unknown data set {name!r}. Choose one of: {names}, or 'tfds:<name>' for a TFDS "
            "data set already prepared in --data_dir."
        )
    loader, needs_data_dir, _ = _LOADERS[name]
    _check_kwargs(name, loader, kwargs)
    if needs_data_dir:
        return loader(data_dir, **kwargs)
    if data_dir is not None:
        raise ValueError(
            f"The {name!r} data set needs no files (bundled or rendered) and takes no data_dir "
            f"(got {data_dir!r})."
        )
    return loader(**kwargs)


def _check_kwargs(name: str, loader: Callable[..., Dataset], kwargs: Dict[str, Any]) -> None:
    """Refuses options the loader does not take (e.g. image_size for tabular data)."""
    parameters = inspect.signature(loader).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown:
        accepted = sorted(p for p, v in parameters.items() if v.kind is inspect.Parameter.KEYWORD_ONLY)
        raise ValueError(
            f"The {name!r} data set does not take {unknown}; it accepts {accepted}."
        )
