"""The pipeline's stages; each reads and writes files in a run directory."""
