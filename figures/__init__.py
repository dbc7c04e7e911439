"""Figures: small scripts that read run directories (and analysis) and draw; they never train."""
