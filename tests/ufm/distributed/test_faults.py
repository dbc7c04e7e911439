"""A process that dies mid-run ends the job: rank 0's collective fails within seconds and ufm.distributed turns the
backend's error into one RankFailed line (which the command line prints as its one error line)."""

import torch.multiprocessing as mp

from tests.ufm.distributed.test_parity import free_port
from tests.ufm.distributed.workers import dies


def test_a_rank_that_dies_ends_the_run_with_one_line_on_rank_0(tmp_path):
    path = tmp_path / "failure.txt"
    context = mp.spawn(dies, args=(2, free_port(), str(path)), nprocs=2, join=False)  # spawn's join would kill rank 0
    for process in context.processes:
        process.join(timeout=120)
    assert [p.exitcode for p in context.processes] == [0, 1]
    line = path.read_text()
    assert line.startswith("a process of the distributed run failed (rank 0 saw: ") and "\n" not in line
