"""The command-line tools: shared flags and parsing (common, loss_flags) and the body of each entry point."""
