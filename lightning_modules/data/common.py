"""Vocabulary shared by the data modules: data set names, image size, error types, seeds.

Nothing here depends on the rest of the package; every other module imports from it.
"""

import hashlib

import torch

DATASET_NAMES = ("cifar10", "cifar100", "synthetic")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "synthetic": 10}
_IMAGE_SIZE = 32


class DataError(ValueError):
    """A data source exists but cannot be read (corrupt archive, undecodable image, ...)."""


class DataNotFoundError(DataError):
    """No data source was found; the message (one line) says where we looked."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _check_name(name: str) -> str:
    key = name.lower().replace("-", "")
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    return key


def _mix_seed(*values: int) -> int:
    """A 63-bit seed derived from integers (e.g. (seed, epoch)); stable across runs."""
    digest = hashlib.blake2b(repr(tuple(int(v) for v in values)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _local_generator(seed: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(_mix_seed(seed))
    return gen
