"""YAML configs shipped with the package: model presets (models/*.yaml) and method configs (methods/*.yaml).

A package only so that an installed clinfuse finds them with importlib.resources, wherever it runs.
"""
