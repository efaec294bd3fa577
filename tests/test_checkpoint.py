"""Weights and settings on disk: safetensors and JSON round trips, atomic writes, clear errors."""
import json
import os
import stat

import pytest

from tinymix import backend, manual_seed
from tinymix.store import checkpoint
from tinymix.backend import xp
from tinymix.nn import LayerNorm, Linear, Module, Parameter


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


# ---- safetensors --------------------------------------------------------------------------------

def test_arrays_round_trip_with_dtypes_and_shapes(tmp_path):
    arrays = {
        "weight": xp.arange(12, dtype=xp.float32).reshape(3, 4) / 7,
        "ids": xp.arange(5, dtype=xp.int64) - 2,
        "precise": xp.linspace(0, 1, 6, dtype=xp.float64).reshape(2, 3),
    }
    path = tmp_path / "arrays.safetensors"
    checkpoint.save_arrays(path, arrays)
    loaded = checkpoint.load_arrays(path)
    assert set(loaded) == set(arrays)
    for name, array in arrays.items():
        host = backend.to_numpy(array)
        assert loaded[name].dtype == host.dtype and loaded[name].shape == host.shape, name
        assert (loaded[name] == host).all(), name


def test_zero_dimensional_arrays_keep_their_shape(tmp_path):
    class Scaled(Module):
        def __init__(self):
            self.temperature = Parameter(xp.asarray(2.5, dtype=xp.float32))   # shape ()

    path = tmp_path / "scaled.safetensors"
    checkpoint.save_arrays(path, Scaled().state_dict())
    assert checkpoint.load_arrays(path)["temperature"].shape == ()
    Scaled().load_state_dict(checkpoint.load_arrays(path))


def test_transposed_and_strided_views_are_saved_with_their_own_values(tmp_path):
    # safetensors 0.8 writes a non-contiguous NumPy view's memory in storage order, not the view's
    # element order; save_arrays must make each array contiguous first.
    base = xp.arange(12, dtype=xp.float32).reshape(3, 4)
    views = {"transposed": base.T, "every_other_column": base[:, ::2], "reversed": base[::-1]}
    assert not views["transposed"].flags.c_contiguous
    assert not views["every_other_column"].flags.c_contiguous
    path = tmp_path / "views.safetensors"
    checkpoint.save_arrays(path, views)
    loaded = checkpoint.load_arrays(path)
    for name, view in views.items():
        assert loaded[name].shape == view.shape, name
        assert (loaded[name] == backend.to_numpy(view)).all(), name


def test_module_state_round_trips_through_a_file(tmp_path):
    class Small(Module):
        def __init__(self):
            self.up = Linear(3, 5)
            self.norm = LayerNorm(5)

    manual_seed(1)
    source = Small()
    source.norm.weight.data[...] = 1.5  # not the initial value
    manual_seed(2)
    target = Small()
    path = tmp_path / "small" / "model.safetensors"   # the folder does not exist yet
    checkpoint.save_arrays(path, source.state_dict())
    target.load_state_dict(checkpoint.load_arrays(path))
    for name, p in target.named_parameters():
        assert xp.array_equal(p.data, source.state_dict()[name]), name


def test_metadata_is_stored_in_the_header(tmp_path):
    path = tmp_path / "with-metadata.safetensors"
    checkpoint.save_arrays(path, {"x": xp.ones(2, dtype=xp.float32)}, metadata={"step": "3"})
    header_size = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8:8 + header_size])
    assert header["__metadata__"] == {"step": "3"}
    assert set(checkpoint.load_arrays(path)) == {"x"}


# ---- atomic writes ------------------------------------------------------------------------------

def test_writes_leave_no_temporary_files(tmp_path):
    arrays = {"x": xp.ones((2, 2), dtype=xp.float32)}
    checkpoint.save_arrays(tmp_path / "a.safetensors", arrays)
    checkpoint.save_arrays(tmp_path / "a.safetensors", {"x": xp.zeros((2, 2), dtype=xp.float32)})  # overwrite
    checkpoint.save_json(tmp_path / "a.json", {"lr": 1e-3})
    checkpoint.save_json(tmp_path / "a.json", {"lr": 2e-3})
    assert listing(tmp_path) == ["a.json", "a.safetensors"]
    assert (checkpoint.load_arrays(tmp_path / "a.safetensors")["x"] == 0).all()
    assert checkpoint.load_json(tmp_path / "a.json") == {"lr": 2e-3}


