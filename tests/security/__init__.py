"""The security suite: every trust boundary of issue 11, tried from outside.

``pytest -m security`` runs all of it. The matrix here, ``test_cross_station.py``, sends
every role at every organisation (and at none) every operation of the three OpenAPI
documents aimed at another station's things (on SQLite, unless it is an end-to-end
backend, the roles of four organisations: another station, the town, the audit body and
one that doesn't exist); the other parts live beside the code they test and carry the
``security`` mark (``SECURITY_SUITE`` in ``tests/conftest.py``):

- the bus: anonymous and unknown seeds, every subject a department or a service may not
  use, revoked credentials, answers not a department's to give, forged events, personal
  data on the event stream;
- Idempotency-Keys reused across users and stations, forged key rows;
- token claims against the registry (organisation, role, special permissions);
- webhooks aimed inward (every spelling of the inside, DNS rebinding, redirects) and what
  a receiver's answer may reveal;
- bad input (ID numbers, phones, names, duplicate JSON keys, another station's visit);
- outages answered 503, ``/metrics`` only for operators.
"""
