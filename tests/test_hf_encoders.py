"""Hugging Face interop for the encoder (BERT) and the encoder-decoder (T5), against transformers.

Tiny random ``BertForMaskedLM`` / ``T5ForConditionalGeneration`` checkpoints are made here
with transformers and CPU torch in float32 (nothing is downloaded), imported, and their
log-probabilities over the real vocabulary compared with transformers' (BERT with padding
and token types, T5 with encoder padding); our own random models are exported and run by
``AutoModelForMaskedLM`` / ``AutoModelForSeq2SeqLM``; import(export(x)) is bit-identical.
"""

import io
import json
import os
import re

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from llm import checkpoint, hf
from llm.models import Encoder, EncoderDecoder, ModelConfig
from llm.models.layers import relative_bucket
from llm.tokenizer import ByteTokenizer, HFTokenizer, SentencePieceTokenizer

from random_models import random_params_zero_padding

torch.manual_seed(0)
TOL = 1e-4  # the bound on |log p_ours - log p_transformers|
CORPUS = ('The quick brown fox jumps over the lazy dog. ', 'Hello world, hello tokens. ',
          'Masked language models read both ways. ', 'Span corruption drops spans of text. ')


# ---------------------------------------------------------------------------------------------
# Making Hugging Face checkpoints locally
# ---------------------------------------------------------------------------------------------


def write_bert_tokenizer(path: str) -> int:
  """A WordPiece tokenizer as BERT's (lower-casing, [CLS] $A [SEP]) with transformers' own
  tokenizer_config.json, which names no BOS or EOS. Returns its vocabulary size."""
  from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
  specials = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
  words = sorted({w.strip('.,').lower() for line in CORPUS for w in line.split()})
  chars = sorted({c for line in CORPUS for c in line.lower() if not c.isspace()})
  vocab = specials + chars + ['##' + c for c in chars] + words
  tk = Tokenizer(models.WordPiece({w: i for i, w in enumerate(dict.fromkeys(vocab))}, unk_token='[UNK]'))
  tk.normalizer = normalizers.BertNormalizer(lowercase=True)
  tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tk.post_processor = processors.TemplateProcessing(single='[CLS] $A [SEP]', pair='[CLS] $A [SEP] $B:1 [SEP]:1',
                                                    special_tokens=[('[CLS]', 2), ('[SEP]', 3)])
  tk.decoder = decoders.WordPiece()
  os.makedirs(path, exist_ok=True)
  tk.save(os.path.join(path, 'tokenizer.json'))
  config = dict(tokenizer_class='BertTokenizer', do_lower_case=True, cls_token='[CLS]', sep_token='[SEP]',
                pad_token='[PAD]', mask_token='[MASK]', unk_token='[UNK]', model_max_length=40)
  with open(os.path.join(path, 'tokenizer_config.json'), 'w') as f:
    json.dump(config, f)
  return tk.get_vocab_size()


def write_t5_tokenizer(path: str, extra_ids: int = 4, spiece_only: bool = False) -> int:
  """T5's tokenizer: a SentencePiece unigram model with <pad>=0, </s>=1, <unk>=2 and no BOS,
  as tokenizer.json with <extra_id_N> sentinels at the top (transformers' layout), or as
  spiece.model alone (google/t5-v1_1-* ship that). Returns the vocabulary size."""
  import sentencepiece as spm
  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS * 20), model_writer=buf, vocab_size=60,
                                 model_type='unigram', pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                 hard_vocab_limit=False, minloglevel=2)
  os.makedirs(path, exist_ok=True)
  config = dict(tokenizer_class='T5Tokenizer', eos_token='</s>', pad_token='<pad>', unk_token='<unk>',
                model_max_length=64)
  sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
  if spiece_only:
    with open(os.path.join(path, 'spiece.model'), 'wb') as f:
      f.write(buf.getvalue())
    with open(os.path.join(path, 'tokenizer_config.json'), 'w') as f:
      json.dump({**config, 'extra_ids': extra_ids}, f)
    return sp.get_piece_size()
  pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
  tk = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
  tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement='\u2581', prepend_scheme='always')
  tk.decoder = decoders.Metaspace(replacement='\u2581', prepend_scheme='always')
  tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ('<pad>', '</s>', '<unk>')])
  tk.add_special_tokens([AddedToken(f'<extra_id_{i}>', special=True, normalized=False)
                         for i in reversed(range(extra_ids))])
  tk.post_processor = processors.TemplateProcessing(single='$A </s>', pair='$A </s> $B </s>',
                                                    special_tokens=[('</s>', 1)])
  tk.save(os.path.join(path, 'tokenizer.json'))
  with open(os.path.join(path, 'tokenizer_config.json'), 'w') as f:
    json.dump({**config, 'extra_ids': extra_ids}, f)
  return tk.get_vocab_size()


