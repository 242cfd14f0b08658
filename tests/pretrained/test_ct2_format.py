import struct

import numpy as np
import pytest
import torch

from comsl.errors import CheckpointError
from comsl.pretrained.ct2_format import read_ct2_model, write_ct2_model

from .conftest import tiny_variables


def _dtype_offset(spec: str, name: str, rank: int) -> int:
    """Byte offset of the dtype id of the first variable in a file written by write_ct2_model."""
    return 4 + (2 + len(spec) + 1) + 4 + 4 + (2 + len(name) + 1) + 1 + 4 * rank


def test_round_trip_of_every_writable_dtype_and_aliases(tmp_path):
    variables = {
        "a/f32": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
        "a/f16": np.array([[1.5, -2.25]], dtype=np.float16),
        "a/i8": np.array([-128, 0, 127], dtype=np.int8),
        "a/i16": np.array(8, dtype=np.int16),
        "a/i32": np.array([1 << 30], dtype=np.int32),
    }
    path = tmp_path / "model.bin"
    write_ct2_model(path, "TestSpec", 7, variables, {"b/alias": "a/f16"})
    model = read_ct2_model(path)
    assert (model.spec, model.revision) == ("TestSpec", 7)
    assert model.dtypes == {"a/f32": "float32", "a/f16": "float16", "a/i8": "int8", "a/i16": "int16", "a/i32": "int32"}
    for name, value in variables.items():
        assert model.variables[name].dtype == value.dtype and np.array_equal(model.variables[name], value)
    assert model.resolve("b/alias") == "a/f16" and torch.equal(model.tensor("b/alias"), torch.tensor([[1.5, -2.25]]))
    assert model.scalar("a/i16") == 8 and model.scalar("missing", "dflt") == "dflt"
    # 4 version + (2+9) spec + 4 revision + 4 count + per-variable headers/data + aliases: nothing extra
    assert path.stat().st_size == 4 + 11 + 4 + 4 + sum(
        2 + len(n) + 1 + 1 + 4 * v.ndim + 1 + 4 + v.nbytes for n, v in variables.items()
    ) + 4 + (2 + 7 + 1) + (2 + 5 + 1)


def test_tiny_whisper_file_has_the_real_layout(tmp_path):
    variables, aliases = tiny_variables()
    write_ct2_model(tmp_path / "model.bin", "WhisperSpec", 3, variables, aliases)
    model = read_ct2_model(tmp_path / "model.bin")
    assert len(model.variables) == len(variables) and model.aliases == aliases
    assert model.variables["decoder/layer_1/self_attention/linear_0/weight"].shape == (48, 16)
    assert model.scalar("encoder/num_heads") == 4 and model.scalar("decoder/alignment_layer") == -1


def test_int8_and_int16_weights_are_divided_by_their_scale(tmp_path):
    weight = np.array([[127, -64, 0], [10, 20, -127]], dtype=np.int8)
    scale = np.array([127 / 0.5, 127 / 2.0], dtype=np.float32)
    conv = np.ones((2, 1, 3), dtype=np.int8)
    write_ct2_model(tmp_path / "model.bin", "S", 1, {
        "w": weight, "w_scale": scale, "conv": conv, "conv_scale": np.array([2.0, 4.0], np.float32),
        "g": np.array([300, -600], np.int16), "g_scale": np.array(100.0, np.float32), "bare": weight,
    })
    model = read_ct2_model(tmp_path / "model.bin")
    assert torch.equal(model.tensor("w"), torch.from_numpy(weight.astype(np.float32) / scale[:, None]))
    assert torch.equal(model.tensor("conv")[:, 0, 0], torch.tensor([0.5, 0.25]))
    assert torch.equal(model.tensor("g"), torch.tensor([3.0, -6.0]))
    with pytest.raises(CheckpointError, match="'bare' is stored as int8 without a 'bare_scale'"):
        model.tensor("bare")


def test_bfloat16_is_widened(tmp_path):
    values = torch.tensor([1.0, -0.5, 3.140625], dtype=torch.bfloat16)
    path = tmp_path / "model.bin"
    write_ct2_model(path, "S", 1, {"x": values.view(torch.int16).numpy()})
    data = bytearray(path.read_bytes())
    data[_dtype_offset("S", "x", 1)] = 5  # int16 -> bfloat16, same bytes
    path.write_bytes(bytes(data))
    model = read_ct2_model(path)
    assert model.dtypes["x"] == "bfloat16" and torch.equal(model.tensor("x"), values.float())


def test_every_truncation_is_a_clear_error(tmp_path):
    good = tmp_path / "model.bin"
    write_ct2_model(good, "WhisperSpec", 3, {"w": np.ones((2, 2), np.float16)}, {"p": "w"})
    data = good.read_bytes()
    for cut in range(len(data)):
        bad = tmp_path / "cut.bin"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"cut\.bin: truncated CTranslate2 model file"):
            read_ct2_model(bad)


def test_wrong_version_or_not_a_model_file(tmp_path):
    path = tmp_path / "model.bin"
    write_ct2_model(path, "WhisperSpec", 3, {"w": np.ones(2, np.float32)}, version=5)
    with pytest.raises(CheckpointError, match=r"model\.bin: not a supported CTranslate2 model file: .*binary version 5"):
        read_ct2_model(path)
    path.write_bytes(b"PK\x03\x04 this is a zip, not a model")
    with pytest.raises(CheckpointError, match="binary version 67324752"):
        read_ct2_model(path)
    with pytest.raises(CheckpointError, match="model file not found"):
        read_ct2_model(tmp_path / "absent.bin")


def test_unknown_dtype_id_names_variable_and_id(tmp_path):
    path = tmp_path / "model.bin"
    write_ct2_model(path, "S", 1, {"enc/w": np.ones((2,), np.float32)})
    data = bytearray(path.read_bytes())
    data[_dtype_offset("S", "enc/w", 1)] = 9
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.bin: variable 'enc/w' has dtype id 9, .*not support"):
        read_ct2_model(path)


def test_trailing_bytes_size_mismatch_and_dangling_alias(tmp_path):
    path = tmp_path / "model.bin"
    write_ct2_model(path, "S", 1, {"w": np.ones(2, np.float32)})
    path.write_bytes(path.read_bytes() + b"\0\0")
    with pytest.raises(CheckpointError, match="2 unexpected trailing bytes"):
        read_ct2_model(path)
    write_ct2_model(path, "S", 1, {"w": np.ones(2, np.float32)}, {"a": "nothing"})
    with pytest.raises(CheckpointError, match="alias 'a' points to missing variable 'nothing'"):
        read_ct2_model(path)
    write_ct2_model(path, "S", 1, {"w": np.ones(2, np.float32)})
    data = bytearray(path.read_bytes())
    size_at = _dtype_offset("S", "w", 1) + 1
    data[size_at : size_at + 4] = struct.pack("<I", 4)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"'w' declares 4 bytes but shape \(2,\) of float32 needs 8"):
        read_ct2_model(path)
