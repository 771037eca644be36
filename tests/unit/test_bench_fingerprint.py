"""The fingerprint tool (`bench.fingerprint`) that shows an optimisation changed no output byte."""

from __future__ import annotations

from bench import fingerprint


def test_digest_separates_items_and_reads_non_bytes_by_repr() -> None:
    assert fingerprint.digest([b"ab", b"c"]) != fingerprint.digest([b"a", b"bc"])
    assert fingerprint.digest([1, "x"]) == fingerprint.digest([b"1", b"'x'"])
    assert len(fingerprint.digest([])) == 16


def test_every_path_writes_the_same_ledger_and_states() -> None:
    lines = [line.split() for line in fingerprint.fingerprints(seed=3, activities=300)]
    by_path = {" ".join(parts[:2]): parts[2:] for parts in lines}
    objects, stored = by_path["replay objects"], by_path["replay bytes"]
    uncached, cached = by_path["batch 0"], by_path["batch 16384"]
    assert int(objects[0]) > 300  # ledger entries: several per activity
    assert objects == stored
    assert uncached == cached
    assert uncached[2] == objects[2]  # the batches' final stored states are the replay's


def test_another_seed_gives_other_fingerprints() -> None:
    assert fingerprint.fingerprints(seed=3, activities=100) != fingerprint.fingerprints(seed=4, activities=100)