def _noise(model: transformers.PreTrainedModel) -> transformers.PreTrainedModel:
  """Randomise norm weights and biases too (transformers initialises them to 1 and 0, which
  would hide mistakes); float32, evaluation mode."""
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith('bias') or 'norm' in name.lower():
        p.add_(torch.randn_like(p) * 0.1)
  return model.float().eval()


BERT_VARIANTS = {  # name: transformers.BertConfig keywords
    'bert_tied_gelu': dict(),
    'bert_untied_gelu_new_3types': dict(tie_word_embeddings=False, hidden_act='gelu_new', type_vocab_size=3),
}


def make_bert(path: str, **kw) -> transformers.BertForMaskedLM:
  vocab = write_bert_tokenizer(path)
  config = transformers.BertConfig(vocab_size=vocab + 3, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=48, max_position_embeddings=40, **kw)
  model = _noise(transformers.BertForMaskedLM(config))
  model.save_pretrained(path)
  return model


T5_VARIANTS = {  # name: (transformers.T5Config keywords, untie the output explicitly)
    # v1.0: ReLU, output tied to the embeddings and scaled by d_model^-0.5.
    't5_v1.0_relu_tied': (dict(feed_forward_proj='relu'), False),
    # v1.1: gated GELU, a separate lm_head, no scaling.
    't5_v1.1_gated_gelu_untied': (dict(feed_forward_proj='gated-gelu', tie_word_embeddings=False), True),
    # What transformers 5 builds from tie_word_embeddings=False: unscaled, lm_head tied to shared.
    't5_unscaled_as_built': (dict(feed_forward_proj='gated-gelu', tie_word_embeddings=False), False),
}


def make_t5(path: str, untie: bool = False, **kw) -> transformers.T5ForConditionalGeneration:
  vocab = write_t5_tokenizer(path)
  config = transformers.T5Config(vocab_size=vocab + 5, d_model=32, d_kv=12, d_ff=48, num_layers=2,
                                 num_decoder_layers=3, num_heads=4, relative_attention_num_buckets=8,
                                 relative_attention_max_distance=20, decoder_start_token_id=0, **kw)
  model = transformers.T5ForConditionalGeneration(config)
  if untie and model.lm_head.weight is model.shared.weight:  # transformers 5 ties it regardless
    model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
  if untie:
    model.config.tie_word_embeddings = False
  model = _noise(model)
  if untie:
    with torch.no_grad():
      model.lm_head.weight.add_(torch.randn_like(model.lm_head.weight) * 0.1)
  model.save_pretrained(path)
  return model


# ---------------------------------------------------------------------------------------------
# Running both sides
# ---------------------------------------------------------------------------------------------


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  logits = logits.astype(np.float64)
  m = logits.max(-1, keepdims=True)
  return logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))


def _merge(cls, cfg: ModelConfig, params):
  graphdef = nnx.split(nnx.eval_shape(lambda: cls(cfg, jax.random.key(0))))[0]
  return nnx.merge(graphdef, params)


