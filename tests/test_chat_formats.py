"""Chat-formatted data: TRL's conversational preference rows and `data.apply_chat_template`
on plain rows, both rendered with the tokenizer's chat template so that only the assistant
completion is scored; hub ids offline; a local copy of a model folder."""

import json
import shutil

import pytest
from data_files import assert_rows_refused, data_cfg, write_jsonl
from trainer_helpers import DEMO, run_trainer

from trainer.builtin import DEMO_DATA_DIR
from trainer.data import DataError, collate, load_splits, render_row, rows_from_records, tokenize_rows
from trainer.model import ModelError, resolve_model_path
from trainer.preflight import preflight
from trainer.pure.config import config_from_dict


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def demo_rows(n):
    lines = (DEMO_DATA_DIR / "train.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[:n]]


def conversational(rows, implicit_prompt=False):
    """Demo rows as TRL conversational rows (explicit prompt, or the prompt folded into both
    conversations, TRL's implicit-prompt form)."""
    out = []
    for r in rows:
        if implicit_prompt:
            out.append({"chosen": [user(r["prompt"]), assistant(r["chosen"])],
                        "rejected": [user(r["prompt"]), assistant(r["rejected"])]})
        else:
            out.append({"prompt": [user(r["prompt"])], "chosen": [assistant(r["chosen"])],
                        "rejected": [assistant(r["rejected"])]})
    return out


@pytest.fixture(scope="module")
def model_dir():
    return resolve_model_path("builtin:tiny")


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(model_dir)


@pytest.fixture
def no_template_dir(tmp_path, model_dir):
    folder = tmp_path / "no-template"
    shutil.copytree(model_dir, folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    del config["chat_template"]
    config_file.write_text(json.dumps(config))
    return folder


def scored_tokens(pair):
    """The target ids the loss scores for the chosen and the rejected side, read back from
    the very mask it uses."""
    b = collate([pair], pad_id=0)
    return tuple([int(t) for t, m in zip(b["targets"][i], b["mask"][i]) if m] for i in (0, 1))


def check_masking(tokenizer, row, prompt_messages, chosen_text, rejected_text):
    """The scored tokens are exactly the assistant content plus the template's end of turn;
    the unscored prefix is exactly the template's prompt with the generation prompt."""
    hf = tokenizer._tokenizer
    pair = tokenize_rows([row], tokenizer, max_seq_length=1024)[0][0]
    scored_c, scored_r = scored_tokens(pair)
    assert scored_c == list(pair.chosen) and scored_r == list(pair.rejected)

    prompt_render = hf.apply_chat_template(prompt_messages, add_generation_prompt=True, tokenize=False)
    assert tokenizer.decode(list(pair.prompt)) == prompt_render
    assert prompt_render.endswith("<|im_start|>assistant\n")  # the generation prompt is unscored
    assert tokenizer.decode(scored_c) == chosen_text + "<|im_end|>\n"
    assert tokenizer.decode(scored_r) == rejected_text + "<|im_end|>\n"
    # The end of turn is the template's own token, once: no EOS appended after it.
    # (This tokenizer's EOS is <|im_end|>, so a duplicated EOS would show as a second one.)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token_id == im_end
    assert scored_c.count(im_end) == 1 and scored_r.count(im_end) == 1
    assert list(pair.prompt) == hf(prompt_render, add_special_tokens=False)["input_ids"]
    # The whole chosen sequence is the template's rendering of the whole conversation.
    full = hf.apply_chat_template(prompt_messages + [assistant(chosen_text)], tokenize=False)
    assert tokenizer.decode(list(pair.prompt + pair.chosen)) == full


# ---------------------------------------------------------------------------- masking


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit_prompt", "implicit_prompt"])
def test_conversational_rows_score_only_the_assistant_turn(tmp_path, tokenizer, implicit):
    raw = demo_rows(3)
    f = write_jsonl(tmp_path / "chat.jsonl", conversational(raw, implicit_prompt=implicit))
    splits = load_splits(data_cfg(f, valid_fraction=0.0), seed=0)
    row = splits.train[0]
    assert row.chat is not None and not row.chat.wrapped
    assert row.prompt == raw[0]["prompt"] and row.chosen == raw[0]["chosen"]
    check_masking(tokenizer, row, [user(raw[0]["prompt"])], raw[0]["chosen"], raw[0]["rejected"])


def test_multi_turn_prompt_and_system_message(tokenizer):
    record = {
        "prompt": [{"role": "system", "content": "Be kind."}, user("Hi"), assistant("Hello!"), user("Add 2 and 3?")],
        "chosen": [assistant("It is 5.")],
        "rejected": [assistant("5. DUH.")],
    }
    (row,) = rows_from_records([record], list(record), "mem", data_cfg("x"))
    check_masking(tokenizer, row, record["prompt"], "It is 5.", "5. DUH.")


def test_apply_chat_template_wraps_plain_rows(tmp_path, tokenizer):
    raw = demo_rows(3)
    f = write_jsonl(tmp_path / "plain.jsonl", raw)
    plain = load_splits(data_cfg(f, valid_fraction=0.0), seed=0).train[0]
    assert plain.chat is None  # off by default: plain rows stay as they were
    row = load_splits(data_cfg(f, valid_fraction=0.0, apply_chat_template=True), seed=0).train[0]
    assert row.chat.wrapped
    check_masking(tokenizer, row, [user(raw[0]["prompt"])], raw[0]["chosen"], raw[0]["rejected"])
    rendered = render_row(row, tokenizer)
    assert rendered.templated and rendered.exact


def test_template_that_does_not_render_the_prompt_as_a_prefix(tokenizer, monkeypatch):
    """The token-level fallback: the boundary is the longest shared token prefix."""
    hf = tokenizer._tokenizer
    # Like templates whose generation prompt opens a reasoning block that the rendered
    # assistant turn does not have: the prompt render is not a prefix of the conversation.
    template = (
        "{%- for m in messages -%}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}"
        "{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n<think>' -}}{%- endif -%}"
    )
    monkeypatch.setattr(hf, "chat_template", template)
    record = {"prompt": [user("Hi?")], "chosen": [assistant("Hello.")], "rejected": [assistant("GO.")]}
    (row,) = rows_from_records([record], list(record), "mem", data_cfg("x"))
    assert not render_row(row, tokenizer).exact
    pair = tokenize_rows([row], tokenizer, 1024)[0][0]
    full = hf.apply_chat_template(record["prompt"] + record["chosen"], tokenize=False)
    assert tokenizer.decode(list(pair.prompt + pair.chosen)) == full
    assert "Hi?" in tokenizer.decode(list(pair.prompt))
    assert tokenizer.decode(list(pair.chosen)).endswith("Hello.<|im_end|>\n")
    assert "Hi?" not in tokenizer.decode(list(pair.chosen))


def test_preflight_shows_the_templated_prompt_masked(tmp_path):
    raw = demo_rows(12)
    f = write_jsonl(tmp_path / "chat.jsonl", conversational(raw))
    report = preflight(config_from_dict({"data": {"path": str(f)}}, "test"))
    assert report["error"] is None and report["format"] == "conversational"
    segments = report["first_row"]["segments"]
    assert [(s["role"], s["scored"]) for s in segments] == [("prompt", False), ("chosen", True), ("rejected", True)]
    assert segments[0]["text"].startswith("<|im_start|>user\n") and segments[0]["text"].endswith("<|im_start|>assistant\n")
    first = report["first_row"]["origin"].rsplit("row ", 1)[1]
    assert first == "1" and segments[1]["text"] == raw[0]["chosen"] + "<|im_end|>\n"
    report = preflight(config_from_dict({"data": {"path": str(write_jsonl(tmp_path / "p.jsonl", raw)),
                                                  "apply_chat_template": True}}, "test"))
    assert report["format"] == "prompt+chat_template" and report["error"] is None


# ---------------------------------------------------------------------------- errors


def test_a_tokenizer_without_a_chat_template_is_a_clear_error(tmp_path, no_template_dir):
    from mlx_lm.utils import load_tokenizer

    tok = load_tokenizer(no_template_dir)
    raw = demo_rows(2)
    chat = load_splits(data_cfg(write_jsonl(tmp_path / "chat.jsonl", conversational(raw)), valid_fraction=0.0), seed=0)
    with pytest.raises(DataError) as err:
        tokenize_rows(chat.train, tok, 256)
    text = str(err.value)
    assert "\n" not in text and str(no_template_dir) in text and "no chat template" in text
    assert "chat.jsonl: row 1" in text

    plain = load_splits(data_cfg(write_jsonl(tmp_path / "plain.jsonl", raw), valid_fraction=0.0,
                                 apply_chat_template=True), seed=0)
    with pytest.raises(DataError, match=r"no chat template, which data\.apply_chat_template = true needs") as err:
        tokenize_rows(plain.train, tok, 256)
    assert str(no_template_dir) in str(err.value)
    # Plain rows without the option need no template.
    tokenize_rows(load_splits(data_cfg(tmp_path / "plain.jsonl", valid_fraction=0.0), seed=0).train, tok, 256)

    report = preflight(config_from_dict({"model": {"path": str(no_template_dir)},
                                         "data": {"path": str(tmp_path / "chat.jsonl")}}, "test"))
    assert "no chat template" in report["error"]


GOOD = conversational(demo_rows(1))[0]


@pytest.mark.parametrize(
    "rows, message",
    [
        ([GOOD, demo_rows(1)[0]], "row 2: plain row in a dataset of conversational rows"),
        ([demo_rows(1)[0], GOOD], "row 2: conversational row in a dataset of plain rows"),
        ([{**GOOD, "rejected": "just text"}], "row 1: mixes formats: 'prompt' is a list of messages but 'rejected' is a str"),
        ([GOOD, {**GOOD, "chosen": [{"role": "assistant"}]}], "row 2: 'chosen' message 1: 'content' is missing"),
        ([GOOD, {**GOOD, "chosen": [{"content": "x"}]}], "row 2: 'chosen' message 1: 'role' is missing"),
        ([{**GOOD, "rejected": [{"role": "assistant", "content": 3}]}], "row 1: 'rejected' message 1: 'content' must be a string, got int"),
        ([{**GOOD, "prompt": ["hello"]}], "row 1: 'prompt' message 1: expected an object"),
        ([{**GOOD, "chosen": []}], "row 1: 'chosen' has no messages"),
        ([{**GOOD, "chosen": [user("again"), assistant("x")]}], "completions must be assistant messages"),
        ([{"chosen": [assistant("a")], "rejected": [assistant("b")]}], "share no leading messages"),
    ],
)
def test_malformed_chat_rows_name_the_file_and_row(tmp_path, rows, message):
    assert_rows_refused(tmp_path / "bad.jsonl", rows, message)


def test_apply_chat_template_needs_a_prompt_column(tmp_path):
    f = write_jsonl(tmp_path / "flat.jsonl", [{"chosen": "a", "rejected": "b"}])
    with pytest.raises(DataError, match="data.apply_chat_template needs a 'prompt' column"):
        load_splits(data_cfg(f, apply_chat_template=True), seed=0)


# ---------------------------------------------------------------------------- hub ids and local copies


def test_uncached_hub_ids_offline_say_so_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        load_splits(data_cfg("someorg/nonexistent"), seed=0)
    assert str(err.value) == "data.path: hub dataset 'someorg/nonexistent': offline and not in the local cache"
    with pytest.raises(ModelError) as err:
        resolve_model_path("someorg/nonexistent")
    assert str(err.value) == "model.path: hub model 'someorg/nonexistent': offline and not in the local hub cache"


def test_cli_hub_model_offline_exits_2_with_one_line(tmp_path):
    proc = run_trainer(str(DEMO), "--runs-dir", str(tmp_path / "runs"), "--set", "model.path=someorg/nonexistent")
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "offline and not in the local hub cache" in line and "someorg/nonexistent" in line


def test_local_model_copy_trains_on_a_conversational_file(tmp_path, model_dir):
    """End to end through the CLI: a local folder copy of the built-in model as model.path,
    a dozen conversational rows as data.path."""
    local_model = tmp_path / "my-model"
    shutil.copytree(model_dir, local_model)
    assert resolve_model_path(str(local_model)) == local_model
    data = write_jsonl(tmp_path / "chat.jsonl", conversational(demo_rows(12)))
    proc = run_trainer(
        str(DEMO), "--runs-dir", str(tmp_path / "runs"),
        "--set", f"model.path={local_model}", "--set", f"data.path={data}",
        "--set", "training.iters=4", "--set", "training.steps_per_eval=0",
        "--set", "training.batch_size=4", "--set", "training.steps_per_report=2",
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "runs" / proc.stdout.splitlines()[0]
    run_dir = run_dir if run_dir.is_dir() else next((tmp_path / "runs").iterdir())
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "completed" and status["step"] == 4
    assert (run_dir / "adapters" / "adapters.safetensors").is_file()
    log = (run_dir / "train.log").read_text()
    assert "chat.jsonl" in log and str(local_model) in log
