"""The HTTP side shared by the services: the FastAPI runtime (start-up, readiness, the
bus), problem+json answers and input guards, metrics, and the workflow's routes."""
