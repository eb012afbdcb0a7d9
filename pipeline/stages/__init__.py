"""One module per stage: the orchestration behind each CLI command."""
