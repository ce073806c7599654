"""`make chaos`: the platform under faults, one experiment after another (chaos/README.md)."""