def bert_inputs(vocab: int, types: int, seed: int = 0):
  """tokens, attention mask (row 1 right-padded), token types [2, 16]."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, vocab, (2, 16)).astype(np.int32)
  mask = np.ones((2, 16), np.int32)
  mask[1, 10:] = 0
  type_ids = (rng.integers(0, types, (2, 16)) * mask).astype(np.int32)
  return tokens, mask, type_ids


def bert_logprobs(cfg: ModelConfig, params, tokens, mask, type_ids) -> np.ndarray:
  """Ours: padding is segment 0 (it attends to nothing real and nothing real attends to it)."""
  model = _merge(Encoder, cfg, params)
  hidden = model.trunk(tokens, None, mask, types_bt=type_ids).hidden_btd
  return _log_softmax(np.asarray(model.head(hidden))[..., :cfg.vocab_size])


def hf_bert_logprobs(model, tokens, mask, type_ids) -> np.ndarray:
  with torch.no_grad():
    logits = model(input_ids=torch.as_tensor(tokens, dtype=torch.long), attention_mask=torch.as_tensor(mask),
                   token_type_ids=torch.as_tensor(type_ids, dtype=torch.long)).logits
  return _log_softmax(logits.numpy())


def t5_inputs(vocab: int, start: int = 0, seed: int = 0):
  """encoder tokens [2, 12] (row 1 right-padded), its mask, decoder inputs [2, 9] from ``start``."""
  rng = np.random.default_rng(seed)
  enc = rng.integers(0, vocab, (2, 12)).astype(np.int32)
  mask = np.ones((2, 12), np.int32)
  mask[1, 7:] = 0
  dec = rng.integers(0, vocab, (2, 9)).astype(np.int32)
  dec[:, 0] = start
  return enc, mask, dec


def t5_logprobs(cfg: ModelConfig, params, enc, mask, dec) -> np.ndarray:
  model = _merge(EncoderDecoder, cfg, params)
  hidden = model.hidden({'inputs': enc, 'segments': mask, 'dec_inputs': dec})
  return _log_softmax(np.asarray(model.head(hidden))[..., :cfg.vocab_size])


def hf_t5_logprobs(model, enc, mask, dec) -> np.ndarray:
  with torch.no_grad():
    logits = model(input_ids=torch.as_tensor(enc, dtype=torch.long), attention_mask=torch.as_tensor(mask),
                   decoder_input_ids=torch.as_tensor(dec, dtype=torch.long)).logits
  return _log_softmax(logits.numpy())


def _assert_bit_identical(params, params2, exact_keys: bool = True) -> None:
  flat, flat2 = (dict(jax.tree_util.tree_flatten_with_path(jax.device_get(p))[0]) for p in (params, params2))
  for path, value in flat.items():
    np.testing.assert_array_equal(np.asarray(flat2[path]), np.asarray(value), err_msg=jax.tree_util.keystr(path))
  if exact_keys:
    assert set(flat2) == set(flat)


# ---------------------------------------------------------------------------------------------
# Import: log-probabilities equal transformers'
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('variant', sorted(BERT_VARIANTS))
def test_bert_import_matches_transformers(tmp_path, variant):
  kw = BERT_VARIANTS[variant]
  model = make_bert(str(tmp_path), **kw)
  cfg, tok, params = hf.load(str(tmp_path))
  assert (cfg.family, cfg.arch, cfg.norm_position) == ('bert', 'encoder', 'post')
  assert cfg.vocab_size == model.config.vocab_size
  assert cfg.padded_vocab > cfg.vocab_size and cfg.tie_embeddings == model.config.tie_word_embeddings
  assert cfg.type_vocab_size == model.config.type_vocab_size and cfg.norm_eps == 1e-12
  # BERT's files name no BOS/EOS: [CLS] and [SEP] play those roles; [MASK] is the mask.
  assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.mask_id, tok.add_bos) == (2, 3, 0, 4, True)
  tokens, mask, type_ids = bert_inputs(cfg.vocab_size, cfg.type_vocab_size)
  ours = bert_logprobs(cfg, params, tokens, mask, type_ids)
  theirs = hf_bert_logprobs(model, tokens, mask, type_ids)
  real = mask.astype(bool)  # padded positions' outputs mean nothing on either side
  diff = np.abs(ours - theirs)[real].max()
  assert diff <= TOL, (variant, diff)


@pytest.mark.parametrize('variant', sorted(T5_VARIANTS))
def test_t5_import_matches_transformers(tmp_path, variant):
  kw, untie = T5_VARIANTS[variant]
  model = make_t5(str(tmp_path), untie=untie, **kw)
  cfg, tok, params = hf.load(str(tmp_path))
  assert (cfg.family, cfg.arch, cfg.n_layers, cfg.n_decoder_layers, cfg.d_head) == ('t5', 'encoder_decoder', 2, 3, 12)
  assert (cfg.rel_buckets, cfg.rel_max_distance, cfg.mlp) == (8, 20, 'relu' if 'relu' in variant else 'geglu')
  assert cfg.tie_embeddings == (variant == 't5_v1.0_relu_tied')  # tied = scaled, in our config
  assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.add_bos) == (None, 1, 0, False)
  assert len(tok.sentinel_ids) == 4 and tok.sentinel_ids[0] == tok.vocab_size - 1
  enc, mask, dec = t5_inputs(cfg.vocab_size, model.config.decoder_start_token_id)
  diff = np.abs(t5_logprobs(cfg, params, enc, mask, dec) - hf_t5_logprobs(model, enc, mask, dec)).max()
  assert diff <= TOL, (variant, diff)


def test_relative_buckets_equal_transformers():
  from transformers.models.t5.modeling_t5 import T5Attention
  rel = np.arange(-300, 301)[None, :] + np.zeros((1, 1), np.int64)  # keys before and after the query
  for buckets, max_distance in ((32, 128), (8, 20), (16, 9), (64, 256)):
    for bidirectional in (True, False):
      want = T5Attention._relative_position_bucket(torch.as_tensor(rel), bidirectional=bidirectional,
                                                   num_buckets=buckets, max_distance=max_distance).numpy()
      got = np.asarray(relative_bucket(jax.numpy.asarray(rel), bidirectional, buckets, max_distance))
      np.testing.assert_array_equal(got, want, err_msg=f'{buckets} {max_distance} {bidirectional}')


# ---------------------------------------------------------------------------------------------
# Export: transformers runs our models; round trips are bit-identical
# ---------------------------------------------------------------------------------------------


EXPORTABLE = {  # our ModelConfig keywords, the tokenizer
    'bert_tied': (dict(family='bert', d_model=32, n_layers=2, n_heads=4, d_ff=48, max_seq_len=40),
                  ByteTokenizer(mask=True)),
    # No biases and no token types: BERT needs both, exported as zeros (and imported back as zeros).
    'bert_untied_nobias_notypes_gelu_tanh': (dict(family='bert', d_model=32, n_layers=2, n_heads=4, d_ff=48,
                                                  max_seq_len=40, tie_embeddings=False, use_bias=False, mlp='gelu',
                                                  type_vocab_size=0), ByteTokenizer(mask=True)),
    't5_relu_tied': (dict(family='t5', d_model=32, n_layers=2, n_decoder_layers=3, n_heads=4, d_head=12, d_ff=48,
                          mlp='relu', tie_embeddings=True, rel_buckets=8, rel_max_distance=20),
                     ByteTokenizer(sentinels=3)),
    't5_geglu_untied': (dict(family='t5', d_model=32, n_layers=2, n_heads=4, d_head=8, d_ff=48, rel_buckets=8,
                             rel_max_distance=20), ByteTokenizer(sentinels=3)),
}


def save_run(workdir: str, cfg: ModelConfig, params, tok) -> None:
  checkpoint.save_params(workdir, cfg, tok.spec(), params)


@pytest.mark.parametrize('name', sorted(EXPORTABLE))
def test_export_runs_in_transformers_and_round_trips(tmp_path, name):
  kw, tok = EXPORTABLE[name]
  cfg = ModelConfig(vocab_size=tok.vocab_size, **kw)
  params = random_params_zero_padding(cfg)
  save_run(str(tmp_path / 'run'), cfg, params, tok)
  assert hf.main(['export', f'--workdir={tmp_path / "run"}', f'--out={tmp_path / "out"}']) == 0
  out = str(tmp_path / 'out')
  if cfg.family == 'bert':
    model = transformers.AutoModelForMaskedLM.from_pretrained(out).eval()
    assert type(model).__name__ == 'BertForMaskedLM'
    tokens, mask, type_ids = bert_inputs(cfg.vocab_size, max(1, cfg.type_vocab_size), seed=1)
    diff = np.abs(bert_logprobs(cfg, params, tokens, mask, type_ids)
                  - hf_bert_logprobs(model, tokens, mask, type_ids))[mask.astype(bool)].max()
  else:
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    assert type(model).__name__ == 'T5ForConditionalGeneration'
    assert model.config.decoder_start_token_id == tok.pad_id
    enc, mask, dec = t5_inputs(cfg.vocab_size, tok.pad_id, seed=1)
    diff = np.abs(t5_logprobs(cfg, params, enc, mask, dec) - hf_t5_logprobs(model, enc, mask, dec)).max()
  assert diff <= TOL, (name, diff)
  # The byte tokenizer's extras export at our ids.
  auto = transformers.AutoTokenizer.from_pretrained(out)
  theirs = HFTokenizer(out)
  assert (theirs.mask_id, theirs.sentinel_ids) == (tok.mask_id, tok.sentinel_ids)
  if tok.mask_id is not None:
    assert auto.mask_token_id == tok.mask_id
  for i, sid in enumerate(tok.sentinel_ids):
    assert auto.convert_tokens_to_ids(f'<extra_id_{i}>') == sid
  assert auto.encode('fox', add_special_tokens=False) == tok.encode('fox').tolist()
  # import(export(x)) == x, bit for bit (BERT's biases it needs are zeros and come back as zeros).
  cfg2, _, params2 = hf.load(out)
  _assert_bit_identical(params, params2, exact_keys=cfg.use_bias or cfg.family == 't5')
  for field in ('arch', 'd_model', 'n_layers', 'n_decoder_layers', 'n_heads', 'd_head', 'd_ff', 'max_seq_len', 'norm',
                'norm_position', 'positions', 'mlp', 'tie_embeddings', 'norm_eps', 'vocab_size', 'rel_buckets',
                'rel_max_distance', 'scale_attention'):
    assert getattr(cfg2, field) == getattr(cfg, field), field
  assert cfg2.type_vocab_size == (max(1, cfg.type_vocab_size) if cfg.family == 'bert' else 0)


def test_import_cli_and_export_of_an_import(tmp_path, capsys):
  """BERT and T5 through the command line: the imported workdir loads with its tokenizer, and
  exporting it gives back the source's tensors and a tokenizer AutoTokenizer reads alike."""
  for family, make in (('bert', lambda p: make_bert(p)),
                       ('t5', lambda p: make_t5(p, untie=True, **T5_VARIANTS['t5_v1.1_gated_gelu_untied'][0]))):
    src, work, out = tmp_path / f'{family}_src', tmp_path / f'{family}_work', tmp_path / f'{family}_out'
    model = make(str(src))
    assert hf.main(['import', f'--src={src}', f'--workdir={work}']) == 0
    assert f'imported {family}' in capsys.readouterr().out
    record = json.loads((work / 'import.json').read_text())
    assert record['source_dtypes'] == ['F32'] and record['family'] == family
    cfg, tok, params, step = checkpoint.load_params(str(work))
    assert step == 0 and isinstance(tok, HFTokenizer) and os.path.dirname(tok.path) == str(work / 'tokenizer')
    if family == 'bert':
      assert (tok.bos_id, tok.eos_id, tok.mask_id) == (2, 3, 4) and record['tokenizer']['mask_id'] == 4
      tokens, mask, type_ids = bert_inputs(cfg.vocab_size, 2)
      diff = np.abs(bert_logprobs(cfg, params, tokens, mask, type_ids)
                    - hf_bert_logprobs(model, tokens, mask, type_ids))[mask.astype(bool)].max()
    else:
      assert record['tokenizer']['sentinels'] == 4
      enc, mask, dec = t5_inputs(cfg.vocab_size)
      diff = np.abs(t5_logprobs(cfg, params, enc, mask, dec) - hf_t5_logprobs(model, enc, mask, dec)).max()
    assert diff <= TOL, (family, diff)
    assert hf.main(['export', f'--workdir={work}', f'--out={out}']) == 0
    from safetensors.numpy import load_file
    orig, back = load_file(str(src / 'model.safetensors')), load_file(str(out / 'model.safetensors'))
    assert set(orig) == set(back), set(orig) ^ set(back)
    for k in orig:
      np.testing.assert_array_equal(orig[k], back[k], err_msg=k)
    a, b = transformers.AutoTokenizer.from_pretrained(str(src)), transformers.AutoTokenizer.from_pretrained(str(out))
    for text in CORPUS:
      assert a(text)['input_ids'] == b(text)['input_ids'], text
    capsys.readouterr()


