"""End-of-run checks: each a module with applies, compute (its summary block) and lines (its table lines)."""
