"""Model configuration and the table of sizes, for all three architectures.

``ModelConfig.arch`` selects the architecture and ``family`` fills the switches it implies:

  llama, gpt2   decoder-only (``llm/models/decoder.py``), next-token prediction
  bert          encoder (``llm/models/encoder.py``), masked language modelling
  t5            encoder-decoder (``llm/models/encoder_decoder.py``), span corruption

This module imports only the standard library, so configs and checkpoints read it cheaply.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

Family = Literal['llama', 'gpt2', 'bert', 't5']
Arch = Literal['decoder', 'encoder', 'encoder_decoder']
FAMILIES = ('llama', 'gpt2', 'bert', 't5')
ARCH_OF_FAMILY = {'llama': 'decoder', 'gpt2': 'decoder', 'bert': 'encoder', 't5': 'encoder_decoder'}

@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of the model. ``family`` fills the switches it implies (None = its default)."""

  vocab_size: int  # tokenizer vocabulary; the embedding is padded to vocab_multiple
  d_model: int = 128  # residual stream width
  n_layers: int = 4  # transformer blocks
  n_heads: int = 4  # query heads
  n_kv_heads: int | None = None  # key/value heads (GQA); None = n_heads
  d_head: int | None = None  # per-head width; None = d_model // n_heads
  d_ff: int | None = None  # MLP width; None = 4 * d_model (gelu) or 8/3 * d_model (swiglu)
  max_seq_len: int = 1024  # longest sequence (size of the learned position table)
  family: Family = 'llama'  # defaults for the switches below
  arch: Arch | None = None  # None: decoder (llama, gpt2), encoder (bert), encoder_decoder (t5)
  norm: Literal['rms', 'layer'] | None = None  # None: rms (llama, t5), layer (gpt2, bert)
  norm_position: Literal['pre', 'post'] | None = None  # None: post (bert: norm(x + f(x))), pre otherwise
  # None: rope (llama), learned (gpt2, bert), relative (t5: bucketed biases, Raffel et al., 2020)
  positions: Literal['rope', 'learned', 'relative'] | None = None
  # None: swiglu (llama), gelu (gpt2: tanh approximation), gelu_exact (bert: erf),
  # geglu (t5 v1.1: gelu(gate) * up), relu (t5 v1.0)
  mlp: Literal['swiglu', 'gelu', 'gelu_exact', 'geglu', 'relu'] | None = None
  use_bias: bool | None = None  # None: True (gpt2, bert), False (llama, t5)
  tie_embeddings: bool | None = None  # None: True (gpt2, bert), False (llama, t5 v1.1)
  dropout: float = 0.0  # on embeddings and residual branches
  causal: bool | None = None  # None: True for decoders, False (bidirectional) for encoders
  scale_attention: bool | None = None  # divide q.k by sqrt(d_head); None: False for t5 (folded into init)
  type_vocab_size: int | None = None  # token-type (segment A/B) embeddings; None: 2 (bert), 0 otherwise
  n_decoder_layers: int | None = None  # encoder_decoder: decoder blocks; None = n_layers
  rel_buckets: int = 32  # relative position buckets (t5), half per direction in the encoder
  rel_max_distance: int = 128  # distances beyond this share the last bucket
  num_labels: int = 0  # encoder: a classifier on the first token with this many classes (fine-tuning); 0 = none
  labels: tuple[str, ...] = ()  # the classifier's class names by index (as Hugging Face's id2label)
  rope_theta: float = 10_000.0  # RoPE base (Su et al., 2021)
  norm_eps: float = 1e-5
  vocab_multiple: int = 128  # pad the embedding rows to a multiple of this (MXU/tensor-core friendly)
  dtype: str = 'float32'  # compute dtype: bfloat16 on accelerators, float32 on CPU
  param_dtype: str = 'float32'
  remat: Literal['none', 'full', 'dots', 'dots_no_batch'] = 'none'  # rematerialisation policy per block
  attention: Literal['xla', 'cudnn'] = 'xla'  # cudnn = flash attention on NVIDIA GPUs
  scan_layers: bool = True  # lax.scan over stacked blocks (fast compiles) or a Python loop
  # Weight gradients of the projections: 'xla' lets XLA choose; 'pretransposed' saves each
  # projection input transposed for dW = x^T g (about 1.7x faster MLP backward on XLA:CPU,
  # which otherwise transposes g with the activation derivative fused in; costs memory).
  dense_grad: Literal['xla', 'pretransposed'] = 'xla'
  init_std: float = 0.02
  # Low-rank adapters (Hu et al., 2021) on the projections named in lora_targets (keys of
  # LORA_TARGETS): y = W x + (lora_alpha / lora_rank) * B (A dropout(x)), B zero at init
  # as PEFT does, so an adapted model starts equal to its base. lora_rank 0 = none.
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_dropout: float = 0.0
  lora_targets: tuple[str, ...] = ()

  def __post_init__(self):
    f = self.family
    if f not in FAMILIES:
      raise ValueError(f'model.family must be one of {list(FAMILIES)}, got {f!r}')
    object.__setattr__(self, 'lora_targets', tuple(self.lora_targets or ()))  # JSON gives a list
    object.__setattr__(self, 'labels', tuple(self.labels or ()))
    mlp = self.mlp or {'llama': 'swiglu', 'gpt2': 'gelu', 'bert': 'gelu_exact', 't5': 'geglu'}[f]
    arch = self.arch or ARCH_OF_FAMILY[f]
    defaults = dict(
        arch=arch,
        n_kv_heads=self.n_heads,
        d_head=self.d_model // self.n_heads,
        d_ff=_swiglu_width(self.d_model) if mlp == 'swiglu' else 4 * self.d_model,
        norm='rms' if f in ('llama', 't5') else 'layer',
        norm_position='post' if f == 'bert' else 'pre',
        positions={'llama': 'rope', 'gpt2': 'learned', 'bert': 'learned', 't5': 'relative'}[f],
        mlp=mlp,
        use_bias=f in ('gpt2', 'bert'),
        tie_embeddings=f in ('gpt2', 'bert'),
        causal=arch == 'decoder',
        scale_attention=f != 't5',
        type_vocab_size=2 if f == 'bert' else 0,
        n_decoder_layers=self.n_layers if arch == 'encoder_decoder' else 0,
    )
    for name, value in defaults.items():
      if getattr(self, name) is None:
        object.__setattr__(self, name, value)
    if self.arch not in ('decoder', 'encoder', 'encoder_decoder'):
      raise ValueError(f"model.arch must be 'decoder', 'encoder' or 'encoder_decoder', got {self.arch!r}")
    if (self.arch == 'encoder_decoder') != (self.positions == 'relative'):
      raise ValueError(f'model.positions={self.positions!r} with model.arch={self.arch!r}: relative position '
                       'biases are implemented for the encoder-decoder only, and it uses nothing else')
    if self.arch != 'encoder' and (self.norm_position == 'post' or self.type_vocab_size):
      raise ValueError(f'model.norm_position={self.norm_position!r}, model.type_vocab_size={self.type_vocab_size}: '
                       f'post-norm blocks and token types are the encoder\'s (BERT); the {self.arch} is pre-norm '
                       'without token types')
    if self.labels and len(self.labels) != self.num_labels:
      raise ValueError(f'model.labels names {len(self.labels)} classes but model.num_labels={self.num_labels}')
    if self.num_labels and self.arch != 'encoder':
      raise ValueError(f'model.num_labels={self.num_labels}: the first-token classifier is an encoder\'s head; '
                       f'a {self.arch} is fine-tuned text to text')
    if self.arch == 'decoder' and not self.causal:
      raise ValueError('model.causal=False with model.arch=decoder: a bidirectional model is an encoder; '
                       'set model.arch=encoder (or model.family=bert)')
    if self.n_heads % self.n_kv_heads:
      raise ValueError(
          f'model.n_heads={self.n_heads} must be a multiple of model.n_kv_heads={self.n_kv_heads}')
    if self.positions == 'rope' and self.d_head % 2:
      raise ValueError(f'rotary positions need an even head width, got d_head={self.d_head}')
    if self.lora_rank < 0:
      raise ValueError(f'lora_rank must be >= 0, got {self.lora_rank}')
    if self.lora_rank and not self.lora_targets:
      raise ValueError(f'lora_rank={self.lora_rank} but lora_targets is empty; name the projections to '
                       f'adapt, from {self.lora_target_names()}')
    unknown = [t for t in self.lora_targets if t not in self.lora_target_names()]
    if unknown:
      raise ValueError(f'LoRA target(s) {unknown} match no projection of this model; its projections are '
                       f'{self.lora_target_names()} (gate exists only with the swiglu and geglu MLPs)')

  def lora_target_names(self) -> list[str]:
    """The projections this architecture has, by LoRA target name."""
    return [t for t in LORA_TARGETS if t != 'gate' or self.gated]

  @property
  def gated(self) -> bool:
    """Whether the MLP has a gate projection (swiglu, geglu)."""
    return self.mlp in ('swiglu', 'geglu')

  @property
  def lora_scale(self) -> float:
    return self.lora_alpha / self.lora_rank if self.lora_rank else 0.0

  @property
  def padded_vocab(self) -> int:
    m = max(1, self.vocab_multiple)
    return (self.vocab_size + m - 1) // m * m

  def param_count(self, embedding: bool = True) -> int:
    """Number of parameters (including the padded embedding rows; ``embedding=False`` leaves out
    the token, position and type tables and the untied output matrix)."""
    d, f, h, V = self.d_model, self.d_ff, self.d_head, self.padded_vocab
    layer_norm = self.norm == 'layer'
    norm = d * (2 if layer_norm else 1)
    attn = d * h * (self.n_heads + 2 * self.n_kv_heads) + self.n_heads * h * d
    attn += (h * (self.n_heads + 2 * self.n_kv_heads) + d) if self.use_bias else 0
    mlp = d * f * (3 if self.gated else 2) + ((f + d) if self.use_bias else 0)
    shapes = {'q': (d, self.n_heads * h), 'k': (d, self.n_kv_heads * h), 'v': (d, self.n_kv_heads * h),
              'o': (self.n_heads * h, d), 'gate': (d, f), 'up': (d, f), 'down': (f, d)}
    adapters = {t: self.lora_rank * (a + b) for t, (a, b) in shapes.items() if t in self.lora_targets}
    attn += sum(v for t, v in adapters.items() if t in ('q', 'k', 'v', 'o'))  # every attention, cross-attention too
    mlp += sum(v for t, v in adapters.items() if t not in ('q', 'k', 'v', 'o'))
    tables = V * d + (0 if self.tie_embeddings else d * V)
    if self.arch == 'decoder':
      total = self.n_layers * (attn + mlp + 2 * norm) + norm
      tables += self.max_seq_len * d if self.positions == 'learned' else 0
    elif self.arch == 'encoder':  # blocks, embedding norm, MLM transform (d x d, bias, norm) and vocabulary bias
      total = self.n_layers * (attn + mlp + 2 * norm) + norm + d * d + d + norm + V + (d + 1) * self.num_labels
      tables += ((self.max_seq_len if self.positions == 'learned' else 0) + self.type_vocab_size) * d
    else:  # encoder blocks, decoder blocks (self, cross, MLP), two final norms, two relative-bias tables
      total = (self.n_layers * (attn + mlp + 2 * norm)
               + self.n_decoder_layers * (2 * attn + mlp + 3 * norm) + 2 * norm
               + 2 * self.rel_buckets * self.n_heads)
    return total + (tables if embedding else 0)


