"""The audit log: every write made in the back-office or the admin API, with who, what, before, after, when."""
