"""Everything in Redis: key names, the write script, reads, leases, rules and alerts."""
