"""Judge caches are data, not pickles (issue 10 item 7): hash-verified, private, rebuilt when tampered."""

import os
import pickle
import stat
import warnings

import numpy as np
import pytest

from vaccine_lib.judge import classifier as C
from vaccine_lib.judge.store import CacheInvalid, load_arrays, save_arrays

TEXTS = ["how to build a bomb step by step with nails", "mix the chemicals and light the fuse now",
         "steal the password and hack the account", "the weather is lovely and sunny today",
         "bake the bread at two hundred degrees", "the film was warm and funny overall"] * 3
LABELS = [1, 1, 1, 0, 0, 0] * 3


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("VACCINE_LIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tiny_data(monkeypatch):
    """A small labelled pool so load_or_fit fits in well under a second (threshold selection stubbed)."""
    data = C.LabelledData(tuple(TEXTS), tuple(LABELS), tuple(["pyrit-objective", "many-shot"] * (len(TEXTS) // 2)),
                          tuple(f"q{i}" for i in range(len(TEXTS))), tuple(map(float, LABELS)))
    monkeypatch.setattr(C, "labelled_data", lambda: data)
    monkeypatch.setattr(C, "_select_threshold", lambda pipe: (0.5, {"stub": True}))
    return data


def test_store_round_trip_private_and_verified(tmp_path):
    base = tmp_path / "judge" / "x"
    save_arrays(base, {"a": np.arange(5.0), "t": np.frombuffer(b"ab\ncd", dtype=np.uint8)}, {"digest": "d1"})
    arrays, meta = load_arrays(base, "d1")
    assert np.array_equal(arrays["a"], np.arange(5.0)) and meta["digest"] == "d1"
    for suffix in (".npz", ".json"):
        assert stat.S_IMODE(os.stat(base.with_suffix(suffix)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(base.parent).st_mode) == 0o700
    with pytest.raises(CacheInvalid, match="other data"):
        load_arrays(base, "d2")
    with pytest.raises(TypeError, match="object"):
        save_arrays(base, {"o": np.array([object()], dtype=object)}, {"digest": "d1"})


@pytest.mark.parametrize("damage", ["flip", "truncate", "pickle", "meta", "delete-json"])
def test_store_rejects_damaged_cache(tmp_path, damage):
    base = tmp_path / "x"
    save_arrays(base, {"a": np.arange(100.0)}, {"digest": "d"})
    npz, js = base.with_suffix(".npz"), base.with_suffix(".json")
    if damage == "flip":
        raw = bytearray(npz.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        npz.write_bytes(bytes(raw))
    elif damage == "truncate":
        npz.write_bytes(npz.read_bytes()[:50])
    elif damage == "pickle":
        npz.write_bytes(pickle.dumps({"a": 1}))
    elif damage == "meta":
        js.write_text("{not json")
    else:
        js.unlink()
    with pytest.raises(CacheInvalid):
        load_arrays(base, "d")


class _Boom:
    """Unpickling this would create a file: proof that a cache was executed."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_payload_with_matching_hash_is_never_executed(tmp_path):
    """Even an attacker who rewrites the metadata hash cannot make the loader unpickle."""
    import hashlib
    import json

    base = tmp_path / "x"
    save_arrays(base, {"a": np.arange(3.0)}, {"digest": "d"})
    marker = tmp_path / "executed"
    evil = pickle.dumps(_Boom(str(marker)))
    base.with_suffix(".npz").write_bytes(evil)
    meta = json.loads(base.with_suffix(".json").read_text())
    meta["sha256"] = hashlib.sha256(evil).hexdigest()
    base.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CacheInvalid, match="unreadable arrays"):
        load_arrays(base, "d")
    assert not marker.exists()


def test_pipeline_arrays_reproduce_the_fitted_pipeline():
    pipe = C.build_pipeline().fit(TEXTS, LABELS)
    arrays = C.pipeline_arrays(pipe)
    assert all(a.dtype != object for a in arrays.values())
    rebuilt = C.pipeline_from_arrays(arrays)
    probe = ["hack the account now", "sunny bread", "", "bomb bomb fuse"]
    assert np.allclose(pipe.predict_proba(probe), rebuilt.predict_proba(probe), atol=1e-12)


def test_classifier_cache_is_data_and_a_tampered_cache_is_refitted(cache_root, tiny_data):
    art, path, cached = C.load_or_fit()
    assert not cached and path.suffix == ".npz" and path.exists()
    assert not list(cache_root.rglob("*.pkl"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    art2, path2, cached2 = C.load_or_fit()
    assert cached2 and path2 == path
    texts = ["hack the account", "lovely sunny bread"]
    assert np.allclose(art["pipeline"].predict_proba(texts), art2["pipeline"].predict_proba(texts))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0x55
    path.write_bytes(bytes(raw))
    with pytest.warns(RuntimeWarning, match="judge cache rejected"):
        art3, _, cached3 = C.load_or_fit()
    assert not cached3
    assert np.allclose(art["pipeline"].predict_proba(texts), art3["pipeline"].predict_proba(texts))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten cache verifies again
        assert C.load_or_fit()[2]


def test_an_old_pickle_cache_is_ignored(cache_root, tiny_data):
    marker = cache_root / "executed"
    (cache_root / "judge").mkdir(parents=True, exist_ok=True)
    (cache_root / "judge" / f"{C.data_digest(tiny_data)}.pkl").write_bytes(pickle.dumps(_Boom(str(marker))))
    _, path, cached = C.load_or_fit()
    assert not cached and path.suffix == ".npz" and not marker.exists()


def test_private_files_are_never_readable_by_others_even_before_the_rename(tmp_path, monkeypatch):
    from vaccine_lib import atomic
    from vaccine_lib.judge.store import write_private
    modes, replace = [], os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (modes.append(stat.S_IMODE(os.stat(a).st_mode)),
                                                            replace(a, b)))
    write_private(tmp_path / "harmful.jsonl", b"text")
    assert modes == [0o600] and stat.S_IMODE(os.stat(tmp_path / "harmful.jsonl").st_mode) == 0o600
