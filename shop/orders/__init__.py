"""Orders: line snapshots, the status state machine and its event history."""
