"""Local servers for development, tests and benchmarks: nats-server (one or a cluster) and
an embedded PostgreSQL on free ports. Never used by a service in production."""