def test_special_tokens_the_files_leave_to_defaults_or_config_json(tmp_path):
  # hf:<dir> reads BERT directly (its tokenizer through an adjusted copy, the source untouched),
  # also when tokenizer_config.json names no special token at all (as bert-base-uncased's).
  make_bert(str(tmp_path / 'bert'))
  (tmp_path / 'bert' / 'tokenizer_config.json').write_text(json.dumps({'do_lower_case': True}))
  cfg, tok, _, step = checkpoint.load_params(f'hf:{tmp_path / "bert"}')
  assert cfg.family == 'bert' and step == 0
  assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.mask_id) == (2, 3, 0, 4)
  assert json.loads((tmp_path / 'bert' / 'tokenizer_config.json').read_text()) == {'do_lower_case': True}
  # A T5 tokenizer_config.json without eos_token (config.json's eos_token_id names it): the
  # import's copy names it itself, so the workdir loads without the source's config.json.
  make_t5(str(tmp_path / 't5'), feed_forward_proj='relu')
  (tmp_path / 't5' / 'tokenizer_config.json').write_text(json.dumps({'tokenizer_class': 'T5Tokenizer'}))
  assert hf.main(['import', f'--src={tmp_path / "t5"}', f'--workdir={tmp_path / "t5w"}']) == 0
  _, tok, _, _ = checkpoint.load_params(str(tmp_path / 't5w'))
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (None, 1, 0)


