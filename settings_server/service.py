"""Placeholder: the settings service lands with the settings API."""


class SettingsService:
    def __init__(self, store, registry, currency_codes_override=None):
        self.store = store
        self.registry = registry
