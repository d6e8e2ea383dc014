"""The run-cache key covers the data section and is the same in every process."""

import os
import subprocess
import sys

import pytest

from rtinst.config import load_config
from rtinst.records import config_hash

BASE = ["model.name=fastinst"]


@pytest.mark.parametrize("override", [
    "data.train_short_edge=[480, 640]",  # always hashed
    "data.test_short_edge=512",
    "data.hflip_prob=0.0",
    "data.synthetic_seed=1",
    "data.synthetic_train=100",
    "data.size_divisibility=1",
    "data.fixed_size=320",
    "data.crop_prob=0.5",  # hashed once set (added after the committed runs)
    "data.photometric_distort=true",
])
def test_configs_that_differ_only_in_data_hash_differently(override):
    assert config_hash(load_config(overrides=BASE + [override])) != config_hash(load_config(overrides=BASE))


def test_the_hash_is_stable_across_processes_and_spellings():
    cfg = load_config(overrides=BASE + ["data.test_short_edge=512"])
    again = load_config(overrides=["data.test_short_edge=512", *BASE])  # keys in another order
    assert config_hash(again) == config_hash(cfg)
    code = ("from rtinst.config import load_config; from rtinst.records import config_hash; "
            "print(config_hash(load_config(overrides=['model.name=fastinst', 'data.test_short_edge=512'])))")
    for hash_seed in ("1", "2"):  # a hash built on Python's salted hash() would differ here
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == config_hash(cfg)