def test_t5_with_only_spiece_model(tmp_path):
  # A T5 directory with spiece.model and no tokenizer.json imports with the SentencePiece model
  # and the <extra_id_N> sentinels T5Tokenizer appends after it (tokenizer_config's extra_ids);
  # the export carries the same files (AutoTokenizer converts them where protobuf allows).
  src = tmp_path / 't5'
  pieces = write_t5_tokenizer(str(src), spiece_only=True)
  model = transformers.T5ForConditionalGeneration(transformers.T5Config(
      vocab_size=pieces + 4, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4, relative_attention_num_buckets=8))
  model.save_pretrained(str(src))
  assert hf.main(['import', f'--src={src}', f'--workdir={tmp_path / "w"}']) == 0
  cfg, tok, params, _ = checkpoint.load_params(str(tmp_path / 'w'))
  assert isinstance(tok, SentencePieceTokenizer) and (tok.bos_id, tok.eos_id, tok.pad_id) == (None, 1, 0)
  assert tok.vocab_size == pieces + 4 and tok.sentinel_ids == tuple(pieces + 3 - i for i in range(4))
  assert tok.decode([5, *tok.sentinel_ids]) == tok.decode([5])  # sentinels never decode to text
  assert os.path.dirname(tok.path) == str(tmp_path / 'w' / 'tokenizer')
  assert hf.main(['export', f'--workdir={tmp_path / "w"}', f'--out={tmp_path / "out"}']) == 0
  assert (tmp_path / 'out' / 'spiece.model').read_bytes() == (src / 'spiece.model').read_bytes()
  _assert_bit_identical(params, hf.load(str(tmp_path / 'out'))[2])


