"""Typed settings, loaded once at the edge: defaults < YAML < .env < environment < flags/kwargs.

Files found in the working folder are read once trusted (:mod:`rlm.config.trust`); nothing weakens
the sandbox without ``unsafe_sandbox`` (:mod:`rlm.config.guard`); one YAML loader and one key
suggestion for settings and specs (:mod:`rlm.config.loader`)."""

from rlm.config.settings import (
                                 CONFIG_ENV_VAR,
                                 FIELDS,
                                 FieldSpec,
                                 LoadedSettings,
                                 RLMConfigWarning,
                                 RunSettings,
                                 Settings,
                                 describe_settings,
                                 env_table,
                                 load_settings,
                                 settings_from_mapping,
)

__all__ = ["CONFIG_ENV_VAR", "FIELDS", "FieldSpec", "LoadedSettings", "RLMConfigWarning", "RunSettings", "Settings",
           "describe_settings", "env_table", "load_settings", "settings_from_mapping"]
