"""Speed paths must not change the numbers: each is checked against the plain reference on
the same batch (issue: loss equal to 1e-4)."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from trainer import data as D
from trainer import layouts
from trainer.layouts import choose_layouts, gather_to_device, positions, shared_to_device, to_device
from trainer.loop import prepare
from trainer.model import output_head
from trainer.pure import metrics as M
from trainer.pure.config import config_from_dict
from trainer.run_control import RunLog, StopFlag
from trainer.shared_prefix import collate_shared
from trainer.step import make_loss_fn

BETA = 0.1  # orpo.beta's default


def use_gathered_head(model: nn.Module, batch: dict, use_scores: bool) -> bool:
    """Whether projecting only the scored positions gives this model's own numbers on `batch`."""
    if output_head(model) is None:
        return False
    reference = layouts._layout_metrics(model, BETA, use_scores, to_device(batch), fast=False)
    return layouts._same(reference, layouts._layout_metrics(model, BETA, use_scores, (*to_device(batch), gather_to_device(batch))))


def use_shared_prefix(model: nn.Module, pairs: list, pad_id: int, use_scores: bool) -> bool:
    """Whether running each pair's shared prefix once gives this model's own numbers."""
    return choose_layouts(model, pairs, pad_id, BETA, use_scores)[1]


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    log = RunLog(tmp_path_factory.mktemp("log") / "train.log", echo=False)
    return prepare(config_from_dict({"finetune": {"dropout": 0.0}}, "t"), log)


