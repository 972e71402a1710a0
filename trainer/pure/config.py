"""The experiment configuration: one frozen dataclass tree, TOML in and out.

This is the public face that the app, the trainer and the tests import from; each name is
defined in one of the modules below and only re-exported here:

- ``config_schema``: the dataclass tree, its help texts and ranges, the cross-field rules;
- ``config_fields``: how a field is declared (``opt``, ``section``) and described (FieldSpec);
- ``config_values``: one value against one rule (type coercion, range checks);
- ``config_keys``: dotted keys (listing, lookup with did-you-mean hints, get and replace);
- ``config_checks``: validation of a whole config or one value;
- ``config_overrides``: ``--set`` text to typed values;
- ``config_toml``: presets and dicts in and out;
- ``config_problems``: Problem and ConfigError.

Nothing here imports mlx, datasets or textual: the app imports it and must start fast.
"""

from trainer.pure.config_checks import check, validate, validate_field
from trainer.pure.config_fields import FieldSpec, SectionSpec
from trainer.pure.config_keys import get_value, iter_fields, iter_sections, replace_value
from trainer.pure.config_overrides import apply_overrides, parse_value
from trainer.pure.config_problems import ConfigError, Problem
from trainer.pure.config_schema import (
    Config,
    DataConfig,
    FinetuneConfig,
    ModelConfig,
    OrpoConfig,
    OutputConfig,
    QatConfig,
    QuantizeConfig,
    ReportConfig,
    TrainingConfig,
)
from trainer.pure.config_toml import (
    config_from_dict,
    config_to_dict,
    dump_toml,
    load_preset,
    parse_preset_text,
    read_preset_text,
)

__all__ = [
    "ConfigError",
    "Problem",
    "FieldSpec",
    "SectionSpec",
    "Config",
    "ModelConfig",
    "QuantizeConfig",
    "DataConfig",
    "OrpoConfig",
    "FinetuneConfig",
    "QatConfig",
    "TrainingConfig",
    "OutputConfig",
    "ReportConfig",
    "iter_fields",
    "iter_sections",
    "load_preset",
    "parse_preset_text",
    "read_preset_text",
    "config_from_dict",
    "config_to_dict",
    "dump_toml",
    "apply_overrides",
    "parse_value",
    "validate",
    "validate_field",
    "check",
    "get_value",
    "replace_value",
]
