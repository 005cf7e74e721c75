"""Hugging Face interop (llm/hf.py, llm/tokenizer.py's HF backend) against transformers itself.

Tiny random GPT2LMHeadModel / LlamaForCausalLM checkpoints are made here with transformers
and CPU torch (nothing is downloaded), imported, and their next-token log-probabilities
compared with transformers' in float32; our own random models are exported and run by
transformers the same way; import(export(x)) must be bit-identical.
"""

import json
import os

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from llm import checkpoint, hf
from llm.models import ModelConfig, Transformer
from llm.tokenizer import ByteTokenizer, HFTokenizer, TokenizerError, from_spec

from random_models import random_params

torch.manual_seed(0)
TOL = 1e-4  # the bound on |log p_ours - log p_transformers|

CORPUS = ('The quick brown fox jumps over the lazy dog. ', 'Café au lait, naïve façade, Straße. ',
          'Emoji: 🙂🚀 and CJK 漢字かな. ', 'Tabs\tand\nnewlines\r\n and  double  spaces. ', 'ASCII 0123456789 !?#')
MIXED = list(CORPUS) + ['', ' ', '\x00\x01 control', 'a' * 300, '\ufffd replacement', 'x\u0301 combining',
                        '<|bos|> looks special', '🙂' * 20]


# ---------------------------------------------------------------------------------------------
# Making Hugging Face checkpoints locally
# ---------------------------------------------------------------------------------------------


