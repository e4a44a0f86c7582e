"""numpy arrays on the wire: raw bytes <-> ndarray, checked against the model's `Tensor`.

numpy is an optional extra (`pip install 'blazerpc[numpy]'`), imported only when a model
declares an array. Arrays are read without copying: `np.frombuffer` over the received bytes
gives a read-only view. They travel little-endian, in C order.
"""

from __future__ import annotations

import math
from typing import Any

from blazerpc.errors import WireError
from blazerpc.schema.markers import Tensor

__all__ = ("array_from", "array_parts", "check_array")


def array_from(dtype: str, shape: list[int], data: bytes, tensor: Tensor, where: str) -> Any:
    """An ndarray viewing `data`; WireError naming `where` if it is not what `tensor` takes."""
    np = _numpy()
    if dtype != tensor.dtype:
        raise WireError(f"{where} has dtype {dtype or '(none)'}; it takes {tensor.dtype}.")
    if any(size < 0 for size in shape) or not tensor.fits(tuple(shape)):
        raise WireError(f"{where} has shape {list(shape)}; it takes {tensor.describe()}.")
    little = np.dtype(dtype).newbyteorder("<")
    expected = math.prod(shape) * little.itemsize
    if len(data) != expected:
        raise WireError(
            f"{where} has shape {list(shape)} of {dtype}, which is {expected} bytes, but "
            f"{len(data)} bytes were sent."
        )
    return np.frombuffer(data, dtype=little).reshape(shape)


def check_array(value: object, tensor: Tensor, where: str) -> Any:
    """`value`, if it is an array `tensor` takes; WireError naming `where` if not. No copy."""
    np = _numpy()
    if not isinstance(value, np.ndarray):
        raise WireError(f"{where}: expected a numpy array, got {type(value).__name__}")
    if value.dtype.name != tensor.dtype or not tensor.fits(value.shape):
        raise WireError(
            f"{where}: expected {tensor.describe()}, got {value.dtype.name} {list(value.shape)}"
        )
    return value


def array_parts(value: object, tensor: Tensor, where: str) -> tuple[str, list[int], bytes]:
    """`(dtype, shape, little-endian bytes)` of an array to send; WireError if it is not one."""
    array = check_array(value, tensor, where)
    little = _numpy().ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return tensor.dtype, list(array.shape), little.tobytes()


def _numpy() -> Any:
    """numpy, imported on first use: a model that declares an array has imported it already."""
    import numpy

    return numpy
