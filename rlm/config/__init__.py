"""Typed settings, loaded once at the edge: defaults < YAML < .env < environment < flags/kwargs."""

from rlm.config.settings import (
                                 CONFIG_ENV_VAR,
                                 FIELDS,
                                 FieldSpec,
                                 LoadedSettings,
                                 RunSettings,
                                 Settings,
                                 describe_settings,
                                 env_table,
                                 load_settings,
                                 settings_from_mapping,
)

__all__ = ["CONFIG_ENV_VAR", "FIELDS", "FieldSpec", "LoadedSettings", "RunSettings", "Settings",
           "describe_settings", "env_table", "load_settings", "settings_from_mapping"]
