"""Data sets as in-memory `Dataset` records with tf.data pipelines.

    load_dataset(name, data_dir=None, **kw)  one entry point: "digits", "breast_cancer" (bundled),
                                              "rendered_digits" (rendered train, real test),
                                              "chest_xray", "pneumonia_mnist", "tfds:<name>"
    Dataset                                   arrays + metadata + train/test/Poisson pipelines
    poisson_batches(x, y, b, groups=...)      Poisson sampling of examples, or of groups
                                              (patients) for per-patient DP
    cyclic_poisson_batches(x, y, b, bands)    cyclic Poisson sampling over `bands` folds
                                              (for mechanism="banded_mf")
    sampling_tag(ds) -> SamplingTag | None    what a tfdp sampler promised about its batches
    count_groups, synthetic_groups            group ids: how many, pseudo-patients
    render_digits(n, seed=0)                  public synthetic 8x8 digits drawn from fonts
                                              (a prior to pretrain on: no private data)
"""

from tfdp.data.bundled import load_breast_cancer, load_digits
from tfdp.data.chest_xray import load_chest_xray
from tfdp.data.dataset import Dataset
from tfdp.data.groups import count_groups, patient_id_from_filename, synthetic_groups
from tfdp.data.npz import load_pneumonia_mnist
from tfdp.data.poisson import poisson_batches
from tfdp.data.cyclic_poisson import cyclic_poisson_batches, cyclic_steps_per_epoch
from tfdp.data.sampling_tag import SamplingTag, sampling_tag
from tfdp.data.synthetic_digits import render_digits
from tfdp.data.rendered import load_rendered_digits
from tfdp.data.registry import available_datasets, load_dataset, register_dataset
from tfdp.data.tfds_data import load_tfds

__all__ = [
    "Dataset",
    "load_dataset",
    "available_datasets",
    "register_dataset",
    "load_digits",
    "load_breast_cancer",
    "load_chest_xray",
    "load_pneumonia_mnist",
    "load_tfds",
    "poisson_batches",
    "cyclic_poisson_batches",
    "cyclic_steps_per_epoch",
    "SamplingTag",
    "sampling_tag",
    "count_groups",
    "synthetic_groups",
    "patient_id_from_filename",
    "render_digits",
    "load_rendered_digits",
]
