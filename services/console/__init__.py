"""The staff console: caseflow's pages for the people at the station, the town, the
departments and the audit, served by a fourth service that calls the other three's APIs
with the signed-in member's token (it keeps no case data of its own)."""
