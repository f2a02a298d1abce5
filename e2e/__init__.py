"""End-to-end checks on a real cluster (kind): see run.sh."""
