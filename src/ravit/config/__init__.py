"""Typed configs, declared once: the model (`model`) and a training run (`run`).

`ravit.config.model` holds `ModelConfig`, whose fields' metadata declare every
model hyper-parameter once (presets, run-config sections and command-line flags
are read off it), and the presets. `ravit.config.run` holds the run config's
sections (model, data, train), layered as defaults < YAML file < key=value
overrides, and the YAML 1.2 reader of config and suite files.
"""

from ravit.config.model import (
    EXIT_HEADS,
    PRESETS,
    BranchConfig,
    ModelConfig,
    Preset,
    Setting,
    model_config,
    model_config_from,
    model_settings,
    parse_exit_heads,
    parse_layers,
    section_settings,
)
from ravit.config.run import (
    DataSection,
    ModelSection,
    RunConfig,
    TrainSection,
    build_model_config,
    parse_override,
    read_yaml_file,
    resolve_config,
)

__all__ = [
    "EXIT_HEADS",
    "PRESETS",
    "BranchConfig",
    "DataSection",
    "ModelConfig",
    "ModelSection",
    "Preset",
    "RunConfig",
    "Setting",
    "TrainSection",
    "build_model_config",
    "model_config",
    "model_config_from",
    "model_settings",
    "parse_exit_heads",
    "parse_layers",
    "parse_override",
    "read_yaml_file",
    "resolve_config",
    "section_settings",
]
