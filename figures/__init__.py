"""Figures: one small script per figure; each makes its runs through ufm (simulate, train), reads their
run directories and draws. No metric is computed here: the numbers come from the runs and analysis."""
