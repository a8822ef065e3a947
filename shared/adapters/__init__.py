"""What talks to the outside: the event log and every SQL table, migrations, the bus (NATS
JetStream: streams, relay, consumers, credentials), timers, idempotency keys, the
delegation register's store, tokens and keys, and what counts as an outage."""
