"""storage: keys confined to their prefix, atomic puts, verification."""

import hashlib

import pytest

from storage import LocalStorage, ObjectRef, StorageError, check_key


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", "", "a\\b",
                                 "a b", "x" * 600, "a/", "..", "ü"])
def test_bad_keys_refused(key):
    with pytest.raises(StorageError):
        check_key(key)


def test_good_keys():
    for key in ("a", "a/b/c.ivf", "chunk-0001_x.bin", "A.B-C_D"):
        assert check_key(key) == key


def test_put_get_list_verify(tmp_path):
    s = LocalStorage(tmp_path)
    ref = s.put("a/b.bin", b"hello")
    assert ref == ObjectRef("a/b.bin", hashlib.sha256(b"hello").hexdigest(), 5)
    assert s.get("a/b.bin") == b"hello"
    assert s.list() == ["a/b.bin"] and s.list("a") == ["a/b.bin"] and s.list("zz") == []
    assert s.verify(ref) is None
    assert "holds 5 bytes" in s.verify(ObjectRef("a/b.bin", "0" * 64, 5))
    assert "no such object" in s.verify(ObjectRef("a/c.bin", "0" * 64, 5))
    assert not list(tmp_path.rglob(".*tmp*"))  # no temporary file left behind


def test_prefix_confines_keys(tmp_path):
    base = LocalStorage(tmp_path)
    base.put("jobs/other/secret", b"x")
    job = base.scoped("jobs/mine")
    job.put("out/a", b"1")
    assert base.get("jobs/mine/out/a") == b"1"
    assert job.list() == ["out/a"]
    for bad in ("../other/secret", "out/../../other/secret", "/jobs/other/secret"):
        with pytest.raises(StorageError, match="escapes the prefix|must be relative"):
            job.get(bad)
        with pytest.raises(StorageError):
            job.put(bad, b"overwrite")
    assert base.get("jobs/other/secret") == b"x"


def test_symlink_out_of_root_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_bytes(b"secret")
    (root / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(StorageError, match="outside the storage root"):
        LocalStorage(root).get("link/f")


def test_missing_object(tmp_path):
    with pytest.raises(StorageError, match="no such object"):
        LocalStorage(tmp_path).get("nope")
