"""Processing: runs each case's workflow."""
