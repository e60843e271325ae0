"""Placeholder: the settings registry lands with the settings API."""


def load_registry(path=None):
    return None
