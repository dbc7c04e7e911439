"""python -m benchmarks: every benchmark, each printing ratios against its reference measured in the same run."""

from benchmarks import nc_metrics, ufm_step

if __name__ == "__main__":
    nc_metrics.main([])
    print()
    ufm_step.main([])
