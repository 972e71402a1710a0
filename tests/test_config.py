import dataclasses
import os
from pathlib import Path

import pytest

from trainer.pure.config import (
    Config,
    ConfigError,
    FinetuneConfig,
    QuantizeConfig,
    apply_overrides,
    check,
    config_from_dict,
    config_to_dict,
    dump_toml,
    get_value,
    iter_fields,
    iter_sections,
    load_preset,
    parse_value,
    replace_value,
    validate,
    validate_field,
)

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "x.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_preset(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path) + ": ")
    return message


# ---------------------------------------------------------------- loading


def test_demo_preset_loads():
    cfg = load_preset(REPO / "presets" / "demo.toml")
    assert cfg.model.path == "builtin:tiny"
    assert cfg.data.path == "builtin:demo"
    assert cfg.description
    assert validate(cfg) == []


def test_partial_preset_fills_defaults(tmp_path):
    cfg = load_preset(write(tmp_path, "[training]\niters = 5\n"))
    assert cfg.training.iters == 5
    assert cfg.training.batch_size == 8
    assert cfg.model.quantize.bits == 0
    assert cfg == replace_value(Config(), "training.iters", 5)


def test_empty_preset_is_the_default(tmp_path):
    assert load_preset(write(tmp_path, "")) == Config()


def test_float_field_accepts_integer(tmp_path):
    cfg = load_preset(write(tmp_path, "[finetune]\nscale = 16\n"))
    assert cfg.finetune.scale == 16.0 and isinstance(cfg.finetune.scale, float)


def test_keys_list_becomes_tuple(tmp_path):
    cfg = load_preset(write(tmp_path, '[finetune]\nkeys = ["self_attn.q_proj", "self_attn.v_proj"]\n'))
    assert cfg.finetune.keys == ("self_attn.q_proj", "self_attn.v_proj")
    hash(cfg)  # the whole tree stays hashable


def test_round_trip_every_field_changed(tmp_path):
    cfg = Config(
        description="all changed",
        model=dataclasses.replace(
            Config().model, path="org/model", resolved_path="/tmp/m", quantize=QuantizeConfig(bits=4, group_size=32)
        ),
        finetune=FinetuneConfig(type="dora", rank=4, scale=1.5, dropout=0.1, num_layers=2, keys=("mlp.up_proj",)),
    )
    cfg = replace_value(cfg, "training.learning_rate", 1e-5)
    cfg = replace_value(cfg, "qat.enable", True)
    cfg = replace_value(cfg, "data.valid_fraction", 0.125)
    path = dump_toml(cfg, tmp_path / "out.toml")
    assert load_preset(path) == cfg
    assert [p.name for p in tmp_path.iterdir()] == ["out.toml"]  # no temp files left


def test_round_trip_defaults_and_only_changed(tmp_path):
    cfg = Config()
    assert load_preset(dump_toml(cfg, tmp_path / "a.toml")) == cfg
    changed = replace_value(cfg, "model.quantize.bits", 4)
    assert config_to_dict(changed, only_changed=True) == {"model": {"quantize": {"bits": 4}}}
    assert load_preset(dump_toml(changed, tmp_path / "b.toml", only_changed=True)) == changed


def test_config_to_dict_writes_lists():
    d = config_to_dict(replace_value(Config(), "finetune.keys", ["a"]))
    assert d["finetune"]["keys"] == ["a"]
    assert d["model"]["quantize"] == {"bits": 0, "group_size": 64}


# ---------------------------------------------------------------- errors


def test_unknown_key_did_you_mean(tmp_path):
    msg = load_error(tmp_path, "[training]\nlearnig_rate = 1e-4\n")
    assert "unknown key 'training.learnig_rate'" in msg
    assert "did you mean 'learning_rate'?" in msg


def test_key_in_wrong_section_points_to_the_right_one(tmp_path):
    msg = load_error(tmp_path, "[training]\nbeta = 0.2\n")
    assert "unknown key 'training.beta'" in msg and "orpo.beta" in msg


def test_unknown_section(tmp_path):
    msg = load_error(tmp_path, "[trainig]\niters = 5\n")
    assert "unknown section '[trainig]'" in msg
    assert "training" in msg


def test_unknown_nested_table(tmp_path):
    msg = load_error(tmp_path, "[model.quantise]\nbits = 4\n")
    assert "unknown key 'model.quantise'" in msg and "quantize" in msg


