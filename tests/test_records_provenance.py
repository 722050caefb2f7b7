"""Record provenance: the source hash (against a hand-computed SHA-256 of a tiny package tree),
provenance_extra, and the note that tables print when their rows' source hashes differ."""

from __future__ import annotations

import hashlib

import pytest

from spreadcon.runs import records


def _tree(tmp_path):
    pkg = tmp_path / "fakepkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_bytes(b"x = 1\n")
    (pkg / "sub" / "b.py").write_bytes(b"print('b')\n")
    (pkg / "a.py").write_bytes(b"\xc3\xa9 = 2\n")     # bytes, not text: hashed as they are
    (pkg / "notes.txt").write_bytes(b"not source")     # not *.py: not hashed
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\x00")
    return pkg


def test_source_hash_is_the_sha256_of_sorted_paths_and_bytes(tmp_path):
    pkg = _tree(tmp_path)
    want = hashlib.sha256(
        b"fakepkg/__init__.py" + b"x = 1\n"
        + b"fakepkg/a.py" + b"\xc3\xa9 = 2\n"
        + b"fakepkg/sub/b.py" + b"print('b')\n"
    ).hexdigest()
    assert records.source_hash(pkg, parts=None) == want
    (pkg / "sub" / "b.py").write_bytes(b"print('c')\n")  # one byte changed: another hash
    assert records.source_hash(pkg, parts=None) != want
    assert records.source_hash(pkg, parts=("a.py",)) == hashlib.sha256(b"fakepkg/a.py" + b"\xc3\xa9 = 2\n").hexdigest()


def test_the_package_hash_covers_spreadcon_py_files():
    import spreadcon

    h = records.source_hash()
    assert len(h) == 64 and h == records.source_hash(spreadcon.__path__[0])


def test_the_hash_covers_the_training_code_and_not_the_book_helpers(tmp_path):
    import shutil

    import spreadcon

    pkg = tmp_path / "spreadcon"
    shutil.copytree(spreadcon.__path__[0], pkg, ignore=shutil.ignore_patterns("__pycache__"))
    before = records.source_hash(pkg)
    assert before == records.source_hash()  # a byte-identical copy: the same hash
    for helper in ("book/report.py", "theory/model.py", "bench.py"):  # a chapter helper changes: the hash does not
        (pkg / helper).write_text((pkg / helper).read_text() + "\n# a table formatter changed\n")
        assert records.source_hash(pkg) == before, helper
    for code in ("losses/contrastive.py", "train/loop.py", "eval/__init__.py", "methods.py"):  # training code: it does
        (pkg / code).write_text((pkg / code).read_text() + "\n# changed\n")
        assert records.source_hash(pkg) != before, code
        before = records.source_hash(pkg)
    assert records.HASH_SCHEME == 2 and records.make_record.__module__ == "spreadcon.runs.records"


def _record(**kw):
    base = dict(dataset="mnist", method="spread", preset="smoke", seed=0, task="transfer",
                metrics={"fine_test_acc": 0.5, "coarse_test_acc": 0.9}, config={},
                started_at="2024-01-01T00:00:00+00:00", wall_time_s=1.0, git="abc")
    return records.make_record(**{**base, **kw})


def test_new_records_carry_the_hash_and_provenance_extra_is_merged():
    rec = _record()
    assert rec["provenance"]["source_hash"] == records.source_hash()
    rec = _record(provenance_extra={"precision": "bf16", "resumed_from_epoch": 40, "attempts": 2,
                                    "train_time_total_s": 12.5, "source_hash": "0" * 64})
    prov = rec["provenance"]
    assert (prov["precision"], prov["resumed_from_epoch"], prov["attempts"]) == ("bf16", 40, 2)
    assert prov["train_time_total_s"] == 12.5 and prov["source_hash"] == "0" * 64  # the run's own hash wins
    assert prov["git_commit"] == "abc" and prov["wall_time_s"] == 1.0  # the required keys stay
    with pytest.raises(ValueError, match="source_hash"):
        _record(provenance_extra={"source_hash": "not-a-hash"})


def _with(h):
    return {"provenance": {} if h is None else {"source_hash": h}}


def test_source_hash_note_says_when_rows_differ():
    a, b = "a" * 64, "b" * 64
    assert records.source_hash_note([_with(a), _with(a)]) == ""
    assert records.source_hashes([_with(a), _with(b), _with(b), _with(None)]) == {a: 1, b: 2, None: 1}
    assert records.source_hash_note([_with(a), _with(b), _with(b)]) == (
        "Rows come from 2 different source hashes (bbbbbbbb: 2 records, aaaaaaaa: 1 record); "
        "their training code may differ.")
    assert records.source_hash_note([_with(a), _with(b), _with(None), _with(None)]) == (
        "Rows come from 2 different source hashes (aaaaaaaa: 1 record, bbbbbbbb: 1 record) and 2 records "
        "with hash unknown (written before source hashes were recorded); their training code may differ.")
    assert records.source_hash_note([_with(a), _with(None)]) == (
        "All rows with a hash share one source hash (aaaaaaaa: 1 record); 1 record with hash unknown "
        "(written before source hashes were recorded), whose source may differ.")
    assert "hash unknown" in records.source_hash_note([_with(None), _with(None)])
