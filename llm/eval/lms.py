"""One constructor for the harness's LM interface over any of the three architectures.

  decoder          ``llm.eval.scorer.ModelLM`` with KV-cache generation (``evaluators.make_generate_fn``)
  encoder          ``llm.eval.encoder_scoring.MaskedLM``: pseudo-log-likelihood; no generation
                   (fine-tuned with a classifier: ``ClassifierLM``, through its class names)
  encoder_decoder  ``llm.eval.encoder_scoring.Seq2SeqLM``: log p(continuation | encoder input = context),
                   generation with the encoder once and a decoder KV cache (``llm.eval.seq2seq``)

All three take the same requests, keep the same ``stats`` keys and follow the harness's
tokenisation and truncation rules, so an evaluator runs any of them unchanged.
"""

from __future__ import annotations

from flax import nnx
from jax.sharding import Mesh

from llm import trainer
from llm.eval import evaluators
from llm.eval.encoder_scoring import ClassifierLM, MaskedLM, Seq2SeqLM
from llm.eval.scorer import ModelLM
from llm.models import ModelConfig
from llm.tokenizer import Tokenizer

LM = ModelLM | MaskedLM | Seq2SeqLM | ClassifierLM


def make_lm(graphdef: nnx.GraphDef, model_cfg: ModelConfig, params: trainer.Params, tokenizer: Tokenizer,
            mesh: Mesh, *, batch_rows: int = 16, max_length: int | None = None,
            add_bos_token: bool | None = None) -> LM:
  """The scorer for ``model_cfg.arch`` over ``params`` (placed on ``mesh``, or replicated onto it).

  batch_rows: rows per forward pass (decoder: packed rows; encoder: masked copies;
  encoder-decoder: decoder rows). max_length: tokens the model sees (default
  cfg.max_seq_len). add_bos_token: the harness's HFLM argument (None = as the tokenizer does).
  """
  kw = dict(batch_rows=batch_rows, max_length=max_length, add_bos_token=add_bos_token)
  if model_cfg.arch == 'decoder':
    return ModelLM(graphdef, model_cfg, params, tokenizer, mesh, **kw,
                   generate_fn=evaluators.make_generate_fn(graphdef, model_cfg, params, tokenizer, mesh,
                                                           max_length=max_length))
  if model_cfg.arch == 'encoder' and model_cfg.num_labels:  # fine-tuned: it answers through its classes
    return ClassifierLM(graphdef, model_cfg, params, tokenizer, mesh, model_cfg.labels, batch_rows=batch_rows,
                        max_length=max_length)
  if model_cfg.arch == 'encoder':
    return MaskedLM(graphdef, model_cfg, params, tokenizer, mesh, **kw)
  if model_cfg.arch == 'encoder_decoder':
    return Seq2SeqLM(graphdef, model_cfg, params, tokenizer, mesh, **kw)
  raise ValueError(f"model.arch must be 'decoder', 'encoder' or 'encoder_decoder', got {model_cfg.arch!r}")