# LoRA target name -> (module, weight) of the projection it adapts. Names follow PEFT's
# Llama modules (q_proj ... down_proj); up is the MLP's input projection in both families.
LORA_TARGETS: dict[str, tuple[str, str]] = {
    'q': ('attn', 'w_q_dnh'), 'k': ('attn', 'w_k_dkh'), 'v': ('attn', 'w_v_dkh'), 'o': ('attn', 'w_o_nhd'),
    'gate': ('mlp', 'w_gate_df'), 'up': ('mlp', 'w_in_df'), 'down': ('mlp', 'w_out_fd'),
}


def _swiglu_width(d_model: int) -> int:
  """8/3 d rounded up to a multiple of 256, as Llama does (keeps the parameter count of a 4d GELU MLP)."""
  return int(math.ceil(8 * d_model / 3 / 256) * 256)


# One table of model sizes. Each entry is a partial ModelConfig; the tokenizer fills vocab_size.
SIZES: dict[str, dict] = {
    # nanoGPT's CPU Shakespeare model: GPT-2 style, no biases.
    'char-tiny': dict(family='gpt2', d_model=128, n_layers=4, n_heads=4, use_bias=False, max_seq_len=64),
    # Small Llama-style model for the default CPU run.
    'tiny': dict(family='llama', d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=384, max_seq_len=256),
    'smoke': dict(family='llama', d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128, max_seq_len=128),
    '124m': dict(family='gpt2', d_model=768, n_layers=12, n_heads=12, max_seq_len=1024),
    '350m': dict(family='gpt2', d_model=1024, n_layers=24, n_heads=16, max_seq_len=1024),
    # Llama-3.2-1B shape with a 32k vocabulary: 1.1B parameters.
    '1b': dict(family='llama', d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, d_ff=8192,
               max_seq_len=2048, rope_theta=500_000.0),
    # Llama-2-7B shape.
    '7b': dict(family='llama', d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, d_ff=11008,
               max_seq_len=4096),
    # Encoders (BERT, Devlin et al., 2019): a CPU size near 'tiny', then BERT-base and BERT-large.
    'bert-smoke': dict(family='bert', d_model=64, n_layers=2, n_heads=4, d_ff=128, max_seq_len=128),
    'bert-tiny': dict(family='bert', d_model=128, n_layers=4, n_heads=4, d_ff=512, max_seq_len=256),
    'bert-base': dict(family='bert', d_model=768, n_layers=12, n_heads=12, d_ff=3072, max_seq_len=512),
    'bert-large': dict(family='bert', d_model=1024, n_layers=24, n_heads=16, d_ff=4096, max_seq_len=512),
    # Encoder-decoders (T5 v1.1 shapes: gated-GELU, untied; n_layers per side): a CPU size, then small/base/large.
    't5-smoke': dict(family='t5', d_model=64, n_layers=1, n_heads=4, d_head=16, d_ff=128, max_seq_len=128),
    't5-tiny': dict(family='t5', d_model=128, n_layers=2, n_heads=4, d_head=32, d_ff=320, max_seq_len=512),
    't5-small': dict(family='t5', d_model=512, n_layers=8, n_heads=6, d_head=64, d_ff=1024, max_seq_len=512),
    't5-base': dict(family='t5', d_model=768, n_layers=12, n_heads=12, d_head=64, d_ff=2048, max_seq_len=512),
    't5-large': dict(family='t5', d_model=1024, n_layers=24, n_heads=16, d_head=64, d_ff=2816, max_seq_len=512),
}


def config_for_size(size: str, vocab_size: int, **overrides) -> ModelConfig:
  """Look up ``size`` in SIZES and build a ModelConfig; ``overrides`` win over the table."""
  if size not in SIZES:
    raise ValueError(f'unknown model size {size!r}; choose one of {sorted(SIZES)}')
  fields = {**SIZES[size], **{k: v for k, v in overrides.items() if v is not None}}
  return ModelConfig(vocab_size=vocab_size, **fields)