# ---------------------------------------------------------------------------------------------
# Bad input: one clear message, nothing left behind
# ---------------------------------------------------------------------------------------------


def _no_partial_dirs(parent) -> bool:
  return not [p for p in os.listdir(parent) if '.partial-' in p]


def test_import_errors(tmp_path, capsys):
  bert, t5 = tmp_path / 'bert', tmp_path / 't5'
  make_bert(str(bert))
  make_t5(str(t5), feed_forward_proj='gated-gelu')
  capsys.readouterr()
  configs = {src: json.loads((src / 'config.json').read_text()) for src in (bert, t5)}

  def fails(src, changes, match):
    (src / 'config.json').write_text(json.dumps({**configs[src], **changes}))
    code = hf.main(['import', f'--src={src}', f'--workdir={tmp_path / "w"}'])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith('error: ') and err.count('\n') == 1, err
    assert match in err, err
    assert not (tmp_path / 'w').exists() and _no_partial_dirs(tmp_path)
    (src / 'config.json').write_text(json.dumps(configs[src]))

  fails(bert, {'architectures': ['RobertaForMaskedLM']}, "architecture ['RobertaForMaskedLM'] is not supported; "
        'supported: BertForMaskedLM, GPT2LMHeadModel, LlamaForCausalLM, T5ForConditionalGeneration')
  fails(bert, {'num_hidden_layers': 3}, 'missing 16 tensors: bert.encoder.layer.2.attention.output.LayerNorm.bias')
  fails(bert, {'intermediate_size': 64}, 'tensor bert.encoder.layer.0.intermediate.dense.weight has shape [48, 32], '
        'but config.json implies [64, 32]')
  fails(bert, {'tie_word_embeddings': False}, 'missing 1 tensors: cls.predictions.decoder.weight')
  fails(bert, {'hidden_act': 'silu'}, "hidden_act='silu' is not supported")
  fails(bert, {'position_embedding_type': 'relative_key'}, "position_embedding_type='relative_key' is not supported")
  fails(t5, {'num_decoder_layers': 4}, 'missing 14 tensors: decoder.block.3.layer.0.SelfAttention.k.weight')
  fails(t5, {'num_layers': 1}, '9 unexpected tensors: encoder.block.1.layer.0.SelfAttention.k.weight')
  fails(t5, {'d_kv': 8}, 'tensor encoder.block.0.layer.0.SelfAttention.q.weight has shape [48, 32], '
        'but config.json implies [32, 32]')
  fails(t5, {'relative_attention_num_buckets': 32}, 'relative_attention_bias.weight has shape [8, 4], '
        'but config.json implies [32, 4]')
  fails(t5, {'feed_forward_proj': 'gated-relu'}, "feed_forward_proj='gated-relu' is not supported")
  fails(t5, {'vocab_size': 40}, 'the tokenizer has')
  # A tied (and scaled) T5 whose file holds a different lm_head: transformers would untie it.
  from safetensors.numpy import load_file, save_file
  tensors = load_file(str(t5 / 'model.safetensors'))
  save_file({**tensors, 'lm_head.weight': tensors['shared.weight'] + 1}, str(t5 / 'model.safetensors'))
  fails(t5, {}, 'lm_head.weight differs from shared.weight, though config.json ties them')
  os.remove(t5 / 'tokenizer.json')
  fails(t5, {}, 'has no tokenizer.json (nor a T5 spiece.model)')


