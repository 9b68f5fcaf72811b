"""Routing policies shipped with the package (YAML); `default.yaml` is used unless told otherwise."""
