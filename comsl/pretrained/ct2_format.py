"""Pure-Python reader and writer for CTranslate2 ``model.bin`` files (binary format version 6).

The layout (all little-endian; a *string* is ``uint16 len+1``, UTF-8 bytes, NUL)::

    uint32 binary_version            # 6
    string spec_name                 # e.g. "WhisperSpec"
    uint32 spec_revision
    uint32 num_variables
    repeat: string name, uint8 rank, uint32 dims[rank], uint8 dtype_id, uint32 num_bytes, bytes data
    uint32 num_aliases
    repeat: string alias, string target_name

``dtype_id`` indexes CTranslate2's ``DataType`` enum: float32, int8, int16, int32, float16, bfloat16.
Scalar model attributes (``num_heads``, ``activation``, ...) are stored as rank-0 variables.
Quantized weights (int8 per row, int16 global) keep a sibling ``<name>_scale`` variable; see
:func:`dequantized`. No ``ctranslate2`` dependency: only ``struct``, numpy and torch.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from comsl.errors import CheckpointError

#: The only binary version this reader is written against (CTranslate2 >= 3.x writes 6).
SUPPORTED_BINARY_VERSION = 6

# dtype_id -> (name, numpy storage dtype). bfloat16 is stored as raw uint16 and widened via torch.
_DTYPES: dict[int, tuple[str, np.dtype]] = {
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    5: ("bfloat16", np.dtype("<u2")),
}


@dataclass
class CT2Model:
    """The parsed contents of one ``model.bin``."""

    path: Path
    """File the model was read from (used in error messages)."""
    spec: str
    """Spec name written by the converter, e.g. ``"WhisperSpec"``."""
    revision: int
    """Spec revision (weights layout version of that spec)."""
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    """Variable name -> array in its stored dtype (bfloat16 already widened to float32)."""
    dtypes: dict[str, str] = field(default_factory=dict)
    """Variable name -> stored dtype name (``"float16"``, ``"int8"``, ...)."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Alias name -> name of the variable holding the data (e.g. tied embeddings)."""

    def resolve(self, name: str) -> str:
        """The name of the variable that actually holds ``name``'s data (follows aliases)."""
        seen = set()
        while name in self.aliases:
            if name in seen:
                raise CheckpointError(f"{self.path}: alias cycle through '{name}'")
            seen.add(name)
            name = self.aliases[name]
        return name

    def has(self, name: str) -> bool:
        """Whether ``name`` is a variable or an alias of one."""
        return self.resolve(name) in self.variables

    def scalar(self, name: str, default=None):
        """A rank-0 attribute as a Python number, or ``default`` when the file lacks it."""
        if not self.has(name):
            return default
        value = self.variables[self.resolve(name)]
        if value.size != 1:
            raise CheckpointError(f"{self.path}: '{name}' should be a scalar, found shape {value.shape}")
        return value.reshape(()).item()

    def tensor(self, name: str) -> torch.Tensor:
        """Variable ``name`` (aliases followed) as a float32 tensor, de-quantized when it has a scale.

        Raises:
            CheckpointError: the variable is missing or uses a quantization this reader cannot undo.
        """
        real = self.resolve(name)
        if real not in self.variables:
            raise CheckpointError(f"{self.path}: missing variable '{name}'")
        return dequantized(self, real)


def dequantized(model: CT2Model, name: str) -> torch.Tensor:
    """Float32 tensor for ``name``: float dtypes are widened exactly; int8/int16 weights are divided
    by their ``<name>_scale`` (per output row for int8, one global scale for int16), as CTranslate2's
    own de-quantization does.

    Raises:
        CheckpointError: an integer weight without a scale, or with zero-points (AWQ-style).
    """
    array = model.variables[name]
    dtype = model.dtypes[name]
    if dtype in ("float32", "float16", "bfloat16"):
        return torch.from_numpy(array.astype(np.float32))  # always a writable copy
    scale_name = model.resolve(f"{name}_scale")
    if scale_name not in model.variables:
        raise CheckpointError(
            f"{model.path}: '{name}' is stored as {dtype} without a '{name}_scale' variable; "
            "only scaled int8/int16 weights can be converted"
        )
    if model.has(f"{name}_zero"):
        raise CheckpointError(
            f"{model.path}: '{name}' has zero-points ('{name}_zero', AWQ quantization): not supported; "
            "convert the model with --quantization float16 or float32"
        )
    weight = torch.from_numpy(array.astype(np.float32))
    scale = torch.from_numpy(model.variables[scale_name].astype(np.float32))
    if scale.dim() == 1:  # per output channel; conv weights are (out, in, k)
        scale = scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return weight / scale


class _Cursor:
    """Reads little-endian fields from a byte buffer, naming the file and offset on truncation."""

    def __init__(self, data: memoryview, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise CheckpointError(
                f"{self.path}: truncated CTranslate2 model file: needed {n} bytes for {what} at offset "
                f"{self.pos}, file has {len(self.data)} bytes (incomplete download or copy?)"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))[0]

    def string(self, what: str) -> str:
        length = self.unpack("H", f"the length of {what}")
        raw = bytes(self.take(length, what))
        if length == 0 or raw[-1] != 0:
            raise CheckpointError(f"{self.path}: corrupt string for {what} at offset {self.pos - length}")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as err:
            raise CheckpointError(f"{self.path}: {what} is not UTF-8 at offset {self.pos - length}") from err


