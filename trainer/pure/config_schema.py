"""The experiment configuration's schema: one frozen dataclass tree and its cross-field rules.

Every leaf carries its help, range and choices (see ``config_fields.opt``). Constructing the
dataclasses does *not* validate, so the form can hold a half-edited config;
``config_checks.validate`` reports what is wrong.
"""

from dataclasses import dataclass

from trainer.pure.builtin_names import DEMO_DATA, TINY_MODEL
from trainer.pure.config_fields import opt, section
from trainer.pure.config_problems import Problem
from trainer.pure.tracking import DEFAULT_PROJECT, TRACKERS
from trainer.pure.trainer_process import BACKENDS

# The group the top-level keys (description) are listed under in the form.
ROOT_TITLE = "General"

_BITS = (2, 3, 4, 5, 6, 8)
_GROUP_SIZES = (32, 64, 128)

# Upper bounds on counts no real run comes near: they catch a typo (an extra few zeros)
# before it becomes an overflow or a run that never ends, without ever refusing a real
# setting. Round numbers, so the form's range hint shows them exactly.
MAX_STEPS = 10_000_000  # steps, evaluations, batches per evaluation
MAX_WIDTH = 65_536  # pairs per batch, accumulated micro-batches, rank, layers
MAX_SEQ_TOKENS = 1_000_000
MAX_MEMORY_GB = 1_000_000.0
# TOML integers are signed 64-bit, and the MLX seed an unsigned 64-bit one.
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class QuantizeConfig:
    bits: int = opt(
        0,
        "Quantize the base model to this many bits before training (0 = keep full precision)",
        choices=(0,) + _BITS,
        special={0: "no quantization"},
        unit="bits",
    )
    group_size: int = opt(
        64, "Number of weights sharing one quantization scale", choices=_GROUP_SIZES
    )


@dataclass(frozen=True)
class ModelConfig:
    path: str = opt(
        TINY_MODEL,
        f"Base model: Hugging Face hub id, local folder, or {TINY_MODEL}",
        nonempty=True,
    )
    resolved_path: str = opt(
        "",
        "Local folder the weights were loaded from (set by the trainer in a run's config.toml)",
    )
    quantize: QuantizeConfig = section(
        QuantizeConfig, "Base quantization", "Quantize the frozen base model (QLoRA)"
    )


@dataclass(frozen=True)
class DataConfig:
    path: str = opt(
        DEMO_DATA,
        f"Dataset: hub id, folder with train/valid JSONL or Parquet, a single file, or {DEMO_DATA}",
        nonempty=True,
    )
    prompt_feature: str = opt("prompt", "Column holding the prompt", nonempty=True)
    chosen_feature: str = opt("chosen", "Column holding the preferred answer", nonempty=True)
    rejected_feature: str = opt(
        "rejected", "Column holding the dispreferred answer", nonempty=True
    )
    preference_score_feature: str = opt(
        "preference_score", "Optional column with a preference score (ignored when absent)"
    )
    max_seq_length: int = opt(
        256,
        "Longest prompt+answer kept, in tokens; longer pairs are truncated",
        min=8,
        max=MAX_SEQ_TOKENS,
        unit="tokens",
    )
    train_split: str = opt("train", "Name of the training split", nonempty=True)
    valid_split: str = opt("valid", "Name of the validation split, when the dataset has one")
    valid_fraction: float = opt(
        0.05,
        "Fraction of train held out for validation when there is no validation split",
        min=0.0,
        max=0.5,
    )
    apply_chat_template: bool = opt(
        False,
        "Wrap plain-string prompt/completion rows in the model's chat template: prompt as a "
        "user message, completion as the assistant message",
    )


@dataclass(frozen=True)
class OrpoConfig:
    beta: float = opt(0.1, "Weight of the odds-ratio term added to the NLL loss", min=0.0)
    reward_scaling: float = opt(
        1.0,
        "Accepted for mlx-lm-lora compatibility and reserved; has no effect yet",
        reserved=True,
    )


