"""Run identity stays put: every committed run's config.yaml still hashes to what it did.

A run folder is ``<model>-<preset>-<config hash>``; the sweep finds a cached run by that
name. A new config field that changed the hash of existing configs (see ``HASHED_IF_SET`` in
rtinst/config_schema.py) or a change to :func:`rtinst.records.config_hash` would silently orphan
every committed record, and the next ``rtinst reproduce`` would retrain them all.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from rtinst.config import load_config
from rtinst.records import config_hash, read_record

RUNS = Path(__file__).resolve().parents[1] / "results" / "runs"
ARCHIVE_INDEX = RUNS.parent / "archive" / "INDEX.csv"  # written by `rtinst records archive`

# Folders whose config.yaml hashes to another name today (2026-12-03): recorded before the
# tiny backbone weights file or the hash rule last changed. Their records are still tabulated
# by folder; the set must neither grow (a hash changed) nor shrink (one came back by accident);
# a name archived (results/archive/INDEX.csv) has left the runs folder and is no longer checked.
STALE_NAMES = {
    "fastinst-tiny-004954d8c92d",
    "fastinst-tiny-38fffb86b802",
    "fastinst-tiny-68280cace3f8",
    "fastinst-tiny-9c7fc87bb5e7",
    "fastinst-tiny-a602629f9bc4",
    "fastinst-tiny-a6d7dd4d9c7b",
    "fastinst-tiny-ed4e9a00b9b1",
    "sparseinst-tiny-07bb79590095",
    "sparseinst-tiny-cc8fe6500b19",
    "sparseinst-tiny-dc483fd0addd",
    "yolact-tiny-0dfdbd473b38",
    "yolact-tiny-1560d713b55c",
    "yolact-tiny-456cb24b28d7",
    "yolact-tiny-497a4fcb5d50",
    "yolact-tiny-53e6df3aa0dd",
    "yolact-tiny-55deb084685d",
    "yolact-tiny-64a9706a2d5b",
    "yolact-tiny-7058114a1eeb",
    "yolact-tiny-7e43c99ef7a5",
    "yolact-tiny-8b2aa291cf6c",
    "yolact-tiny-9b4fa6d11dc2",
    "yolact-tiny-a8cc2adc8f90",
    "yolact-tiny-d94bedb4963a",
    "yolact-tiny-f5c81873e0e7",
    "yolact-tiny-fa710a52d416",
}


def archived() -> set[str]:
    """Runs moved out of the runs folder (their names are no longer folders to check)."""
    if not ARCHIVE_INDEX.is_file():
        return set()
    with open(ARCHIVE_INDEX, newline="") as f:
        return {row["run"] for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def rehashed() -> dict[str, str]:
    runs = sorted(d for d in RUNS.iterdir() if (d / "config.yaml").is_file())
    if not runs:
        pytest.skip("no committed run folders")
    return {d.name: config_hash(load_config(d / "config.yaml")) for d in runs}


def _decoder_revision_1(name: str) -> bool:
    """FastInst runs trained before the pixel decoder followed the official top-down path
    (revision 2, results/runs/rehashed_pixel_decoder_rev2.json): their config.yaml has no
    ``pixel_decoder_revision``, so they hash to a revision-2 name that is not theirs."""
    text = (RUNS / name / "config.yaml").read_text()
    return name.startswith("fastinst-") and "pixel_decoder_revision" not in text


def test_committed_runs_hash_to_their_folder_names(rehashed):
    mismatched = {name for name, h in rehashed.items() if name.rpartition("-")[2] != h}
    superseded = {name for name in rehashed if _decoder_revision_1(name)}
    assert superseded <= mismatched, "a revision-1 FastInst run still hashes to its folder name"
    mismatched -= superseded
    stale = STALE_NAMES - superseded - archived()
    assert mismatched - stale == set(), "these runs no longer hash to their folder name"
    assert stale - mismatched == set(), "these runs hash to their folder name again: drop them from STALE_NAMES"


def test_records_name_the_hash_of_their_folder(rehashed):
    for name in rehashed:
        assert read_record(RUNS / name).config_hash == name.rpartition("-")[2], name
