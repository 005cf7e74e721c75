"""Pure training pieces: optimizer, sharded state creation, the train and eval steps.

Everything here is a function of arrays and dataclasses: no TensorFlow, CLU or
ml_collections, so the throughput benchmark and GPU/TPU hosts without them can import it.
Parameters live as a plain nested dict of arrays (``nnx.to_pure_dict``) and the model is
rebuilt inside jit with ``nnx.merge(graphdef, params)``; this keeps the step a pure
function that donates and returns its state.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from llm import sharding
from llm import models
from llm.models import ModelConfig

Params = dict[str, Any]
# 'inputs', 'targets' and optionally 'positions', 'segments', 'branches': int32 [b, t], and
# 'loss_mask' (bool/float [b, t]: which targets count, e.g. only the response in supervised
# fine-tuning). Without 'segments' every row is one unpadded document (synthetic benchmarks).
# 'pair' (int32 [b, t], counterfactual_pair_loss): 2k-1 on the k-th pair's original, 2k on its
# counterfactual, 0 elsewhere (llm.sft.examples_to_rows).
Batch = dict[str, jax.Array]
# Auxiliary metrics of a loss: name -> (sum, count) over the batch; the train step adds them up
# over microbatches and logs sum / count (a count of 0: the sum itself), exact under gradient
# accumulation.
AuxMetrics = dict[str, tuple[jax.Array, jax.Array]]
# (graphdef, params, batch, dropout_key) -> (summed loss, number of tokens it covers), or those
# two and AuxMetrics (counterfactual_pair_loss)
LossFn = Callable[[nnx.GraphDef, Params, Batch, jax.Array | None],
                  tuple[jax.Array, jax.Array] | tuple[jax.Array, jax.Array, AuxMetrics]]
# (cfg, key) -> an nnx.Module whose parameters carry logical 'axes' metadata
ModelBuilder = Callable[[ModelConfig, jax.Array], nnx.Module]


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """AdamW with linear warmup and cosine decay, global-norm clipping."""

  lr: float = 3e-4  # peak learning rate
  min_lr: float = 3e-5  # learning rate at the end of the cosine
  warmup_steps: int = 100
  decay_steps: int = 1000  # length of warmup + cosine (usually the number of train steps)
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.1  # on matrices and embeddings, not norms or biases (see DECAY_BY_NAME)
  grad_clip: float = 1.0  # global-norm clipping; 0 disables
  accum_steps: int = 1  # microbatches per step (gradient accumulation)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: number of optimizer updates applied
  params: Params
  opt_state: Any


def schedule(cfg: OptimConfig) -> optax.Schedule:
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.lr, warmup_steps=cfg.warmup_steps,
      decay_steps=max(cfg.decay_steps, cfg.warmup_steps + 1), end_value=cfg.min_lr)


def make_optimizer(cfg: OptimConfig, decay_mask: Params) -> optax.GradientTransformation:
  parts = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
  parts.append(optax.adamw(schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay, mask=decay_mask))
  return optax.chain(*parts)


# Weight decay by what a parameter is, read from its name: llm/models/ names every
# parameter by its role (w_* projection matrices, b_* biases, the norms' scale/bias).
# Rank cannot tell: the GPT-2 family's q/k/v biases are [heads, head_dim], two axes.
# Matrices decay, biases and norm parameters do not. Embeddings decay too: the token
# table (embed_vd, which is also the output head when tied), the untied head (head_dv)
# and the learned position table (pos_td), as GPT-2/nanoGPT decay every 2-D weight;
# this is what the rank rule did for them before. A name in neither table raises, so a
# new parameter cannot silently get (or miss) weight decay.
DECAY_BY_NAME: dict[str, bool] = {
    'embed_vd': True, 'head_dv': True, 'pos_td': True, 'type_td': True,  # embeddings
    'scale': False, 'bias': False,  # norms
}
DECAY_BY_PREFIX: tuple[tuple[str, bool], ...] = (('w_', True), ('b_', False), ('lora_', True))  # lora_a_*/lora_b_*


def decays(path: tuple[str, ...], axes: tuple[str | None, ...]) -> bool:
  """Whether the parameter at ``path`` (e.g. ('blocks', 'attn', 'w_q_dnh')) gets weight decay.

  ``axes`` are its logical axis names; a parameter classified as a matrix must have at
  least two besides 'layers'. Raises ValueError for a name no rule covers.
  """
  name = str(path[-1])
  decay = DECAY_BY_NAME.get(name)
  if decay is None:
    decay = next((d for prefix, d in DECAY_BY_PREFIX if name.startswith(prefix)), None)
  where = '/'.join(map(str, path))
  if decay is None:
    raise ValueError(f'parameter {where} has no weight-decay rule; name it w_* (matrix, decayed) or b_* '
                     f'(bias, not decayed), or add it to DECAY_BY_NAME in llm/trainer.py')
  if decay and len([a for a in axes if a != 'layers']) < 2:
    raise ValueError(f'parameter {where} is decayed as a matrix but has axes {axes}; '
                     f'a vector should be named b_* or listed in DECAY_BY_NAME')
  return decay


def weight_decay_mask(var_state: nnx.State) -> Params:
  """Pure-dict tree of bools, True for parameters that get weight decay (see ``decays``)."""
  def one(path, var):
    keys = tuple(getattr(k, 'key', k) for k in path)
    return decays(keys, tuple(var.get_metadata().get('axes') or ()))
  mask = jax.tree_util.tree_map_with_path(one, var_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(mask)


def split_params(params: Params, mask: Params) -> tuple[Params, Params]:
  """(leaves where ``mask`` is True, the others), each a nested dict holding only its leaves."""
  flat, flat_mask = traverse_util.flatten_dict(params), traverse_util.flatten_dict(mask)
  return (traverse_util.unflatten_dict({k: v for k, v in flat.items() if flat_mask[k]}),
          traverse_util.unflatten_dict({k: v for k, v in flat.items() if not flat_mask[k]}))


def join_params(a: Params, b: Params) -> Params:
  """The union of two disjoint nested dicts (the inverse of ``split_params``)."""
  return traverse_util.unflatten_dict({**traverse_util.flatten_dict(a), **traverse_util.flatten_dict(b)})


@dataclasses.dataclass(frozen=True)
class ModelSetup:
  """What the steps need to know about the model: its graph, shardings and optimizer.

  ``trainable`` marks the parameters the optimizer updates (all of them in pre-training;
  the adapters in LoRA; all but the frozen ones in partial fine-tuning). The optimizer
  state covers those only, and the gradient is taken with respect to them only, so a
  frozen weight costs no moments, no weight gradient and no update.
  """

  cfg: ModelConfig
  graphdef: nnx.GraphDef
  param_specs: Params  # PartitionSpec per parameter (same tree as params)
  decay_mask: Params  # True for parameters that get weight decay
  optimizer: optax.GradientTransformation
  state_shardings: TrainState  # NamedSharding tree for the whole TrainState
  mesh: Mesh
  build: ModelBuilder = models.build  # how the model is constructed (init and abstract shapes)
  trainable: Params | None = None  # bool per parameter; None = every parameter

  def split(self, params: Params) -> tuple[Params, Params]:
    """(trainable, frozen) parameters."""
    if self.trainable is None:
      return params, {}
    return split_params(params, self.trainable)

  def abstract_state(self) -> TrainState:
    """ShapeDtypeStructs with shardings: the restore target for checkpoints."""
    shapes = jax.eval_shape(functools.partial(_init_state, self), jax.random.key(0))
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        shapes, self.state_shardings)


def setup_model(model_cfg: ModelConfig, optim_cfg: OptimConfig, mesh: Mesh,
                build: ModelBuilder = models.build,
                trainable: Callable[[tuple[str, ...]], bool] | None = None) -> ModelSetup:
  """Trace the model abstractly (nothing is allocated) and derive every sharding from it.

  ``trainable(path)`` (path e.g. ('blocks', 'attn', 'lora_a_q')) selects the parameters
  to train; None trains all. Raises ValueError when it selects none.
  """
  abstract = nnx.eval_shape(lambda: build(model_cfg, jax.random.key(0)))
  graphdef, var_state = nnx.split(abstract)
  specs = nnx.to_pure_dict(sharding.param_specs(var_state, mesh))
  abstract_params = nnx.to_pure_dict(var_state)
  mask = None
  if trainable is not None:
    flat = traverse_util.flatten_dict(abstract_params)
    mask = traverse_util.unflatten_dict({k: bool(trainable(tuple(map(str, k)))) for k in flat})
    if not any(traverse_util.flatten_dict(mask).values()):
      raise ValueError('no parameter is trainable: the freeze/LoRA settings leave nothing to train')
  decay_mask = weight_decay_mask(var_state)
  train_decay = decay_mask if mask is None else split_params(decay_mask, mask)[0]
  train_specs = specs if mask is None else split_params(specs, mask)[0]
  optimizer = make_optimizer(optim_cfg, train_decay)
  train_abstract = abstract_params if mask is None else split_params(abstract_params, mask)[0]
  opt_shapes = jax.eval_shape(optimizer.init, train_abstract)
  # Optimizer moments are sharded exactly like their parameters; counters are replicated.
  opt_specs = optax.tree_map_params(optimizer, lambda _, spec: spec, opt_shapes, train_specs,
                                    transform_non_params=lambda _: P(),
                                    is_leaf=lambda x: isinstance(x, P))
  state_specs = TrainState(step=P(), params=specs, opt_state=opt_specs)
  return ModelSetup(model_cfg, graphdef, specs, decay_mask, optimizer,
                    sharding.named(mesh, state_specs), mesh, build, mask)


def run_once_options() -> dict[str, Any] | None:
  """XLA options for a program that runs once (initialisation, checksums): on CPU, LLVM -O0
  compiles the Shakespeare model's initialisation in 0.7 s instead of 2.3 s, and the program
  still runs in milliseconds. None (the defaults) on accelerators."""
  return {'xla_backend_optimization_level': 0} if jax.default_backend() == 'cpu' else None


def _init_state(setup: ModelSetup, key: jax.Array) -> TrainState:
  params = nnx.to_pure_dict(nnx.split(setup.build(setup.cfg, key))[1])
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=setup.optimizer.init(setup.split(params)[0]))


def init_state(setup: ModelSetup, seed: int) -> TrainState:
  """Initialise directly into the target shardings (a 7B model never sits on one device)."""
  init = jax.jit(functools.partial(_init_state, setup), out_shardings=setup.state_shardings,
                 compiler_options=run_once_options())
  with sharding.activate(setup.mesh):
    return init(jax.random.key(seed))


def state_from_params(setup: ModelSetup, params: Params) -> TrainState:
  """A step-0 state around given parameters (fine-tuning or continued pre-training): fresh
  optimizer moments, everything in the setup's shardings."""
  def build(p):
    return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=setup.optimizer.init(setup.split(p)[0]))
  with sharding.activate(setup.mesh):
    return jax.jit(build, out_shardings=setup.state_shardings)(params)