@dataclass(frozen=True)
class FinetuneConfig:
    type: str = opt(
        "lora", "What to train: LoRA adapters, DoRA adapters, or all weights", choices=("lora", "dora", "full")
    )
    rank: int = opt(8, "Rank of the LoRA/DoRA update matrices", min=1, max=MAX_WIDTH)
    scale: float = opt(20.0, "Multiplier applied to the adapter's output", min=0.0, min_exclusive=True)
    dropout: float = opt(0.0, "Dropout on the adapter's input during training", min=0.0, max=1.0, max_exclusive=True)
    num_layers: int = opt(
        -1,
        "How many of the last transformer blocks get adapters (-1 = all)",
        min=1,
        max=MAX_WIDTH,
        special={-1: "all layers"},
        unit="layers",
    )
    # A tuple keeps the tree hashable and frozen; TOML and --set give lists.
    keys: tuple[str, ...] = opt(
        (),
        "Module keys to adapt, like self_attn.q_proj (empty = every linear layer)",
    )


@dataclass(frozen=True)
class QatConfig:
    enable: bool = opt(False, "Fake-quantize the weights in the forward pass (quantization-aware training)")
    bits: int = opt(4, "Bits the fake quantizer rounds to", choices=_BITS, unit="bits")
    group_size: int = opt(64, "Weights sharing one fake-quantization scale", choices=_GROUP_SIZES)
    start_step: int = opt(0, "Step at which fake quantization switches on", min=0, max=MAX_STEPS, unit="steps")


@dataclass(frozen=True)
class TrainingConfig:
    iters: int = opt(200, "Number of optimizer steps", min=1, max=MAX_STEPS, unit="steps")
    batch_size: int = opt(8, "Preference pairs per step", min=1, max=MAX_WIDTH, unit="pairs")
    learning_rate: float = opt(1e-3, "Peak learning rate (AdamW)", min=0.0, min_exclusive=True)
    lr_schedule: str = opt("constant", "Learning-rate schedule after warmup", choices=("constant", "cosine"))
    warmup_steps: int = opt(
        0, "Steps of linear warmup from 0 to the learning rate", min=0, max=MAX_STEPS, unit="steps"
    )
    min_learning_rate: float = opt(0.0, "Floor the cosine schedule decays to", min=0.0)
    weight_decay: float = opt(0.0, "AdamW weight decay", min=0.0)
    max_grad_norm: float = opt(
        0.0, "Clip the gradient norm to this value (0 = no clipping)", min=0.0, special={0.0: "no clipping"}
    )
    seed: int = opt(0, "Random seed for initialization, shuffling and dropout", min=0, max=MAX_SEED)
    grad_accumulation_steps: int = opt(
        1, "Micro-batches whose gradients are summed into one optimizer step", min=1, max=MAX_WIDTH
    )
    steps_per_report: int = opt(
        10, "Write averaged train metrics every this many steps", min=1, max=MAX_STEPS, unit="steps"
    )
    steps_per_eval: int = opt(
        50,
        "Run validation every this many steps (0 = never)",
        min=0,
        max=MAX_STEPS,
        special={0: "no validation"},
        unit="steps",
    )
    val_batches: int = opt(
        8,
        "Validation batches per evaluation (-1 = the whole split)",
        min=1,
        max=MAX_STEPS,
        special={-1: "all"},
        unit="batches",
    )
    save_every: int = opt(
        50, "Save a resumable checkpoint every this many steps", min=1, max=MAX_STEPS, unit="steps"
    )
    keep_best: bool = opt(True, "Keep the adapters of the best validation loss in adapters/best beside the latest")
    prevent_sleep: bool = opt(
        True, "Keep the machine awake while the run trains (caffeinate on macOS, systemd-inhibit on Linux)"
    )
    patience: int = opt(
        0,
        "Stop early after this many evaluations without a new best validation loss (0 = off)",
        min=0,
        max=MAX_STEPS,
        special={0: "off"},
        unit="evaluations",
    )
    sample_prompts: int = opt(
        2,
        "Validation prompts to generate a greedy sample for at each evaluation (0 = off)",
        min=0,
        max=16,
        special={0: "off"},
        unit="prompts",
    )
    sample_max_tokens: int = opt(32, "Most tokens generated per sample", min=1, max=1024, unit="tokens")
    memory_limit_gb: float = opt(
        0.0,
        "MLX's memory limit: past it, evaluation waits for buffers to be freed before allocating more "
        "(0 = MLX's default: 1.5x the recommended working set on Metal)",
        min=0.01,
        max=MAX_MEMORY_GB,
        special={0.0: "MLX's default"},
        unit="GB",
    )
    cache_limit_gb: float = opt(
        -1.0,
        "MLX's buffer cache limit: freed buffers kept for reuse beyond it go back to the system "
        "(0 = keep none; -1 = MLX's default, the memory limit)",
        min=0.0,
        max=MAX_MEMORY_GB,
        special={-1.0: "MLX's default"},
        unit="GB",
    )


