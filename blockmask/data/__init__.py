"""Data helpers: the MNIST IDX loader and the offline MNIST classifier."""
from blockmask.data.mnist import (
    default_mnist_dir,
    load_mnist,
    mnist_sha256,
    mnist_tensor_dataset,
    read_idx,
    to_model_range,
    verify_sha256,
)

__all__ = [
    "default_mnist_dir",
    "load_mnist",
    "mnist_sha256",
    "mnist_tensor_dataset",
    "read_idx",
    "to_model_range",
    "verify_sha256",
]
