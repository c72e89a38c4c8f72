"""`layer-shell` and entering a layer: the hot path, standard library only
(tests/test_hot_path.py imports it with click, yaml and rich made unimportable)."""
