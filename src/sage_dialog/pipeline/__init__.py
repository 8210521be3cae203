"""The stage runner and the SAGE loop built on it (``sage-dialog run``)."""