@pytest.mark.parametrize(
    "text, key",
    [
        ('[training]\niters = "ten"\n', "training.iters"),
        ("[training]\niters = 1.5\n", "training.iters"),
        ("[training]\niters = true\n", "training.iters"),
        ("[orpo]\nbeta = true\n", "orpo.beta"),
        ('[orpo]\nbeta = "0.1"\n', "orpo.beta"),
        ("[qat]\nenable = 1\n", "qat.enable"),
        ("[model]\npath = 3\n", "model.path"),
        ("[finetune]\nkeys = [1, 2]\n", "finetune.keys"),
        ('[finetune]\nkeys = "q_proj"\n', "finetune.keys"),
        ("[model]\nquantize = 4\n", "model.quantize"),
        ("[training.iters]\nx = 1\n", "training.iters"),
        ("training = 3\n", "training"),
    ],
)
def test_wrong_types(tmp_path, text, key):
    msg = load_error(tmp_path, text)
    assert f"{key} = " in msg
    assert "expected" in msg


def test_wrong_type_message_shape(tmp_path):
    msg = load_error(tmp_path, '[training]\niters = "ten"\n')
    assert msg.endswith('training.iters = "ten": expected an integer, got a string')


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[training]\nlearning_rate = -1e-5\n", "training.learning_rate = -1e-05: must be > 0"),
        ("[orpo]\nbeta = -0.5\n", "orpo.beta = -0.5: must be >= 0"),
        ("[finetune]\nrank = 0\n", "finetune.rank = 0: must be >= 1"),
        ("[finetune]\ndropout = 1.0\n", "finetune.dropout = 1.0: must be < 1"),
        ('[finetune]\ntype = "qlora"\n', 'finetune.type = "qlora": must be one of'),
        ("[finetune]\nnum_layers = 0\n", "finetune.num_layers = 0: must be >= 1 (or -1: all layers)"),
        ("[model.quantize]\nbits = 7\n", "model.quantize.bits = 7: must be one of 0, 2, 3, 4, 5, 6, 8"),
        ("[data]\nmax_seq_length = 4\n", "data.max_seq_length = 4: must be >= 8"),
        ("[data]\nvalid_fraction = 0.6\n", "data.valid_fraction = 0.6: must be <= 0.5"),
        ("[training]\nlearning_rate = nan\n", "training.learning_rate = nan: must be a finite number"),
        ('[model]\npath = ""\n', 'model.path = "": must not be empty'),
        ('description = """two\nlines"""\n', "description = "),
    ],
)
def test_range_errors(tmp_path, text, expected):
    msg = load_error(tmp_path, text)
    assert expected in msg


def test_range_error_exact_format(tmp_path):
    path = write(tmp_path, "[training]\nlearning_rate = -1e-5\n")
    with pytest.raises(ConfigError) as info:
        load_preset(path)
    assert str(info.value) == f"{path}: training.learning_rate = -1e-05: must be > 0"
    assert info.value.key == "training.learning_rate"


def test_special_values_are_allowed(tmp_path):
    cfg = load_preset(write(tmp_path, "[finetune]\nnum_layers = -1\n[training]\nval_batches = -1\nsteps_per_eval = 0\n"))
    assert cfg.finetune.num_layers == -1 and cfg.training.val_batches == -1


def test_toml_syntax_error_names_file_line_and_column(tmp_path):
    msg = load_error(tmp_path, "[training]\niters = 5\nbatch_size = \n")
    assert "line 3" in msg and "column" in msg
    assert "invalid TOML" in msg


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_preset(path)
    assert str(info.value) == f"{path}: no such preset file"


