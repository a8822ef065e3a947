"""The station statistics: the projection that counts (from the domain's tally), reading a
period's report from it, and rendering it (table, CSV, printable HTML)."""
