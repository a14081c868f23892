"""Local artifact storage and the adapter archive layout."""

from __future__ import annotations

import tarfile

import pytest

from store.artifacts import LocalArtifacts, put_directory_archive


def test_put_open_delete_round_trip(tmp_path):
    store = LocalArtifacts(tmp_path / "root")
    src = tmp_path / "a.txt"
    src.write_text("hello")
    store.put_file("files/a.txt", src)
    assert store.exists("files/a.txt") and store.open("files/a.txt").read() == b"hello"
    store.delete("files/a.txt")
    assert not store.exists("files/a.txt")


def test_keys_cannot_leave_the_root(tmp_path):
    with pytest.raises(ValueError, match="leaves the artifact root"):
        LocalArtifacts(tmp_path / "root").local_path("../escape")


def test_directory_archive_has_files_at_top_level(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"x")
    store = LocalArtifacts(tmp_path / "root")
    put_directory_archive(store, "jobs/j/adapter.tar.gz", adapter)
    with tarfile.open(store.local_path("jobs/j/adapter.tar.gz")) as tar:
        assert sorted(tar.getnames()) == ["adapter_config.json", "adapter_model.safetensors"]