def test_directory_and_non_utf8(tmp_path):
    with pytest.raises(ConfigError, match="directory"):
        load_preset(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'description = "\xff"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_preset(bad)


def test_config_from_dict_source_and_partial():
    cfg = config_from_dict({"orpo": {"beta": 0.5}}, "inline")
    assert cfg.orpo.beta == 0.5 and cfg.training == Config().training
    with pytest.raises(ConfigError, match=r"^inline: unknown key 'orpo.bta'"):
        config_from_dict({"orpo": {"bta": 0.5}}, "inline")


# ---------------------------------------------------------------- cross-field


def cross(**changes) -> Config:
    cfg = Config()
    for path, value in changes.items():
        cfg = replace_value(cfg, path.replace("__", "."), value)
    return cfg


def messages(cfg: Config) -> list[str]:
    return [str(p) for p in validate(cfg)]


def test_problems_are_objects_with_key_value_and_message():
    (problem,) = validate(cross(training__iters=0))
    assert (problem.key, problem.value, problem.message) == ("training.iters", 0, "must be >= 1")


def test_cross_field_rules():
    assert "training.warmup_steps: must be less than training.iters (200)" in messages(
        cross(training__warmup_steps=200)
    )
    assert validate(cross(training__warmup_steps=199)) == []
    assert any(m.startswith("qat.start_step:") for m in messages(cross(qat__enable=True, qat__start_step=200)))
    # A disabled QAT block does not block a run.
    assert validate(cross(qat__start_step=500)) == []
    full_q = messages(cross(finetune__type="full", model__quantize__bits=4))
    assert any("full fine-tuning cannot train a quantized base" in m for m in full_q)
    assert validate(cross(finetune__type="full")) == []
    assert any(
        m.startswith("training.min_learning_rate:")
        for m in messages(cross(training__min_learning_rate=0.01, training__lr_schedule="cosine"))
    )


def test_validate_lists_every_problem_and_check_raises_first():
    cfg = cross(training__iters=0, orpo__beta=-1.0, finetune__rank=0)
    problems = messages(cfg)
    assert "orpo.beta: must be >= 0" in problems
    assert "finetune.rank: must be >= 1" in problems
    assert "training.iters: must be >= 1" in problems
    with pytest.raises(ConfigError) as info:
        check(cfg, "form")
    assert str(info.value) == "form: orpo.beta = -1.0: must be >= 0"


def test_preset_with_cross_field_error(tmp_path):
    msg = load_error(tmp_path, '[finetune]\ntype = "full"\n[model.quantize]\nbits = 4\n')
    assert "full fine-tuning cannot train a quantized base" in msg


# ---------------------------------------------------------------- --set


def test_set_nested_float_and_string():
    cfg = apply_overrides(
        Config(),
        [
            "model.quantize.bits=4",
            "training.learning_rate=1e-4",
            "model.path=mlx-community/Qwen3-0.6B-4bit",
            "qat.enable=true",
            'finetune.keys=["self_attn.q_proj", "self_attn.v_proj"]',
            "output.name=2024",
            "training.iters = 5",
        ],
    )
    assert cfg.model.quantize.bits == 4
    assert cfg.training.learning_rate == 1e-4
    assert cfg.model.path == "mlx-community/Qwen3-0.6B-4bit"
    assert cfg.qat.enable is True
    assert cfg.finetune.keys == ("self_attn.q_proj", "self_attn.v_proj")
    assert cfg.output.name == "2024"
    assert cfg.training.iters == 5


def test_set_quoted_string_and_comma_list():
    cfg = apply_overrides(Config(), ['description="a b"', "finetune.keys=q_proj, v_proj"])
    assert cfg.description == "a b"
    assert cfg.finetune.keys == ("q_proj", "v_proj")
    assert apply_overrides(cfg, ["finetune.keys=[]"]).finetune.keys == ()
    assert apply_overrides(cfg, ["finetune.keys="]).finetune.keys == ()


@pytest.mark.parametrize(
    "item, expected",
    [
        ("training.iters=abc", "--set: training.iters = \"abc\": expected an integer"),
        ("training.iters=1.5", "--set: training.iters = 1.5: expected an integer, got a float"),
        ("training.iters=0", "--set: training.iters = 0: must be >= 1"),
        ("training.iter=5", "--set: unknown key 'training.iter' (did you mean 'iters'?)"),
        ("trainig.iters=5", "--set: unknown section '[trainig]'"),
        ("model.quantize=4", "--set: 'model.quantize' is a table; set one of its keys: bits, group_size"),
        ("model.path.x=4", "--set: 'model.path' is not a table"),
        ("training.iters", "--set: expected KEY=VALUE"),
        ("qat.enable=yes", "--set: qat.enable = \"yes\": expected true or false"),
        ("training.warmup_steps=500", "--set: training.warmup_steps = 500: must be less than training.iters"),
    ],
)
def test_set_errors(item, expected):
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), [item])
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


def test_parse_value_for_form_inputs():
    assert parse_value("training.learning_rate", "3e-4") == 3e-4
    assert parse_value("training.learning_rate", "2") == 2.0
    assert parse_value("model.path", "./models/x") == "./models/x"
    with pytest.raises(ConfigError):
        parse_value("training.iters", "")


# ---------------------------------------------------------------- introspection


def test_iter_fields_covers_every_field_with_help():
    specs = iter_fields()
    paths = [s.path for s in specs]
    assert len(paths) == len(set(paths))

    def leaves(cls, prefix=""):
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.type):
                yield from leaves(f.type, prefix + f.name + ".")
            else:
                yield prefix + f.name

    assert paths == list(leaves(Config))
    for spec in specs:
        assert spec.help and "\n" not in spec.help, spec.path
        assert spec.type in (bool, int, float, str, list)
        assert validate_field(spec.path, spec.default) is None, spec.path
        assert get_value(Config(), spec.path) == spec.default
        if spec.path != "description":
            assert spec.section and spec.section_title
    by_path = {s.path: s for s in specs}
    assert by_path["orpo.reward_scaling"].reserved
    assert "reserved" in by_path["orpo.reward_scaling"].help
    assert by_path["finetune.type"].choices == ("lora", "dora", "full")
    assert by_path["model.quantize.bits"].section == "model"
    assert by_path["training.learning_rate"].min_exclusive
    for key in ["model.path", "data.max_seq_length", "orpo.beta", "finetune.num_layers", "qat.start_step",
                "training.save_every", "output.runs_dir", "model.resolved_path", "training.lr_schedule"]:
        assert key in by_path


