"""The only code that talks to Rucio, Kubernetes, the audit database and files on disk."""
