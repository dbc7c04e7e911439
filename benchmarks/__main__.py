"""python -m benchmarks: every benchmark, each printing ratios against its reference."""

from benchmarks import nc_metrics

if __name__ == "__main__":
    nc_metrics.main([])
