"""Prompt analysis: parse driver, Universal-Dependencies normalisation, binding rules and
alignment of words to text-encoder tokens."""