def test_export_errors(tmp_path, capsys):
  base = dict(d_model=32, n_layers=1, n_heads=4, max_seq_len=32, vocab_size=259)
  # Through the command line: one line on stderr, no output directory left behind.
  for i, (cfg, match) in enumerate((
      (ModelConfig(family='bert', norm_position='pre', **base),
       "cannot export as bert: model.norm_position='pre', but bert needs 'post'"),
      (ModelConfig(family='t5', use_bias=True, **base),
       'cannot export as t5: model.use_bias=True, but t5 needs False (T5 has no biases)'))):
    save_run(str(tmp_path / f'run{i}'), cfg, random_params_zero_padding(cfg), ByteTokenizer())
    assert hf.main(['export', f'--workdir={tmp_path / f"run{i}"}', f'--out={tmp_path / "out"}']) == 2
    err = capsys.readouterr().err
    assert match in err and err.count('\n') == 1, err
    assert not (tmp_path / 'out').exists() and _no_partial_dirs(tmp_path)
  # The rest of what the targets cannot express, checked where export checks it (before any writing).
  for kw, family, match in (
      (dict(family='bert', positions='rope'), 'bert', "cannot export as bert: model.positions='rope', but bert needs "
       "'learned'"),
      (dict(family='bert', mlp='swiglu'), 'bert', "model.mlp='swiglu', but bert needs one of"),
      (dict(family='bert', n_kv_heads=2), 'bert', 'BERT has no grouped-query attention'),
      (dict(family='bert', d_head=4), 'bert', 'BERT splits d_model into its heads'),
      (dict(family='bert', num_labels=2), 'bert', 'model.num_labels=2, but bert has no first-token classifier'),
      (dict(family='t5', scale_attention=True), 't5', 'model.scale_attention=True, but t5 needs False'),
      (dict(family='t5', norm='layer'), 't5', "model.norm='layer', but t5 needs 'rms'"),
      (dict(family='t5', n_kv_heads=2), 't5', 'T5 has no grouped-query attention'),
      (dict(family='bert'), 'llama', "cannot export as llama: model.arch='encoder', but llama needs 'decoder' "
       '(export an encoder model as bert)'),
      (dict(family='llama'), 't5', "cannot export as t5: model.arch='decoder'")):
    with pytest.raises(hf.HFError, match=re.escape(match)):
      hf.hf_config_from_model(ModelConfig(**kw, **base), family, ByteTokenizer())