def test_iter_sections():
    sections = {s.path: s.title for s in iter_sections()}
    assert list(sections)[:2] == ["model", "model.quantize"]
    assert set(sections) >= {"data", "orpo", "finetune", "qat", "training", "output"}


def test_validate_field():
    assert validate_field("training.iters", 5) is None
    assert validate_field("training.iters", 0) == "must be >= 1"
    assert validate_field("training.iters", "5").startswith("expected an integer")
    assert validate_field("training.iters", True).startswith("expected an integer")
    assert validate_field("training.learning_rate", 1) is None
    assert validate_field("training.learning_rate", 0.0) == "must be > 0"
    assert validate_field("finetune.type", "dora") is None
    assert validate_field("finetune.type", "x").startswith("must be one of")
    assert validate_field("finetune.keys", ["a", "b"]) is None
    assert validate_field("finetune.num_layers", -1) is None
    assert validate_field("model.quantize.bits", 0) is None
    assert validate_field("qat.bits", 0).startswith("must be one of")
    assert validate_field("training.nope", 1).startswith("unknown key 'training.nope'")


def test_get_and_replace_value():
    cfg = Config()
    assert get_value(cfg, "model.quantize") == QuantizeConfig()
    new = replace_value(cfg, "model.quantize.group_size", 32)
    assert new.model.quantize.group_size == 32 and cfg.model.quantize.group_size == 64
    assert new.model.path == cfg.model.path
    assert replace_value(cfg, "training.learning_rate", 1).training.learning_rate == 1.0
    assert replace_value(cfg, "model.quantize", QuantizeConfig(bits=8)).model.quantize.bits == 8
    # replace_value type-checks but leaves ranges to validate(), for the form.
    assert replace_value(cfg, "training.iters", -3).training.iters == -3
    with pytest.raises(ConfigError, match="expected an integer"):
        replace_value(cfg, "training.iters", "3")
    with pytest.raises(ConfigError, match="unknown key"):
        get_value(cfg, "training.nope")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.training.iters = 3  # type: ignore[misc]


def test_dump_is_atomic_over_existing_file(tmp_path):
    target = tmp_path / "p.toml"
    target.write_text("garbage")
    dump_toml(Config(description="new"), target)
    assert load_preset(target).description == "new"
    assert sorted(os.listdir(tmp_path)) == ["p.toml"]


# ---------------------------------------------------------------- upper bounds


def test_every_integer_key_has_an_upper_bound():
    unbounded = [s.path for s in iter_fields() if s.type is int and s.max is None and s.choices is None]
    assert unbounded == []


@pytest.mark.parametrize(
    "key, highest",
    [
        ("training.iters", 10_000_000),
        ("training.batch_size", 65_536),
        ("data.max_seq_length", 1_000_000),
        ("finetune.rank", 65_536),
        ("finetune.num_layers", 65_536),
        ("training.seed", 2**63 - 1),
        ("training.save_every", 10_000_000),
    ],
)
def test_integer_upper_bounds(key, highest):
    assert validate_field(key, highest) is None
    assert validate_field(key, highest + 1) == f"must be <= {highest}" + (
        " (or -1: all layers)" if key == "finetune.num_layers" else ""
    )


def test_absurd_iters_is_refused_from_a_preset_and_from_set(tmp_path):
    msg = load_error(tmp_path, "[training]\niters = 100000000000000000000000\n")
    assert msg.endswith("training.iters = 100000000000000000000000: must be <= 10000000")
    with pytest.raises(ConfigError, match=r"^--set: training.iters = 10000001: must be <= 10000000$"):
        apply_overrides(Config(), ["training.iters=10000001"])
    # The form's value is kept (replace_value does not range-check) and flagged by validate.
    cfg = replace_value(Config(), "training.iters", 10**23)
    assert [(p.key, p.message) for p in validate(cfg)] == [("training.iters", "must be <= 10000000")]


@pytest.mark.parametrize("value", ["[" * 5000 + "]" * 5000, "{b = " * 5000 + "1" + "}" * 5000])
def test_absurdly_nested_preset_is_one_line_not_a_crash(tmp_path, value):
    path = tmp_path / "deep.toml"
    path.write_text(f"a = {value}\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_preset(path)