def batches(prep, n=3, size=8):
    groups = D.make_batches(prep.train_pairs, size)
    return [D.collate([prep.train_pairs[i] for i in g], 0) for g in (groups[0], groups[len(groups) // 2], groups[-1])][:n]


def test_gathered_projection_equals_full_projection(prep):
    loss_fn = make_loss_fn(0.1, False)
    grad_fn = nn.value_and_grad(prep.model, loss_fn)
    for b in batches(prep):
        (plain_loss, plain_metrics), plain_grad = grad_fn(prep.model, *to_device(b))
        (fast_loss, fast_metrics), fast_grad = grad_fn(prep.model, *to_device(b), gather_to_device(b))
        assert abs(plain_loss.item() - fast_loss.item()) < 1e-4
        for k in plain_metrics:
            assert abs(plain_metrics[k].item() - fast_metrics[k].item()) < 1e-4, k
        for (k, g1), (_, g2) in zip(tree_flatten(plain_grad), tree_flatten(fast_grad)):
            assert np.allclose(np.array(g1), np.array(g2), atol=1e-5), k


def test_gather_covers_exactly_the_scored_tokens(prep):
    b = batches(prep, n=1)[0]
    index, rows, weights = b["gather"]
    assert weights.sum() == b["mask"].sum() and len(index) % D.GATHER_MULTIPLE == 0
    flat_mask = b["mask"].reshape(-1)
    assert flat_mask[index[weights > 0]].all()
    assert (rows[weights > 0] == index[weights > 0] // b["mask"].shape[1]).all()


def test_trainer_uses_the_fast_path_only_when_it_agrees(prep):
    b = batches(prep, n=1)[0]
    assert use_gathered_head(prep.model, b, False)

    class Softcapped(nn.Module):
        """A model whose logits are post-processed: the gathered head would differ."""

        def __init__(self, inner):
            super().__init__()
            self.model = inner.model
            self.inner = inner

        def __call__(self, x):
            return 30.0 * mx.tanh(self.inner(x) / 30.0)

    assert not use_gathered_head(Softcapped(prep.model), b, False)


def test_the_layout_check_scores_with_the_runs_beta(prep, monkeypatch):
    """Rewards and margins scale with orpo.beta: the fast layouts are checked on the loss the
    run really trains, not on the default beta's."""
    b = batches(prep, n=1)[0]
    got = {beta: layouts._layout_metrics(prep.model, beta, False, to_device(b), fast=False) for beta in (0.1, 0.5)}
    for beta, metrics in got.items():
        loss, expected = make_loss_fn(beta, False)(prep.model, *to_device(b))
        assert metrics[M.LOSS].item() == pytest.approx(loss.item(), abs=1e-5)
        assert metrics[M.REWARDS_MARGINS].item() == pytest.approx(expected[M.REWARDS_MARGINS].item(), abs=1e-6)
    assert got[0.5][M.REWARDS_MARGINS].item() == pytest.approx(5 * got[0.1][M.REWARDS_MARGINS].item(), rel=1e-4)
    assert got[0.5][M.LOSS].item() != pytest.approx(got[0.1][M.LOSS].item(), abs=1e-4)

    seen = []
    check = layouts._layout_metrics
    monkeypatch.setattr(layouts, "_layout_metrics", lambda model, beta, *rest, **kw: seen.append(beta) or check(model, beta, *rest, **kw))
    pairs = [prep.train_pairs[i] for i in D.make_batches(prep.train_pairs, 4)[0]]
    assert choose_layouts(prep.model, pairs, 0, 0.7, False) == (True, True)
    assert seen == [0.7, 0.7, 0.7]  # the plain reference, the gathered head, the shared prefix


# ---------------------------------------------------------------- shared prefix


def assert_same_as_plain(prep, pairs, use_scores, grads=True):
    """Loss, every metric and every gradient of the shared-prefix layout equal the plain
    full-logits batch's."""
    loss_fn = make_loss_fn(0.1, use_scores)
    grad_fn = nn.value_and_grad(prep.model, loss_fn)
    plain, fast = D.collate(pairs, 0), collate_shared(pairs, 0)
    assert fast is not None
    (plain_loss, plain_metrics), plain_grad = grad_fn(prep.model, *to_device(plain))
    (fast_loss, fast_metrics), fast_grad = grad_fn(prep.model, *to_device(fast), gather_to_device(fast), shared_to_device(fast))
    assert abs(plain_loss.item() - fast_loss.item()) < 1e-4
    for k in plain_metrics:
        assert abs(plain_metrics[k].item() - fast_metrics[k].item()) < 1e-4, k
    if grads:
        for (k, g1), (_, g2) in zip(tree_flatten(plain_grad), tree_flatten(fast_grad)):
            assert np.allclose(np.array(g1), np.array(g2), atol=2e-5), k
    return plain, fast


def test_shared_prefix_equals_plain_on_real_batches(prep):
    groups = D.make_batches(prep.train_pairs, 8)
    for g in (groups[0], groups[len(groups) // 2], groups[-1]):
        plain, fast = assert_same_as_plain(prep, [prep.train_pairs[i] for i in g], use_scores=False)
        assert fast["tokens"] == plain["tokens"]  # tokens/s means the same in both layouts


def test_shared_prefix_with_scored_prefix_tokens_padding_and_scores(prep):
    """Prompts of different lengths (left padding), answers that start alike (scored tokens
    inside the shared prefix), a flat row with a common start, identical answers, and
    preference scores."""
    tok = prep.tokenizer

    def ids(text):
        return tuple(tok.encode(text, add_special_tokens=False))

    eos = (tok.eos_token_id,)
    pairs = [
        D.Pair(ids("Tell me about the sea, please."), ids(" Sure, the sea is wide and deep.") + eos, ids(" Sure, no.") + eos, 0.9),
        D.Pair(ids("Hi"), ids(" Hello there, friend!") + eos, ids(" WHAT") + eos, 1.0),
        D.Pair((), ids("The answer is forty two, as computed.") + eos, ids("The answer is NOTHING.") + eos, 0.5),
        D.Pair(ids("Same?"), ids(" yes") + eos, ids(" yes") + eos, 1.0),
    ]
    plain, fast = assert_same_as_plain(prep, pairs, use_scores=True)
    pads = fast["shared"][1]
    assert len(set(pads.tolist())) > 1  # rows really are left-padded by different amounts
    assert len(fast["shared"]) == 12  # scored tokens inside the prefix exist and are counted


def test_training_with_the_shared_prefix_equals_training_without(tmp_path, monkeypatch):
    """The layout changes only the speed: same batches, same losses, same validation."""
    import json

    import trainer.loop as L
    from trainer.reporter import RunFolderReporter

    def run(name: str) -> tuple[list, list, str]:
        cfg = config_from_dict({"finetune": {"dropout": 0.0}, "training": {
            "iters": 6, "steps_per_report": 1, "steps_per_eval": 3, "sample_prompts": 0, "val_batches": 2}}, "t")
        run_dir = tmp_path / name
        run_dir.mkdir()
        log = RunLog(run_dir / "train.log", echo=False)
        reporter = RunFolderReporter(run_dir, log)
        L.train(run_dir, cfg, prepare(cfg, log), reporter, StopFlag(), None)
        reporter.close()
        events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return ([e["loss"] for e in events if e["event"] == "train"], [e["loss"] for e in events if e["event"] == "val"],
                (run_dir / "train.log").read_text())

    fast_train, fast_val, fast_log = run("fast")
    monkeypatch.setattr(L, "choose_layouts", lambda *a, **k: (True, False))  # gathered head, no shared prefix
    plain_train, plain_val, plain_log = run("plain")
    assert "prompt runs through the model once" in fast_log and "prompt runs through" not in plain_log
    assert len(fast_train) == 6 and fast_train == pytest.approx(plain_train, abs=1e-4)
    assert len(fast_val) == 3 and fast_val == pytest.approx(plain_val, abs=1e-4)
    assert fast_train[-1] < fast_train[0]


def test_shared_prefix_is_refused_for_a_model_that_ignores_the_cache(prep):
    """A body that drops the kept keys/values (like a model with its own attention code)
    would score each answer without its prompt: the trainer must notice and not use it."""
    pairs = [prep.train_pairs[i] for i in D.make_batches(prep.train_pairs, 4)[0]]
    assert use_shared_prefix(prep.model, pairs, 0, False)

    class Body(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.layers = inner.layers
            self.embed_tokens = inner.embed_tokens

        def __call__(self, inputs, cache=None):
            return self.inner(inputs)

    class NoCache(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.model = Body(inner.model)
            self.outer = inner
            if hasattr(inner, "lm_head"):
                self.lm_head = inner.lm_head

        def __call__(self, inputs):
            return self.outer(inputs)

    wrapped = NoCache(prep.model)
    assert use_gathered_head(wrapped, D.collate(pairs, 0), False)  # the head check alone passes
    assert not use_shared_prefix(wrapped, pairs, 0, False)


def test_compiled_step_drops_its_least_recently_used_shapes_past_its_budget(prep, monkeypatch):
    """Each new input shape costs the compiled step host memory; past the budget the
    generation of shapes used least recently is dropped, not every graph, and the step still
    trains (same numbers as before)."""
    import mlx.optimizers as optim

    from trainer.step import ShapeBoundedStep, make_train_step

    monkeypatch.setattr(ShapeBoundedStep, "MAX_COMPILED_SHAPES", 4)
    monkeypatch.setattr(ShapeBoundedStep, "GENERATIONS", 2)  # of 2 shapes each
    cfg = config_from_dict({"finetune": {"dropout": 0.0}}, "t")
    opt = optim.AdamW(learning_rate=0.0)  # no update: every call sees the same weights
    opt.init(prep.model.trainable_parameters())
    built = []
    step = ShapeBoundedStep(lambda: built.append(1) or make_train_step(prep.model, opt, cfg, False))
    base = prep.train_pairs[0]

    def shape(n):
        return (*to_device(D.collate([D.Pair(base.prompt + base.prompt[:1] * n * 16, base.chosen, base.rejected, 1.0)], 0)), None, True)

    losses = {}
    for n in (1, 2, 3, 4, 1, 5):
        losses.setdefault(n, []).append(step(*shape(n))[0]["loss"].item())
    # 1, 2 fill the first function, 3, 4 the second; 1 runs cached and makes the second the
    # least recently used, so 5 drops it (3 and 4) and starts a third
    assert len(built) == 3 and step.rebuilds == 1
    assert [n for n in range(1, 6) if step.holds(*shape(n))] == [1, 2, 5]
    losses[1].append(step(*shape(1))[0]["loss"].item())
    assert len(built) == 3
    assert losses[1] == pytest.approx([losses[1][0]] * 3, abs=1e-6)


@pytest.mark.parametrize("ranks", [1, 2])
def test_an_epoch_of_the_demo_fits_the_compiled_step_shape_budget(prep, ranks):
    """The compiled step keeps at most MAX_COMPILED_SHAPES graphs and throws them all away
    past that: a demo epoch with more distinct shapes traced and compiled nearly every step
    (54 shapes in 54 batches when widths were exact). Counted with the step's own key, in the
    layouts the trainer chooses, for one rank and each of two ranks' shares."""
    from trainer.layouts import BatchLayout
    from trainer.step import ShapeBoundedStep
    from trainer.team import Team

    cfg = config_from_dict({}, "t")  # the demo preset's model, data and batch size
    groups = D.make_batches(prep.train_pairs, cfg.training.batch_size)
    pad = D.pad_id(prep.tokenizer)
    layout = BatchLayout(pad, *choose_layouts(prep.model, [prep.train_pairs[i] for i in groups[0]], pad, BETA, False))
    assert layout.sharing  # the demo's layout, whose exact widths made every batch a new shape
    weight = (mx.array(1.0),) if ranks > 1 else ()
    shapes = [set() for _ in range(ranks)]
    for idx in groups:
        step = set()
        for rank in range(ranks):
            arrays, extra, _, _ = layout.team_batch(prep.train_pairs, idx, Team(rank=rank, size=ranks))
            key = ShapeBoundedStep.signature(*arrays, None, True, *extra, *weight)
            shapes[rank].add(key)
            step.add(key)
        # Every rank runs a graph of one shape each step: before, each padded its own share
        # and the two shapes differed at 49 of the demo's 54 steps, so ranks did unequal work
        # and compiled at different steps, each waiting for the other at the all-reduce.
        assert len(step) == 1, idx
    assert all(len(s) <= ShapeBoundedStep.MAX_COMPILED_SHAPES for s in shapes), [len(s) for s in shapes]


def test_ranks_pad_their_shares_alike_and_score_the_same(prep):
    """Shares padded to one another's sizes (wider rows, more weight-0 scored positions, a
    scored prefix on a rank that has none) give each share the numbers it gives alone."""
    from trainer.layouts import BatchLayout

    pad = D.pad_id(prep.tokenizer)
    base = prep.train_pairs[0]
    word = base.chosen[:1]
    # Share 0: a short answer after a prompt; share 1: a long flat row (its prefix scored).
    first = [D.Pair(word * 24, word * 3 + (1,), (2,) * 5 + (1,), 1.0)]
    second = [D.Pair((), word * 38 + (3,) * 20 + (1,), word * 38 + (2,) * 9 + (1,), 1.0)]
    layout = BatchLayout(pad, True, True)
    alone = layout.host_batch(first)
    padded = layout.host_batch(first, [second])
    assert "shared" in padded and padded["sizes"] == layout.host_batch(second, [first])["sizes"]
    assert padded["sizes"]["width"] > alone["sizes"]["width"] and "prefix_gather" in padded["sizes"]
    assert "prefix_gather" not in alone["sizes"]
    model = prep.model
    model.eval()
    try:
        from trainer.layouts import gather_to_device, shared_to_device, to_device
        from trainer.step import make_loss_fn

        loss_fn = make_loss_fn(BETA, False)
        got = [loss_fn(model, *to_device(b), gather_to_device(b), shared_to_device(b)) for b in (alone, padded)]
    finally:
        model.train()
    for key in got[0][1]:
        assert float(got[0][1][key]) == pytest.approx(float(got[1][1][key]), abs=1e-5), key


def test_shared_prefix_runs_each_prompt_once(prep):
    """Long prompts, short answers of different lengths: the shared layout runs the prompt
    once and pads chosen and rejected each only to their own longest."""
    base = prep.train_pairs[0]
    word = base.chosen[:1]
    pairs = [D.Pair(word * (96 + i), word * (4 + 3 * i) + (1,), (2,) * (20 - 2 * i) + (1,), 1.0) for i in range(4)]
    plain, fast = assert_same_as_plain(prep, pairs, use_scores=False, grads=False)
    # plain: 8 rows x 128 (longest 116, padded to 16); shared: 4 x 98 prefix (each prompt
    # less its last position, whose output scores the first answer token), 4 x 14 chosen,
    # 4 x 21 rejected, each rounded up data.bucket's ladder (to 112, 16 and 24)
    assert positions(plain) == 8 * 128 and positions(fast) == 4 * 112 + 4 * 16 + 4 * 24


ARCHITECTURES = {
    # mlx-lm models with relative (rotary) positions and the usual cache/mask hooks
    "llama": ({}, True),
    "qwen2": ({}, True),
    "phi3": ({}, True),
    # a sliding window, softcapped attention and logits: the numbers differ from the plain
    # loss (softcapped logits), so it is refused
    "gemma2": ({"query_pre_attn_scalar": 16, "sliding_window": 8, "final_logit_softcapping": 30.0,
                "attn_logit_softcapping": 50.0}, False),
    # absolute position embeddings and its own body/head layout (`wte`): refused at the layout
    "gpt2": ({"n_ctx": 512, "n_embd": 64, "n_head": 4, "n_layer": 2, "n_positions": 512, "layer_norm_epsilon": 1e-5}, False),
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_shared_prefix_is_used_exactly_where_it_gives_the_models_own_numbers(prep, name):
    """Random small models of other mlx-lm architectures: the shared layout is accepted for
    the rotary ones (and then equals the plain loss) and refused where it would be wrong."""
    import importlib

    extra, expected = ARCHITECTURES[name]
    module = importlib.import_module(f"mlx_lm.models.{name}")
    args = {"model_type": name, "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 1024, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, **extra}
    mx.random.seed(0)
    model = module.Model(module.ModelArgs.from_dict(args))
    pairs = [prep.train_pairs[i] for i in D.make_batches(prep.train_pairs, 4)[3]]
    assert use_shared_prefix(model, pairs, 0, False) is expected
    if expected:
        loss_fn = make_loss_fn(0.1, False)
        plain, fast = D.collate(pairs, 0), collate_shared(pairs, 0)
        ref = loss_fn(model, *to_device(plain))[0].item()
        got = loss_fn(model, *to_device(fast), gather_to_device(fast), shared_to_device(fast))[0].item()
        assert abs(ref - got) < 1e-4
