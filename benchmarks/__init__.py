"""Speed measurements, printed as ratios against a plain reference measured in the same run."""
