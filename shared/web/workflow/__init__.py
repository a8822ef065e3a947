"""The workflow's HTTP routes and FastAPI dependencies, used by intake and processing."""