def test_a_failed_rename_removes_the_temporary_file(tmp_path):
    blocked = tmp_path / "model.safetensors"
    blocked.mkdir()                         # a folder in the way: the final rename must fail
    (blocked / "keep").write_text("x")
    with pytest.raises(OSError):
        checkpoint.save_arrays(blocked, {"x": xp.ones(2, dtype=xp.float32)})
    assert listing(tmp_path) == ["model.safetensors"]
    assert listing(blocked) == ["keep"]


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / "config.json"
    checkpoint.save_json(path, {"version": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        checkpoint.save_json(path, {"version": 2, "not_json": object()})
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["config.json"]


# ---- JSON ---------------------------------------------------------------------------------------

def test_json_round_trip(tmp_path):
    settings = {"model": "minilm-l6", "lr": 3e-4, "experts": 4, "layers": [0, 5],
                "nested": {"flag": True, "none": None}, "name": "café ☕"}
    path = tmp_path / "runs" / "settings.json"        # parent folders are made
    checkpoint.save_json(path, settings)
    assert checkpoint.load_json(path) == settings
    text = path.read_text()
    assert text.endswith("\n") and text.index('"experts"') < text.index('"lr"')  # stable: sorted keys


def test_load_json_errors_name_the_file(tmp_path):
    missing = tmp_path / "nowhere.json"
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        checkpoint.load_json(missing)
    broken = tmp_path / "broken.json"
    broken.write_text('{"lr": 0.1,')
    with pytest.raises(ValueError) as error:
        checkpoint.load_json(broken)
    assert str(broken) in str(error.value)


# ---- errors -------------------------------------------------------------------------------------

def test_missing_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "absent.safetensors"
    with pytest.raises(FileNotFoundError) as error:
        checkpoint.load_arrays(path)
    assert str(path) in str(error.value)
    with pytest.raises(FileNotFoundError):
        checkpoint.load_arrays(tmp_path)  # a folder is not a weights file


def test_garbage_bytes_are_a_clear_error_naming_their_source():
    with pytest.raises(ValueError, match="my weights.*not a valid safetensors file"):
        checkpoint.load_array_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json", "my weights")


# ---- file modes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_every_file_is_written_with_the_mode_open_would_give_it(tmp_path, umask):
    """One choice for everything tinymix writes: 0o666 minus the umask, as open() does (0644 under
    the usual umask 022); folders 0o777 minus the umask."""
    from tinymix.store import files
    previous = os.umask(umask)
    try:
        checkpoint.save_arrays(tmp_path / "new" / "a.safetensors", {"x": xp.ones(2, dtype=xp.float32)})
        checkpoint.save_json(tmp_path / "new" / "b.json", {"a": 1})
        files.atomic_write(tmp_path / "new" / "c.bin", b"c")
        (tmp_path / "new" / "plain.txt").write_text("as open() makes it")
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "new").iterdir()}
    assert modes == {name: 0o666 & ~umask for name in ("a.safetensors", "b.json", "c.bin", "plain.txt")}
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o777 & ~umask


def test_require_fields_names_the_file_and_the_field(tmp_path):
    where = tmp_path / "adapter_config.json"
    good = {"shapes": {"w": [2, 3]}, "merged": False, "lr": 0.1}
    assert checkpoint.require_fields(good, where, {"shapes": dict, "merged": bool, "lr": (int, float)}) is good
    with pytest.raises(ValueError, match=rf"{where} is damaged: 'shapes' must be an object, found missing"):
        checkpoint.require_fields({"config": {}}, where, {"shapes": dict})
    with pytest.raises(ValueError, match="expected a JSON object, found list"):
        checkpoint.require_fields([1, 2], where, {"shapes": dict})
    with pytest.raises(ValueError, match="'epoch' must be an integer, found True"):
        checkpoint.require_fields({"epoch": True}, where, {"epoch": int})


def test_a_full_disk_names_the_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    def disk_full(handle):
        raise OSError(28, "No space left on device")        # as a write or flush reports it: no file name
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError) as caught:
        checkpoint.save_json(tmp_path / "results.json", {"a": 1})
    assert caught.value.errno == 28 and caught.value.filename == str(tmp_path / "results.json")
    assert listing(tmp_path) == []
