"""Every SQL table the shared code owns, one module per concept, all in the log's
``metadata`` (``shared.adapters.tables.eventlog``) so that migrations see them together.
Notify's own tables are in ``services.notify.schema``."""