def read_ct2_model(path: str | Path) -> CT2Model:
    """Parse a CTranslate2 ``model.bin``.

    Raises:
        CheckpointError: missing file, a binary version other than 6 (not a CTranslate2 v6 model),
            truncation, an unknown dtype id, a size mismatch, an alias to nothing, or trailing bytes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found (expected a CTranslate2 model.bin)")
    data = memoryview(path.read_bytes())
    cur = _Cursor(data, path)
    version = cur.unpack("I", "the binary version")
    if version != SUPPORTED_BINARY_VERSION:
        raise CheckpointError(
            f"{path}: not a supported CTranslate2 model file: the header says binary version {version} "
            f"(first bytes {bytes(data[:4]).hex()}), this reader supports version {SUPPORTED_BINARY_VERSION}; "
            "re-convert it with a recent ctranslate2"
        )
    spec = cur.string("the spec name")
    revision = cur.unpack("I", "the spec revision")
    model = CT2Model(path=path, spec=spec, revision=revision)
    count = cur.unpack("I", "the variable count")
    for index in range(count):
        name = cur.string(f"the name of variable #{index}")
        rank = cur.unpack("B", f"the rank of '{name}'")
        shape = tuple(cur.unpack("I", f"dimension {d} of '{name}'") for d in range(rank))
        dtype_id = cur.unpack("B", f"the dtype of '{name}'")
        if dtype_id not in _DTYPES:
            raise CheckpointError(
                f"{path}: variable '{name}' has dtype id {dtype_id}, which this reader does not support "
                f"(supported: {', '.join(f'{i}={n}' for i, (n, _) in _DTYPES.items())}); "
                "re-convert with --quantization float16 or float32"
            )
        dtype_name, np_dtype = _DTYPES[dtype_id]
        num_bytes = cur.unpack("I", f"the byte size of '{name}'")
        expected = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
        if num_bytes != expected:
            raise CheckpointError(
                f"{path}: variable '{name}' declares {num_bytes} bytes but shape {shape} of {dtype_name} "
                f"needs {expected}"
            )
        array = np.frombuffer(cur.take(num_bytes, f"the data of '{name}'"), dtype=np_dtype).reshape(shape)
        if dtype_name == "bfloat16":
            array = torch.from_numpy(array.copy()).view(torch.bfloat16).float().numpy()
        model.variables[name] = array
        model.dtypes[name] = dtype_name
    num_aliases = cur.unpack("I", "the alias count")
    for index in range(num_aliases):
        alias = cur.string(f"alias #{index}")
        model.aliases[alias] = cur.string(f"the target of alias '{alias}'")
    for alias in model.aliases:
        if model.resolve(alias) not in model.variables:
            raise CheckpointError(f"{path}: alias '{alias}' points to missing variable '{model.aliases[alias]}'")
    if cur.pos != len(data):
        raise CheckpointError(
            f"{path}: {len(data) - cur.pos} unexpected trailing bytes after the alias table at offset {cur.pos} "
            "(corrupt file, or two files concatenated?)"
        )
    return model


def write_ct2_model(
    path: str | Path,
    spec: str,
    revision: int,
    variables: dict[str, np.ndarray],
    aliases: dict[str, str] | None = None,
    version: int = SUPPORTED_BINARY_VERSION,
) -> None:
    """Write ``variables`` in the CTranslate2 binary layout (what ``ModelSpec.save`` writes).

    Arrays keep their numpy dtype (float32, int8, int16, int32 or float16); ``version`` is exposed so
    tests can write a file with a wrong header.

    Raises:
        CheckpointError: an array dtype CTranslate2 cannot store.
    """
    # (numpy kind, itemsize) -> dtype id; bfloat16 has no numpy dtype and is not written.
    kind_to_id = {("f", 4): 0, ("i", 1): 1, ("i", 2): 2, ("i", 4): 3, ("f", 2): 4}

    def string(value: str) -> bytes:
        raw = value.encode("utf-8")
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    parts = [struct.pack("<I", version), string(spec), struct.pack("<I", revision), struct.pack("<I", len(variables))]
    for name, array in variables.items():
        array = np.asarray(array)  # not ascontiguousarray: it turns rank-0 attributes into rank 1
        dtype_id = kind_to_id.get((array.dtype.kind, array.dtype.itemsize))
        if dtype_id is None:
            raise CheckpointError(f"cannot write '{name}' with dtype {array.dtype} in a CTranslate2 file")
        raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        parts += [string(name), struct.pack("<B", array.ndim)]
        parts += [struct.pack("<I", dim) for dim in array.shape]
        parts += [struct.pack("<B", dtype_id), struct.pack("<I", len(raw)), raw]
    aliases = aliases or {}
    parts.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        parts += [string(alias), string(target)]
    Path(path).write_bytes(b"".join(parts))


__all__ = ["CT2Model", "SUPPORTED_BINARY_VERSION", "dequantized", "read_ct2_model", "write_ct2_model"]