def fill_missing_params(setup: ModelSetup, params: Params, seed: int) -> Params:
  """``params`` plus fresh values of the parameters the model has and ``params`` lacks (a new
  classifier head on a pre-trained encoder), initialised as the model does, each in its sharding."""
  have = set(traverse_util.flatten_dict(params))
  specs = traverse_util.flatten_dict(setup.state_shardings.params)
  missing = [k for k in specs if k not in have]
  if not missing:
    return params

  def build(key):
    flat = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.split(setup.build(setup.cfg, key))[1]))
    return traverse_util.unflatten_dict({k: flat[k] for k in missing})

  with sharding.activate(setup.mesh):
    fresh = jax.jit(build, out_shardings=traverse_util.unflatten_dict({k: specs[k] for k in missing}))(
        jax.random.key(seed))
  return join_params(params, fresh)


def target_logprobs(logits_btv: jax.Array, targets_bt: jax.Array) -> jax.Array:
  """log p(target) per token [b, t] in float32, from logits [b, t, v]."""
  logz_bt = jax.nn.logsumexp(logits_btv, axis=-1)
  target_logit_bt = jnp.take_along_axis(logits_btv, targets_bt[..., None], axis=-1)[..., 0]
  return target_logit_bt - logz_bt


def cross_entropy(logits_btv: jax.Array, targets_bt: jax.Array, mask_bt: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Summed token cross-entropy over mask and the number of tokens it covers (float32)."""
  mask = mask_bt.astype(jnp.float32)
  return -jnp.sum(target_logprobs(logits_btv, targets_bt) * mask), jnp.sum(mask)


def token_logprobs(graphdef: nnx.GraphDef, params: Params, batch: Batch, dropout_key: jax.Array | None = None,
                   with_greedy: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
  """log p(targets[b, t] | the model's view of the batch) per token, float32 [b, t].

  A decoder predicts targets[t] from inputs[:t+1]; an encoder (masked LM) from all of
  inputs; an encoder-decoder from all of 'inputs' and dec_inputs[:t+1] (each model's
  ``hidden`` reads its own fields). The one scoring primitive: the training and validation losses and every evaluation
  scorer are sums of it over different masks. Honours 'positions', 'segments' and
  'branches' in the batch. With ``with_greedy`` also returns bool [b, t]: whether the
  target is the model's argmax (the harness's ``is_greedy``).
  """
  model = nnx.merge(graphdef, params)
  logits_btv = model.head(model.hidden(batch, dropout_key))
  logprobs_bt = target_logprobs(logits_btv, batch['targets'])
  if not with_greedy:
    return logprobs_bt
  # Ties count as greedy only if the target is the first maximum, as torch.argmax decides.
  return logprobs_bt, jnp.argmax(logits_btv, axis=-1) == batch['targets']


def loss_mask(batch: Batch) -> jax.Array:
  """Which targets count toward the loss: 'loss_mask' if given, else every non-padding token.

  Padding is segment 0 of the targets' side: 'dec_segments' for an encoder-decoder.
  """
  segments = batch.get('dec_segments', batch.get('segments'))
  if 'loss_mask' in batch:
    mask = batch['loss_mask'].astype(bool)
    return mask & (segments > 0) if segments is not None else mask
  if segments is not None:
    return segments > 0
  return jnp.ones(batch['targets'].shape, bool)  # unpacked rows, one document each, no padding


def next_token_loss(graphdef: nnx.GraphDef, params: Params, batch: Batch,
                    dropout_key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """(summed next-token cross-entropy, token count) over ``loss_mask(batch)``."""
  mask = loss_mask(batch).astype(jnp.float32)
  return -jnp.sum(token_logprobs(graphdef, params, batch, dropout_key) * mask), jnp.sum(mask)


def classification_loss(graphdef: nnx.GraphDef, params: Params, batch: Batch,
                        dropout_key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """(summed cross-entropy of the first-token classifier, number of rows): an encoder fine-tuned
  on 'labels' int32 [b, 1]; rows whose first token is padding (segment 0) do not count."""
  model = nnx.merge(graphdef, params)
  logits_bc = model.classify(model.hidden(batch, dropout_key))
  labels_b = batch['labels'][:, 0]
  real_b = (batch['segments'][:, 0] > 0).astype(jnp.float32) if 'segments' in batch else jnp.ones(labels_b.shape)
  logp_b = jnp.take_along_axis(jax.nn.log_softmax(logits_bc), labels_b[:, None], axis=-1)[:, 0]
  return -jnp.sum(logp_b * real_b), jnp.sum(real_b)


def counterfactual_pair_loss(graphdef: nnx.GraphDef, params: Params, batch: Batch,
                             dropout_key: jax.Array | None = None, *, weight: float
                             ) -> tuple[jax.Array, jax.Array, AuxMetrics]:
  """Next-token cross-entropy plus a penalty on the gap between counterfactual pairs.

  A pair is a fine-tuning example and its copy with identity terms swapped (he <-> she,
  John <-> Mary; ``llm.sft``, ``sft.debias_lists``), laid out in one row as two segments and
  marked by ``batch['pair']`` [b, t]: 2k-1 on the k-th pair's original, 2k on its
  counterfactual, 0 elsewhere. Per member m, l_m = the mean log-probability of its
  ``loss_mask`` targets (its completion, in nats per token); per pair p of n_p such targets
  in both members together::

    loss_sum = sum_t CE_t  +  weight * sum_p n_p * (l_orig(p) - l_cf(p))**2

  The train step divides by the token count (the second value, CE's), so the objective per
  target token is the usual cross-entropy plus ``weight`` times the mean of the squared gaps
  with each pair weighted by its targets, as the cross-entropy weights each target: the
  penalty scales like the loss it is added to, whatever the completions' lengths, and sums
  exactly over microbatches. Both members are also trained on by the cross-entropy
  (counterfactual augmentation); the penalty asks the model to find them equally likely,
  so that the swapped identity does not change what it predicts. Its gradient is zero for a
  pair the model already scores alike (identical members: nothing to swap).

  After Counterfactual Logit Pairing (S. Garg, V. Perot, N. Limtiaco, A. Taly, E. H. Chi,
  A. Beutel, "Counterfactual Fairness in Text Classification through Robustness", AIES 2019:
  a squared penalty on a classifier's logit gap between an example and its identity-swapped
  counterfactual), applied to a language model's sequence log-probability, as Y. Qian,
  U. Muaz, B. Zhang, J. W. Hyun, "Reducing Gender Bias in Word-Level Language Models with a
  Gender-Equalizing Loss Function", ACL SRW 2019, equalise the probabilities of the two
  words of a gendered pair. The completion's log-probability is the classifier's logit here
  (SST-2's " positive" after the review and after its swapped review).

  Returns (loss_sum, CE's token count, AuxMetrics): ``debias_gap``, the mean |l_orig - l_cf|
  over the batch's pairs (0 when it has none); ``debias_loss``, the penalty's share of
  ``train_loss`` per token; ``debias_pairs``, the number of pairs in the batch. Rows without
  'pair' have no pairs.
  """
  logp_bt = token_logprobs(graphdef, params, batch, dropout_key)
  mask_bt = loss_mask(batch).astype(jnp.float32)
  ce_sum, n_tokens = -jnp.sum(logp_bt * mask_bt), jnp.sum(mask_bt)
  pair_bt = batch.get('pair', jnp.zeros(logp_bt.shape, jnp.int32))
  # Per row, the sums over member ids 0..2K (0 = no pair): a member takes at least one
  # position, so a row of t positions holds at most t // 2 pairs.
  k_pairs = logp_bt.shape[1] // 2 + 1
  per_member = jax.vmap(functools.partial(jax.ops.segment_sum, num_segments=2 * k_pairs + 1))
  logp_sum_bm = per_member(logp_bt * mask_bt, pair_bt)  # [b, 2K+1]
  count_bm = per_member(mask_bt, pair_bt)
  n_orig_bk, n_cf_bk = count_bm[:, 1::2], count_bm[:, 2::2]  # [b, K]: members 2k-1 and 2k
  present_bk = ((n_orig_bk > 0) & (n_cf_bk > 0)).astype(jnp.float32)
  mean_orig_bk = logp_sum_bm[:, 1::2] / jnp.maximum(n_orig_bk, 1.0)
  mean_cf_bk = logp_sum_bm[:, 2::2] / jnp.maximum(n_cf_bk, 1.0)
  gap_bk = (mean_orig_bk - mean_cf_bk) * present_bk
  penalty = weight * jnp.sum((n_orig_bk + n_cf_bk) * present_bk * gap_bk ** 2)
  n_pairs = jnp.sum(present_bk)
  aux = {'debias_gap': (jnp.sum(jnp.abs(gap_bk)), n_pairs), 'debias_loss': (penalty, n_tokens),
         'debias_pairs': (n_pairs, jnp.zeros(()))}
  return ce_sum + penalty, n_tokens, aux


def _global_norm(tree) -> jax.Array:
  return optax.tree.norm(tree)


def fuses_gradient_reduction(mesh: Mesh) -> bool:
  """Whether the train step sums gradients over devices in one all-reduce (``_fused_reduction``).

  On XLA:CPU with a data-parallel mesh (every other axis of size 1): the SPMD partitioner
  emits one all-reduce per parameter (47 for the 4-layer Shakespeare model), which XLA:CPU
  runs one after another. Measured on 2 devices (README): the Shakespeare model's step 2%
  faster, the same model with its vocabulary padded to 384 about 25% faster. GPUs and TPUs
  combine and overlap all-reduces themselves, so they keep the partitioner's.
  """
  data = mesh.shape.get('data', 1)
  return jax.default_backend() == 'cpu' and data > 1 and data == mesh.size


def _fused_reduction(grad_fn: Callable, mesh: Mesh) -> Callable:
  """``grad_fn`` evaluated per device on its rows, its results summed over the data axis in one
  all-reduce: gradients flattened into one vector (``ravel_pytree``: float32 on CPU), loss,
  token count and aux sums.

  Parameters are replicated on a data-parallel mesh, so each device holds whole gradients of
  its rows' summed loss and the sum over devices is the batch's: the same values as the
  partitioner's per-parameter reductions, up to summation order across more than two devices.
  Only without dropout: a device draws its dropout mask for its own rows, not the global one.
  """
  from jax.flatten_util import ravel_pytree
  axis = 'data'

  def local(train_p, frozen_p, batch, key):
    with sharding.deactivate():  # inside shard_map each device sees its own rows: no constraints
      (loss_sum, (n, aux)), grads = grad_fn(train_p, frozen_p, batch, key)
    flat, unravel = ravel_pytree(grads)
    flat, loss_sum, n, aux = jax.lax.psum((flat, loss_sum, n, aux), axis)
    return (loss_sum, (n, aux)), unravel(flat)

  def fused(train_p, frozen_p, batch, key):
    batch_specs = jax.tree.map(lambda x: P(axis, *([None] * (x.ndim - 1))), batch)
    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), batch_specs, P()), out_specs=P(),
                         check_vma=False)(train_p, frozen_p, batch, key)
  return fused


def make_train_step(setup: ModelSetup, optim_cfg: OptimConfig, seed: int, donate: bool = True,
                    loss_fn: LossFn = next_token_loss) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """Jitted ``train_step(state, batch) -> (state, metrics)``.

  The global batch is split into ``accum_steps`` microbatches whose gradients are summed
  and divided by the total token count, so the update equals the one of the whole batch.
  Dropout keys are derived from (seed, step): a resumed run draws the same masks.
  ``loss_fn`` returns (summed loss, token count); the default is next-token prediction. A
  loss that also returns ``AuxMetrics`` gets them logged as sum / count over the whole batch.
  """
  A = optim_cfg.accum_steps
  def loss_of_trainable(train_p, frozen_p, batch, key):
    loss_sum, n, *aux = loss_fn(setup.graphdef, join_params(train_p, frozen_p) if frozen_p else train_p, batch, key)
    return loss_sum, (n, aux[0] if aux else {})
  grad_fn = jax.value_and_grad(loss_of_trainable, has_aux=True)  # d/d(trainable parameters) only
  use_dropout = setup.cfg.dropout > 0 or setup.cfg.lora_dropout > 0
  lr_fn = schedule(optim_cfg)
  if A == 1 and not use_dropout and fuses_gradient_reduction(setup.mesh):
    grad_fn = _fused_reduction(grad_fn, setup.mesh)

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    key = jax.random.fold_in(jax.random.key(seed), state.step) if use_dropout else None
    train_p, frozen_p = setup.split(state.params)
    if A == 1:
      (loss_sum, (n_tokens, aux)), grads = grad_fn(train_p, frozen_p, batch, key)
    else:
      def split(x):  # [b, t] -> [A, b/A, t], microbatch i = rows i, i+A, ... (spread over devices)
        b = x.shape[0]
        if b % A:
          raise ValueError(f'batch {b} is not divisible by accum_steps={A}')
        x = x.reshape(b // A, A, *x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(
            x, NamedSharding(setup.mesh, P(None, sharding.BATCH, *([None] * (x.ndim - 2)))))
      micro = jax.tree.map(split, batch)
      def body(carry, xs):
        mb, i = xs
        (l, (n, a)), g = grad_fn(train_p, frozen_p, mb, None if key is None else jax.random.fold_in(key, i))
        acc_l, acc_n, acc_g = carry
        return (acc_l + l, acc_n + n, jax.tree.map(jnp.add, acc_g, g)), a  # aux: stacked, summed below
      zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), train_p)
      (loss_sum, n_tokens, grads), aux = jax.lax.scan(
          body, (jnp.zeros(()), jnp.zeros(()), zeros), (micro, jnp.arange(A)))
      aux = jax.tree.map(lambda x: jnp.sum(x, axis=0), aux)
    denom = jnp.maximum(n_tokens, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grads)
    updates, opt_state = setup.optimizer.update(grads, state.opt_state, train_p)
    train_p = optax.apply_updates(train_p, updates)
    params = join_params(train_p, frozen_p) if frozen_p else train_p
    metrics = {
        'train_loss': loss_sum / denom,
        'grad_norm': _global_norm(grads),
        'update_norm': _global_norm(updates),
        'param_norm': _global_norm(params),
        'learning_rate': lr_fn(state.step),
        'tokens': n_tokens,
        **{name: total / jnp.where(count > 0, count, 1.0) for name, (total, count) in aux.items()},
    }
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  batch_sh = sharding.batch_sharding(setup.mesh)
  jitted = jax.jit(train_step, in_shardings=(setup.state_shardings, batch_sh),
                   out_shardings=(setup.state_shardings, NamedSharding(setup.mesh, P())),
                   donate_argnums=(0,) if donate else ())
  def step(state: TrainState, batch: Batch):
    with sharding.activate(setup.mesh):
      return jitted(state, batch)
  step.jitted = jitted  # for .lower() / cost analysis
  return step


def make_eval_step(setup: ModelSetup, loss_fn: LossFn = next_token_loss
                   ) -> Callable[[Params, Batch], tuple[jax.Array, jax.Array]]:
  """Jitted ``eval_step(params, batch) -> (summed loss, token count)`` (a loss's AuxMetrics are dropped)."""
  batch_sh = sharding.batch_sharding(setup.mesh)
  jitted = jax.jit(lambda params, batch: loss_fn(setup.graphdef, params, batch)[:2],
                   in_shardings=(setup.state_shardings.params, batch_sh))
  def step(params: Params, batch: Batch):
    with sharding.activate(setup.mesh):
      return jitted(params, batch)
  return step


def shard_batch(batch: dict, mesh: Mesh) -> Batch:
  """Place a host batch (this process's rows) onto the mesh as one global array per field."""
  sh = sharding.batch_sharding(mesh)
  if jax.process_count() == 1:
    return jax.device_put(dict(batch), sh)  # one call for all fields
  return {k: jax.make_array_from_process_local_data(sh, v) for k, v in batch.items()}