def write_bpe_tokenizer(path: str, style: str) -> int:
  """A byte-level BPE trained on CORPUS: GPT-2 style (<|endoftext|>, no BOS added) or Llama
  style (<s>/</s>, the post-processor adds BOS). Returns its vocabulary size."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
  specials = ['<|endoftext|>'] if style == 'gpt2' else ['<unk>', '<s>', '</s>']
  tk = Tokenizer(models.BPE())
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.decoder = decoders.ByteLevel()
  tk.train_from_iterator(CORPUS * 20, trainers.BpeTrainer(
      vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False))
  if style == 'gpt2':
    config = dict(tokenizer_class='GPT2Tokenizer', bos_token='<|endoftext|>', eos_token='<|endoftext|>',
                  unk_token='<|endoftext|>', model_max_length=64)
  else:
    tk.post_processor = processors.TemplateProcessing(single='<s> $A', pair='<s> $A <s> $B:1',
                                                      special_tokens=[('<s>', tk.token_to_id('<s>'))])
    config = dict(tokenizer_class='PreTrainedTokenizerFast', bos_token='<s>', eos_token='</s>',
                  unk_token='<unk>', model_max_length=64)
  os.makedirs(path, exist_ok=True)
  tk.save(os.path.join(path, 'tokenizer.json'))
  with open(os.path.join(path, 'tokenizer_config.json'), 'w') as f:
    json.dump(config, f)
  return tk.get_vocab_size()


def make_hf_model(path: str, family: str, dtype=torch.float32, safe: bool = True, **kw) -> transformers.PreTrainedModel:
  """A random tiny model saved in ``path`` with its tokenizer. Norm weights and biases are
  randomised too (transformers initialises them to 1 and 0, which would hide mistakes)."""
  vocab = write_bpe_tokenizer(path, family)
  if family == 'gpt2':
    config = transformers.GPT2Config(vocab_size=vocab + 5, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                     bos_token_id=0, eos_token_id=0, **kw)
    model = transformers.GPT2LMHeadModel(config)
  else:
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=kw.pop('num_key_value_heads', 2),
                                      max_position_embeddings=64, bos_token_id=1, eos_token_id=2, **kw)
    model = transformers.LlamaForCausalLM(config)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith('bias') or 'norm' in name or '.ln_' in name:
        p.add_(torch.randn_like(p) * 0.1)
  model = model.to(dtype).eval()
  if safe:
    model.save_pretrained(path)
  else:  # the pickle format older checkpoints ship (transformers 5 writes safetensors only)
    model.config.save_pretrained(path)
    torch.save(model.state_dict(), os.path.join(path, 'pytorch_model.bin'))
  return model


def hf_logprobs(model, tokens: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    logits = model.float()(torch.as_tensor(tokens, dtype=torch.long)).logits
  return torch.log_softmax(logits.double(), -1).numpy()


def our_logprobs(cfg: ModelConfig, params, tokens: np.ndarray) -> np.ndarray:
  graphdef = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, jax.random.key(0))))[0]
  logits = np.asarray(nnx.merge(graphdef, params)(tokens), np.float64)[..., :cfg.vocab_size]
  return logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - logits.max(-1, keepdims=True)


def random_tokens(vocab: int, shape=(2, 24), seed=0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, vocab, shape).astype(np.int32)


VARIANTS = {  # name: (family, transformers config keywords)
    'gpt2_tied': ('gpt2', {}),
    'llama_gqa_untied': ('llama', dict(tie_word_embeddings=False, rope_theta=500_000.0, rms_norm_eps=1e-5)),
    'llama_tied_mha': ('llama', dict(tie_word_embeddings=True, num_key_value_heads=4)),
    'llama_bias_headdim': ('llama', dict(attention_bias=True, head_dim=16, tie_word_embeddings=False)),
}


# ---------------------------------------------------------------------------------------------
# Import: logits equal transformers'
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_import_matches_transformers(tmp_path, variant):
  family, kw = VARIANTS[variant]
  model = make_hf_model(str(tmp_path), family, **kw)
  cfg, tok, params = hf.load(str(tmp_path))
  assert cfg.family == family and cfg.vocab_size == model.config.vocab_size
  assert cfg.padded_vocab % 128 == 0 and cfg.padded_vocab > cfg.vocab_size  # padding rows added
  assert cfg.tie_embeddings == model.config.tie_word_embeddings
  tokens = random_tokens(cfg.vocab_size)
  diff = np.abs(our_logprobs(cfg, params, tokens) - hf_logprobs(model, tokens)).max()
  assert diff <= TOL, (variant, diff)


@pytest.mark.parametrize('dtype,safe', [(torch.bfloat16, True), (torch.float16, True), (torch.float32, False)])
def test_import_bf16_fp16_and_pytorch_bin(tmp_path, dtype, safe):
  model = make_hf_model(str(tmp_path), 'llama', dtype=dtype, safe=safe)
  assert os.path.exists(tmp_path / ('model.safetensors' if safe else 'pytorch_model.bin'))
  cfg, _, params = hf.load(str(tmp_path))
  # The half-precision weights widened exactly: equal to transformers' own float32 copy.
  want = model.model.layers[0].self_attn.q_proj.weight.detach().float().numpy()
  got = np.asarray(params['blocks']['attn']['w_q_dnh'][0]).reshape(cfg.d_model, -1).T
  np.testing.assert_array_equal(got, want)
  tokens = random_tokens(cfg.vocab_size)
  assert np.abs(our_logprobs(cfg, params, tokens) - hf_logprobs(model, tokens)).max() <= TOL


def test_import_cli_writes_a_checkpoint_that_loads(tmp_path, capsys):
  src, work = tmp_path / 'src', tmp_path / 'runs' / 'gpt2'
  model = make_hf_model(str(src), 'gpt2')
  assert hf.main(['import', f'--src={src}', f'--workdir={work}']) == 0
  assert 'imported gpt2' in capsys.readouterr().out
  record = json.loads((work / 'import.json').read_text())
  assert record['source_dtypes'] == ['F32'] and set(record['weights']) == {'model.safetensors'}
  cfg, tok, params, step = checkpoint.load_params(str(work))
  assert step == 0 and isinstance(tok, HFTokenizer) and tok.eos_id == tok.bos_id == 0 and not tok.add_bos
  assert os.path.dirname(tok.path) == str(work / 'tokenizer')  # a copy: the source may go away
  tokens = random_tokens(cfg.vocab_size)
  assert np.abs(our_logprobs(cfg, params, tokens) - hf_logprobs(model, tokens)).max() <= TOL
  # Parameters only: train.py refuses to resume it and says to use init_from.
  ck = checkpoint.Checkpointer(str(work / 'checkpoints'), 1, 1, async_save=False)
  with pytest.raises(checkpoint.CheckpointMismatch, match='init_from'):
    ck.restore(0, None, {})
  ck.close()


def test_hf_prefix_reads_a_directory_wherever_a_checkpoint_is_read(tmp_path):
  model = make_hf_model(str(tmp_path / 'm'), 'llama')
  cfg, tok, params, step = checkpoint.load_params(f'hf:{tmp_path / "m"}', overrides={'scan_layers': False})
  assert step == 0 and not cfg.scan_layers and tok.add_bos and tok.bos_id == model.config.bos_token_id
  tokens = random_tokens(cfg.vocab_size)
  assert np.abs(our_logprobs(cfg, params, tokens) - hf_logprobs(model, tokens)).max() <= TOL
  with pytest.raises(checkpoint.CheckpointMismatch, match='is not a directory'):
    checkpoint.load_params(f'hf:{tmp_path / "missing"}')
  os.remove(tmp_path / 'm' / 'tokenizer.json')
  with pytest.raises(checkpoint.CheckpointMismatch, match='has no tokenizer.json'):
    checkpoint.load_params(f'hf:{tmp_path / "m"}')


# ---------------------------------------------------------------------------------------------
# Export: transformers runs our models; round trips are bit-identical
# ---------------------------------------------------------------------------------------------


EXPORTABLE = {  # shapes from SIZES, shrunk
    'char-tiny_gpt2_nobias': dict(family='gpt2', d_model=32, n_layers=2, n_heads=4, use_bias=False, max_seq_len=64),
    'gpt2_bias_untied': dict(family='gpt2', d_model=32, n_layers=2, n_heads=4, tie_embeddings=False, max_seq_len=64),
    'tiny_llama_gqa': dict(family='llama', d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48, max_seq_len=64),
    'llama_bias_tied': dict(family='llama', d_model=32, n_layers=2, n_heads=4, use_bias=True, tie_embeddings=True,
                            d_ff=48, max_seq_len=64, rope_theta=500_000.0),
}


def save_run(workdir: str, cfg: ModelConfig, params, tok=None) -> None:
  tok = tok or ByteTokenizer()
  checkpoint.save_params(workdir, cfg, tok.spec(), params)


@pytest.mark.parametrize('name', sorted(EXPORTABLE))
def test_export_runs_in_transformers_and_round_trips(tmp_path, name):
  cfg = ModelConfig(vocab_size=259, **EXPORTABLE[name])
  params = random_params(cfg)
  save_run(str(tmp_path / 'run'), cfg, params)
  assert hf.main(['export', f'--workdir={tmp_path / "run"}', f'--out={tmp_path / "out"}']) == 0
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'out')).eval()
  assert type(model).__name__ == {'gpt2': 'GPT2LMHeadModel', 'llama': 'LlamaForCausalLM'}[cfg.family]
  tokens = random_tokens(cfg.vocab_size)
  diff = np.abs(our_logprobs(cfg, params, tokens) - hf_logprobs(model, tokens)).max()
  assert diff <= TOL, (name, diff)
  # import(export(x)) == x, bit for bit (biases GPT-2 needs are zeros and come back as zeros).
  cfg2, tok2, params2 = hf.load(str(tmp_path / 'out'))
  assert isinstance(tok2, HFTokenizer) and (tok2.pad_id, tok2.bos_id, tok2.eos_id, tok2.add_bos) == (0, 1, 2, True)
  flat, flat2 = (dict(jax.tree_util.tree_flatten_with_path(p)[0]) for p in (params, jax.device_get(params2)))
  for path, value in flat.items():
    np.testing.assert_array_equal(np.asarray(flat2[path]), value, err_msg=jax.tree_util.keystr(path))
  if cfg.use_bias or cfg.family == 'llama':
    assert set(flat2) == set(flat)
  for field in ('d_model', 'n_layers', 'n_heads', 'n_kv_heads', 'd_head', 'd_ff', 'max_seq_len', 'norm', 'positions',
                'mlp', 'tie_embeddings', 'rope_theta', 'norm_eps', 'vocab_size'):
    assert getattr(cfg2, field) == getattr(cfg, field), field


def test_export_bfloat16_and_reimport_of_an_imported_model(tmp_path):
  src = tmp_path / 'src'
  make_hf_model(str(src), 'llama', tie_word_embeddings=False)
  assert hf.main(['import', f'--src={src}', f'--workdir={tmp_path / "w"}']) == 0
  assert hf.main(['export', f'--workdir={tmp_path / "w"}', f'--out={tmp_path / "e32"}']) == 0
  # An imported Hugging Face tokenizer is exported as its own files.
  assert (tmp_path / 'e32' / 'tokenizer.json').read_bytes() == (src / 'tokenizer.json').read_bytes()
  from safetensors.numpy import load_file
  orig, back = load_file(str(src / 'model.safetensors')), load_file(str(tmp_path / 'e32' / 'model.safetensors'))
  assert set(orig) == set(back)
  for k in orig:
    np.testing.assert_array_equal(orig[k], back[k], err_msg=k)
  assert hf.main(['export', f'--workdir={tmp_path / "w"}', f'--out={tmp_path / "e16"}', '--dtype=bfloat16']) == 0
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'e16'))
  assert model.config.torch_dtype == torch.bfloat16 or str(getattr(model.config, 'dtype', '')) == 'torch.bfloat16'


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------


def test_byte_tokenizer_export_encodes_like_ours(tmp_path):
  cfg = ModelConfig(vocab_size=259, **EXPORTABLE['tiny_llama_gqa'])
  save_run(str(tmp_path / 'run'), cfg, random_params(cfg))
  hf.export(str(tmp_path / 'run'), str(tmp_path / 'out'))
  auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path / 'out'))
  ours, theirs = ByteTokenizer(), HFTokenizer(str(tmp_path / 'out'))
  for text in MIXED:
    ids = ours.encode(text).tolist()
    assert auto.encode(text, add_special_tokens=False) == ids, text
    assert auto.encode(text) == [ours.bos_id] + ids, text  # with special tokens: BOS first, as we train
    assert theirs.encode(text).tolist() == ids, text
    assert auto.decode(ids) == ours.decode(ids) == text
  assert (auto.bos_token_id, auto.eos_token_id, auto.pad_token_id) == (1, 2, 0)
  # Invalid UTF-8 byte sequences decode to the same replacement characters.
  for raw in (b'\xff', b'\xc3', b'ab\xe2\x82', b'\xf0\x9f\x99', b'\xed\xa0\x80x', b'\xc3\x28\xa0\xa1'):
    ids = [b + 3 for b in raw]
    assert auto.decode(ids) == ours.decode(ids) == theirs.decode(ids), raw


@pytest.mark.parametrize('style', ['gpt2', 'llama'])
def test_hf_tokenizer_reads_special_ids_from_the_files(tmp_path, style):
  write_bpe_tokenizer(str(tmp_path), style)
  tok = HFTokenizer(str(tmp_path))
  auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  assert (tok.bos_id, tok.eos_id) == (auto.bos_token_id, auto.eos_token_id)
  assert tok.add_bos == (style == 'llama')  # Llama's post-processor adds BOS; GPT-2's does not
  for text in MIXED:
    assert tok.encode(text).tolist() == auto.encode(text, add_special_tokens=False), text
    assert ([tok.bos_id] if tok.add_bos else []) + tok.encode(text).tolist() == auto.encode(text), text
    assert tok.decode(tok.encode(text)) == text
  assert tok.vocab_size == len(auto)
  spec = tok.spec()
  assert from_spec(spec).encode('fox').tolist() == tok.encode('fox').tolist()
  (tmp_path / 'tokenizer.json').write_text((tmp_path / 'tokenizer.json').read_text() + '\n')
  with pytest.raises(TokenizerError, match='SHA-256'):
    from_spec(spec)


def test_hf_tokenizer_bad_files(tmp_path):
  with pytest.raises(TokenizerError, match='not found'):
    HFTokenizer(str(tmp_path))
  write_bpe_tokenizer(str(tmp_path), 'gpt2')
  (tmp_path / 'tokenizer_config.json').write_text(json.dumps({'eos_token': '<nope>'}))
  with pytest.raises(TokenizerError, match="eos_token '<nope>'"):
    HFTokenizer(str(tmp_path))
  (tmp_path / 'tokenizer_config.json').write_text('{}')
  with pytest.raises(TokenizerError, match='no BOS or EOS'):
    HFTokenizer(str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Bad input: one clear message, nothing left behind
# ---------------------------------------------------------------------------------------------


def _no_partial_dirs(parent) -> bool:
  return not [p for p in os.listdir(parent) if '.partial-' in p]


def test_import_errors(tmp_path, capsys):
  src = tmp_path / 'src'
  make_hf_model(str(src), 'gpt2')
  capsys.readouterr()  # transformers' progress bar
  config = json.loads((src / 'config.json').read_text())

  def fails(match, work='w'):
    code = hf.main(['import', f'--src={src}', f'--workdir={tmp_path / work}'])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith('error: ') and err.count('\n') == 1, err
    assert match in err, err
    assert not (tmp_path / work).exists() and _no_partial_dirs(tmp_path)

  (src / 'config.json').write_text(json.dumps({**config, 'architectures': ['MadeUpForCausalLM']}))
  fails("architecture ['MadeUpForCausalLM'] is not supported; supported: BertForMaskedLM, GPT2LMHeadModel, "
        "LlamaForCausalLM, T5ForConditionalGeneration")
  (src / 'config.json').write_text(json.dumps({**config, 'n_layer': 3}))
  fails('missing 12 tensors: transformer.h.2.attn.c_attn.bias')
  (src / 'config.json').write_text(json.dumps({**config, 'n_layer': 1}))
  fails('12 unexpected tensors: transformer.h.1.attn.c_attn.bias')
  (src / 'config.json').write_text(json.dumps({**config, 'n_inner': 64}))
  fails('tensor transformer.h.0.mlp.c_fc.weight has shape [32, 128], but config.json implies [32, 64]')
  (src / 'config.json').write_text(json.dumps({**config, 'vocab_size': 100}))
  fails('the tokenizer has 300 tokens but the model only 100 embedding rows')
  (src / 'config.json').write_text(json.dumps({**config, 'activation_function': 'relu'}))
  fails("activation_function='relu' is not supported")
  (src / 'config.json').write_text(json.dumps(config))
  os.rename(src / 'model.safetensors', tmp_path / 'moved.safetensors')
  fails('holds no weights')
  os.rename(tmp_path / 'moved.safetensors', src / 'model.safetensors')
  (tmp_path / 'taken').mkdir()
  (tmp_path / 'taken' / 'x').write_text('')
  code = hf.main(['import', f'--src={src}', f'--workdir={tmp_path / "taken"}'])
  assert code == 2 and 'already exists and is not empty' in capsys.readouterr().err
  assert os.listdir(tmp_path / 'taken') == ['x']


def test_export_errors(tmp_path, capsys):
  def fails(cfg, match, family=None):
    run = tmp_path / f'run{len(os.listdir(tmp_path))}'
    save_run(str(run), cfg, random_params(cfg))
    args = ['export', f'--workdir={run}', f'--out={tmp_path / "out"}'] + ([f'--family={family}'] if family else [])
    assert hf.main(args) == 2
    err = capsys.readouterr().err
    assert match in err and err.count('\n') == 1, err
    assert not (tmp_path / 'out').exists() and _no_partial_dirs(tmp_path)

  base = dict(d_model=32, n_layers=1, n_heads=4, max_seq_len=64, vocab_size=259)
  fails(ModelConfig(family='llama', positions='learned', **base),
        "cannot export as llama: model.positions='learned', but llama needs 'rope'")
  fails(ModelConfig(family='gpt2', positions='rope', **base), "cannot export as gpt2: model.positions='rope'")
  fails(ModelConfig(family='gpt2', n_kv_heads=2, **base), 'GPT-2 has no grouped-query attention')
  fails(ModelConfig(family='llama', **base), "cannot export as gpt2: model.norm='rms'", family='gpt2')
  fails(ModelConfig(family='gpt2', norm='rms', **base), "model.norm='rms', but gpt2 needs 'layer'")
  fails(ModelConfig(family='llama', arch='encoder', **base), "model.arch='encoder'")
  assert hf.main(['export', f'--workdir={tmp_path / "nothing"}', f'--out={tmp_path / "out"}']) == 2
  assert 'does not exist' in capsys.readouterr().err


def test_init_from_hf_trains_and_resumes(tmp_path):
  """train.py with init_from='hf:<dir>': the imported weights are step 0 (the first validation
  loss equals the model's own), the tokenizer is the model's, and a rerun resumes from its
  checkpoint without the source."""
  import shutil

  import train
  from configs import default
  src = tmp_path / 'src'
  make_hf_model(str(src), 'gpt2')
  cfg = default.get_config('smoke=True')
  cfg.init_from = f'hf:{src}'
  cfg.train.steps, cfg.train.eval_every, cfg.train.checkpoint_every, cfg.train.log_every = 2, 2, 2, 1
  cfg.train.lr = 0.0  # no update: the trained model is the imported one
  cfg.train.warmup_steps = 1
  cfg.sample.num_tokens = 4
  last = train.run(cfg, str(tmp_path / 'run'))
  cfg2, tok, params, step = checkpoint.load_params(str(tmp_path / 'run'))
  assert step == 2 and isinstance(tok, HFTokenizer) and cfg2.family == 'gpt2' and cfg2.vocab_size == 305
  src_cfg, _, src_params = hf.load(str(src))
  for a, b in zip(jax.tree.leaves(jax.device_get(params)), jax.tree.leaves(jax.device_get(src_params))):
    np.testing.assert_array_equal(a, b)  # lr 0: the weights are the source's
  assert np.isfinite(last['val_loss'])
  shutil.rmtree(src)  # the run keeps its own copy of the tokenizer; the checkpoint holds the weights
  cfg.train.steps = 3
  cfg.train.checkpoint_every = 3
  last = train.run(cfg, str(tmp_path / 'run'))
  assert last['step'] == 3
