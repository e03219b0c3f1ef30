"""Data sets as in-memory `Dataset` records with tf.data pipelines.

    load_dataset(name, data_dir=None, **kw)  one entry point ("digits", "breast_cancer", ...)
    Dataset                                   arrays + metadata + train/test/Poisson pipelines
"""

from tfdp.data.bundled import load_breast_cancer, load_digits
from tfdp.data.dataset import Dataset
from tfdp.data.registry import available_datasets, load_dataset, register_dataset

__all__ = [
    "Dataset",
    "load_dataset",
    "available_datasets",
    "register_dataset",
    "load_digits",
    "load_breast_cancer",
]