@dataclass(frozen=True)
class DistributedConfig:
    np: int = opt(
        1,
        "Local ranks training the run together, each on an even share of every batch (orpo-train --np)",
        min=1,
        max=256,
        special={1: "one process"},
        unit="ranks",
    )
    hostfile: str = opt("", "mlx.launch hostfile: one rank per host entry, the first this machine "
                        "(optional; relative to the current folder; see orpo-train check-hosts)")
    backend: str = opt(
        "auto",
        "MLX distributed backend (auto: ring on macOS; on Linux MPI when an MPI library is installed, else ring; "
        "with a hostfile: the file's backend, else ring; jaccl: RDMA over Thunderbolt)",
        choices=BACKENDS,
    )


@dataclass(frozen=True)
class OutputConfig:
    runs_dir: str = opt("runs", "Where orpo-train puts runs without --runs-dir (the default `runs`: the app's runs folder)",
                        nonempty=True)
    name: str = opt("", "Label for the run folder name instead of the preset file name (optional)")


@dataclass(frozen=True)
class ReportConfig:
    to: tuple[str, ...] = opt(
        (),
        "Trackers that follow the run while it trains: " + ", ".join(TRACKERS) + " (W&B offline only; empty = none)",
    )
    dir: str = opt(
        "",
        "Folder for TensorBoard (one subfolder per run) and W&B's offline runs (empty = inside the run folder)",
    )
    project: str = opt(DEFAULT_PROJECT, "Trackio and W&B project the run is logged under", nonempty=True)


@dataclass(frozen=True)
class Config:
    description: str = opt("", "One-line description shown in the preset list")
    model: ModelConfig = section(ModelConfig, "Model", "The base model and how it is loaded")
    data: DataConfig = section(DataConfig, "Data", "The preference dataset")
    orpo: OrpoConfig = section(OrpoConfig, "ORPO", "The odds-ratio preference loss")
    finetune: FinetuneConfig = section(FinetuneConfig, "Fine-tuning", "Which weights are trained")
    qat: QatConfig = section(QatConfig, "Quantization-aware training", "Train through fake quantization")
    training: TrainingConfig = section(TrainingConfig, "Training", "Optimizer, schedule and reporting")
    distributed: DistributedConfig = section(DistributedConfig, "Distributed", "Data-parallel ranks (MLX distributed)")
    output: OutputConfig = section(OutputConfig, "Output", "Where runs are written")
    report: ReportConfig = section(ReportConfig, "Reporting", "Trackers that log the run live")


def cross_field_problems(cfg: Config) -> list:
    """The rules that involve more than one key, for a config whose every value has the
    right type."""
    t, found = cfg.training, []
    if t.warmup_steps > 0 and t.warmup_steps >= t.iters:
        found.append(
            Problem("training.warmup_steps", t.warmup_steps, f"must be less than training.iters ({t.iters})")
        )
    # A disabled QAT block should not block a run over a field it ignores.
    if cfg.qat.enable and cfg.qat.start_step >= t.iters:
        found.append(Problem("qat.start_step", cfg.qat.start_step, f"must be less than training.iters ({t.iters})"))
    if cfg.finetune.type == "full" and cfg.model.quantize.bits != 0:
        found.append(
            Problem(
                "finetune.type",
                cfg.finetune.type,
                f"full fine-tuning cannot train a quantized base (model.quantize.bits = {cfg.model.quantize.bits})",
            )
        )
    if t.batch_size % cfg.distributed.np:
        found.append(Problem("training.batch_size", t.batch_size,
                             f"must be a multiple of distributed.np ({cfg.distributed.np}): each rank takes an even share"))
    unknown = [name for name in cfg.report.to if name not in TRACKERS]
    if unknown:
        found.append(Problem("report.to", list(cfg.report.to),
                             f"unknown tracker {unknown[0]!r}; expected some of {', '.join(TRACKERS)}"))
    if t.min_learning_rate > t.learning_rate:
        found.append(
            Problem(
                "training.min_learning_rate",
                t.min_learning_rate,
                f"must be <= training.learning_rate ({t.learning_rate:g})",
            )
        )
    return found