def test_bert_wordpiece_files_give_cls_sep_as_bos_eos_and_the_mask(tmp_path):
  """A BERT tokenizer directory names cls/sep/mask (or nothing: the class defaults); the tokenizer
  interface takes [CLS]/[SEP] as BOS/EOS ([CLS] text [SEP] is BERT's format) and [MASK] as the mask."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

  from llm.tokenizer import HFTokenizer
  vocab = {t: i for i, t in enumerate(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'the', 'cat', '##s', 'sat'])}
  tk = Tokenizer(models.WordPiece(vocab, unk_token='[UNK]'))
  tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tk.decoder = decoders.WordPiece()
  tk.post_processor = processors.TemplateProcessing(single='[CLS] $A [SEP]', special_tokens=[('[CLS]', 2), ('[SEP]', 3)])
  tk.save(str(tmp_path / 'tokenizer.json'))
  for config in (None, {'cls_token': '[CLS]', 'sep_token': '[SEP]', 'mask_token': '[MASK]', 'pad_token': '[PAD]'}):
    if config:
      (tmp_path / 'tokenizer_config.json').write_text(json.dumps(config))
    t = HFTokenizer(str(tmp_path))
    assert (t.bos_id, t.eos_id, t.mask_id, t.pad_id, t.add_bos) == (2, 3, 4, 0, True)
    assert list(t.encode('the cats sat')) == [5, 6, 7, 8] and t.decode([2, 5, 6, 7, 3]) == 'the cats'
