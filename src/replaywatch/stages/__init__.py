"""The pipeline's stages: prepare (decode, compare, encode) and write (the commit point)."""
