"""python -m benchmarks: every benchmark, each in its own process (one's allocations must not slow the
next: measured, the UFM step ran 2× slower after the 50 000 × 2048 metrics benchmark in the same process),
each printing ratios against its reference measured in the same run."""

import subprocess
import sys

if __name__ == "__main__":
    for name in ("ufm_step", "run_loop", "deep_step", "fixed_frame", "threads", "nc_metrics", "certificate",
                 "spherical_code", "many_classes", "layer_tracking"):
        subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], check=True)
        print(flush=True)
