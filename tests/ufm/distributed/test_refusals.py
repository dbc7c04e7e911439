"""What a data-parallel run refuses, with one line naming why (no process group is started here)."""

import pytest

import ufm
from ufm.config import SimConfig
from ufm.distributed import check_shardable
from ufm.fit.shard import Shard
from ufm.problem import resolve


def test_distributed_needs_an_initialized_process_group():
    with pytest.raises(ValueError, match="needs an initialized process group"):
        ufm.run(SimConfig(K=3, n=2, d=4, steps=2), distributed=True, progress=False)
    with pytest.raises(TypeError, match="distributed"):
        ufm.run(SimConfig(K=3, n=2, d=4, steps=2), distributed="yes", progress=False)


@pytest.mark.parametrize(("settings", "words"), [
    (dict(optimizer="lbfgs"), "not lbfgs"),
    (dict(loss="supcon", normalize="features"), "one-layer UFM of free features"),
    (dict(loss="focal"), "closed-form gradient"),
    (dict(depth=2), "one-layer UFM"),
])
def test_what_cannot_be_sharded_is_refused(settings, words):
    with pytest.raises(ValueError, match=words) as e:
        check_shardable(resolve(SimConfig(K=3, n=2, d=4, **settings)), 2)
    assert "\n" not in str(e.value)


def test_more_processes_than_samples_is_refused():
    with pytest.raises(ValueError, match="4 processes need at least 4 samples, got N = 3"):
        check_shardable(resolve(SimConfig(K=3, n=1, d=4)), 4)


def test_the_shards_partition_the_rows_in_contiguous_blocks():
    shards = [Shard(r, 4, 13) for r in range(4)]
    assert [(s.start, s.stop) for s in shards] == [(0, 3), (3, 6), (6, 9), (9, 13)]
    assert sum(s.size for s in shards) == 13 and shards[0].main and not shards[1].main
