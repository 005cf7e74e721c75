"""Tests of llm/data/counterfactual.py: the word lists, the swapper, augmentation, and its use in
llm/data/stream.py (pre-training) and llm/sft.py (fine-tuning)."""

from __future__ import annotations

import collections
import dataclasses
import json
import os

import numpy as np
import pytest

from llm import data
from llm.data import counterfactual as cf
from llm.data import stream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def swapper() -> cf.Swapper:
  return cf.Swapper.from_categories(['gender', 'gender_names'])


def _swapped(s: cf.Swapper, text: str) -> str:
  return s.swap(text)[0]


# ------------------------------------------------------------------------------- lists


def test_shipped_lists_parse():
  gender, names = cf.load_list('gender'), cf.load_list('gender_names')
  assert gender.category == 'gender' and names.category == 'gender_names'
  assert len(names.pairs) >= 50
  assert ('he', 'she') in {(a, b) for a, b, _ in gender.pairs}
  assert all(a[0].isupper() and b[0].isupper() for a, b, _ in names.pairs)
  assert set(cf.shipped_categories()) >= {'gender', 'gender_names'}


@pytest.mark.parametrize('text, line, message', [
    ('he she\nman\n', 2, 'expected two terms'),
    ('he she\n\n# c\nman woman girl\n', 4, 'got 3'),
    ('he he\n', 1, 'paired with itself'),
    ('king Queen\n', 1, 'both capitalised'),
    ('boy-s girl\nma;am sir\n', 2, 'not one word'),
])
def test_list_errors_name_the_line(text, line, message):
  with pytest.raises(data.DataError, match=rf'^lists/x\.txt:{line}: .*{message}'):
    cf.parse_list(text, 'lists/x.txt')


def test_duplicate_term_names_both_lines():
  with pytest.raises(data.DataError, match=r"x\.txt:3: 'man' is already on line 1 of x\.txt"):
    cf.parse_list('man woman\nboy girl\nlad man\n', 'x.txt')
  with pytest.raises(data.DataError, match=r"x\.txt:2: 'Woman' is already on line 1"):  # either column, any case
    cf.parse_list('man woman\nGuy Woman\n', 'x.txt')
  # her and his may be on two lines, but only with their two grammatical counterparts.
  cf.parse_list('him her\nhis her\nhers his\n', 'x.txt')
  with pytest.raises(data.DataError, match=r"x\.txt:2: 'her' is already on line 1"):
    cf.parse_list('she her\nhim her\n', 'x.txt')
  with pytest.raises(data.DataError, match=r"x\.txt:2: 'his' is already on line 1"):
    cf.parse_list('his her\nhis her\n', 'x.txt')


def test_comments_blank_lines_and_empty_list():
  wl = cf.parse_list('# a comment\n\nhe she  # trailing\n  king\tqueen\n', 'x.txt', category='c')
  assert wl.pairs == (('he', 'she', 3), ('king', 'queen', 4)) and wl.category == 'c'
  with pytest.raises(data.DataError, match='no pairs'):
    cf.parse_list('# nothing\n', 'x.txt')


def test_categories_conflict_and_unknown(tmp_path):
  (tmp_path / 'mine.txt').write_text('# mine\nsir dame\n')
  with pytest.raises(data.DataError, match=r"mine\.txt:2: 'sir' is also in .*gender\.txt:\d+"):
    cf.Swapper.from_categories('gender,mine.txt', root=str(tmp_path))
  with pytest.raises(data.DataError, match=r"no counterfactual list 'genders'.*gender, gender_names"):
    cf.Swapper.from_categories('genders')
  # A path is a category of its own, named after the file.
  (tmp_path / 'titles.txt').write_text('dame knight\n')
  s = cf.Swapper.from_categories(['gender', str(tmp_path / 'titles.txt')])
  assert s.categories == ('gender', 'titles')
  assert s.swap('The dame and the king.') == ('The knight and the queen.', {'titles': 1, 'gender': 1})


# ----------------------------------------------------------------------------- swapper


def test_case_is_carried_over(swapper):
  assert _swapped(swapper, 'He said he was HE.') == 'She said she was SHE.'
  assert _swapped(swapper, 'The King and the QUEENS') == 'The Queen and the KINGS'
  assert _swapped(swapper, 'John met MARY.') == 'Mary met JOHN.'


def test_names_match_only_capitalised(swapper):
  assert _swapped(swapper, 'john and mary') == 'john and mary'
  assert swapper.swap('Ask Hannah or Kyle') == ('Ask Kyle or Hannah', {'gender_names': 2})


def test_possessives(swapper):
  assert _swapped(swapper, "John's hat") == "Mary's hat"
  assert _swapped(swapper, "the men's room, the boy's ball") == "the women's room, the girl's ball"
  assert _swapped(swapper, "James' car and the boys' toys") == "Elizabeth's car and the girls' toys"
  assert _swapped(swapper, "He's here; she'll come") == "She's here; he'll come"


def test_whole_words_only(swapper):
  text = 'The theme: themselves, manage, mankind, shepherd, hermit, sonnet, mrsa, Johnson, Maryland.'
  assert swapper.swap(text) == (text, {})
  assert _swapped(swapper, 'the man, (man) man-made') == 'the woman, (woman) woman-made'


@pytest.mark.parametrize('text, want', [
    ('Her book is on the table.', 'His book is on the table.'),  # determiner
    ('I gave her a book.', 'I gave him a book.'),  # object, then a determiner
    ('I saw her.', 'I saw him.'),  # object at the end of a sentence
    ('I saw her', 'I saw him'),  # ... of the text
    ('with her and her own house', 'with him and his own house'),
    ('Let her go, then ask her about her well-being', 'Let him go, then ask him about his well-being'),
    ('HER dog', 'HIS dog'),
    ('His book.', 'Her book.'),  # his: determiner
    ('The book is his.', 'The book is hers.'),  # standalone
    ('a friend of his from school; his was first', 'a friend of hers from school; hers was first'),
    ('The book is hers, not his', 'The book is his, not hers'),
    ('He told him that himself', 'She told her that herself'),
])
def test_her_his_rule(swapper, text, want):
  assert _swapped(swapper, text) == want


def test_no_double_swaps(swapper):
  assert _swapped(swapper, 'he and she, king and queen, John and Mary') == \
      'she and he, queen and king, Mary and John'
  # Unambiguous text swapped twice is itself again.
  text = "She told the boys' father: Mary's son and John's daughter are the men he met."
  once = _swapped(swapper, text)
  assert once != text and _swapped(swapper, once) == text


def test_counts_per_category_and_term(swapper):
  terms = collections.Counter()
  text, counts = swapper.swap('He and he met John; the king bowed.', terms)
  assert text == 'She and she met Mary; the queen bowed.'
  assert counts == {'gender': 3, 'gender_names': 1}
  assert terms == {'gender:he': 2, 'gender:king': 1, 'gender_names:john': 1}
  assert swapper.counterpart('HER') == ('him', 'his') and swapper.counterpart('she') == ('he',)
  assert swapper.counterpart('table') == ()


def test_swap_parts_one_mapping_across_pieces(swapper):
  # The word after 'her' is in the next piece, so it is a determiner; 'Mary' -> 'John' in both.
  parts, counts = swapper.swap_parts(['Mary lost her', ' keys. Where are they, Mary?', '', ' She'])
  assert parts == ['John lost his', ' keys. Where are they, John?', '', ' He']
  assert counts == {'gender_names': 2, 'gender': 2}
  assert swapper.swap_parts(['A man', 'kind']) == (['A man', 'kind'], {})  # 'mankind' is one word


# ------------------------------------------------------------------------------- augment

DOCS = [f'doc {i}: he met her' if i % 3 else f'doc {i}: a table' for i in range(60)]  # 40 with a swap


def test_add_keeps_originals_and_appends_copies(swapper):
  out, c = cf.augment(DOCS, swapper, 'add', 1.0, seed=0)
  assert out[:60] == DOCS
  assert out[60:] == [f'doc {i}: she met him' for i in range(60) if i % 3]
  assert (c.documents, c.with_swap, c.added, c.substituted) == (60, 40, 40, 0)
  assert c.swaps == {'gender': 80} and c.terms == {'gender:he': 40, 'gender:her': 40}
  assert c.as_dict() == {'documents': 60, 'with_swap': 40, 'added': 40, 'substituted': 0, 'swaps/gender': 80,
                         'swaps/gender_names': 0}
  lines = c.lines()
  assert '40 of 60 training documents have a term to swap; 40 counterfactual copies added' in lines[0]
  assert 'gender 80' in lines[1] and 'gender:he 40' in lines[2]


def test_substitute_replaces_a_fraction(swapper):
  out, c = cf.augment(DOCS, swapper, 'substitute', 0.5, seed=3)
  assert len(out) == 60
  changed = [i for i in range(60) if out[i] != DOCS[i]]
  assert changed and all(i % 3 for i in changed) and c.substituted == len(changed)
  assert 8 <= len(changed) <= 32  # about half of the 40
  assert all(out[i] == f'doc {i}: she met him' for i in changed)
  assert c.added == 0 and c.swaps == {'gender': 2 * len(changed)}
  add, c_add = cf.augment(DOCS, swapper, 'add', 0.5, seed=3)  # the same documents are chosen in both modes
  assert add[60:] == [out[i] for i in changed] and c_add.added == len(changed)


def test_choice_is_deterministic_per_seed_and_document(swapper):
  a, _ = cf.augment(DOCS, swapper, 'substitute', 0.5, seed=0)
  b, _ = cf.augment(DOCS, swapper, 'substitute', 0.5, seed=0)
  c, _ = cf.augment(DOCS, swapper, 'substitute', 0.5, seed=1)
  assert a == b and a != c
  # A document's choice depends on (seed, index) only, not on the documents around it.
  head, _ = cf.augment(DOCS[:20], swapper, 'substitute', 0.5, seed=0)
  assert head == a[:20]
  np.testing.assert_array_equal(cf.chosen(0, [5, 7, 9], 0.5), cf.chosen(0, np.arange(10), 0.5)[[5, 7, 9]])
  assert cf.chosen(0, np.arange(1000), 0.3).mean() == pytest.approx(0.3, abs=0.05)
  # Pinned: the same in every process and every release (a changed hash would change the corpus).
  assert cf.chosen(0, range(12), 0.5).astype(int).tolist() == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 1]
  assert cf.chosen(1, range(12), 0.5).astype(int).tolist() == [0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 0]


@pytest.mark.parametrize('mode, rate, message', [
    ('swap', 1.0, "data.counterfactual_mode must be 'add' or 'substitute', got 'swap'"),
    ('add', 0.0, r'data.counterfactual_rate must be in \(0, 1\], got 0.0'),
    ('substitute', 1.5, r'data.counterfactual_rate must be in \(0, 1\], got 1.5'),
])
def test_options_are_checked(swapper, mode, rate, message):
  with pytest.raises(data.DataError, match=message):
    cf.augment(DOCS, swapper, mode, rate)


# ------------------------------------------------------------------------ pre-training


@pytest.fixture(scope='module')
def line_file(tmp_path_factory) -> str:
  d = tmp_path_factory.mktemp('cf')
  lines = [f'{i:03d} he saw her' if i % 2 else f'{i:03d} the table' for i in range(200)]
  (d / 'lines.txt').write_text(''.join(line + '\n' for line in lines))
  return str(d / 'lines.txt')


def _cfg(line_file: str, **kw) -> data.DataConfig:
  return data.DataConfig(**{'sources': line_file, 'seq_len': 16, 'doc_separator': 'line', 'val_fraction': 0.2, **kw})


def _text(rows: dict[str, np.ndarray]) -> str:
  """The documents of a table of rows, as text (the byte tokenizer decodes bytes and skips the rest)."""
  from llm.tokenizer import ByteTokenizer
  return ByteTokenizer().decode(rows['inputs'].reshape(-1))


def _all(rows) -> dict[str, np.ndarray]:
  return rows.rows(np.arange(rows.num_rows))


def test_load_corpus_augments_training_documents_only(line_file, capsys):
  plain = data.load_corpus(_cfg(line_file))
  aug = data.load_corpus(_cfg(line_file, counterfactual='gender'))
  printed = capsys.readouterr().out
  assert 'counterfactual augmentation (gender; mode add, rate 1)' in printed
  assert plain.counterfactual is None
  c = aug.counterfactual
  train_docs, _ = data.split_documents(data.read_documents(line_file, _cfg(line_file)), _cfg(line_file))
  assert c is not None and c.documents == len(train_docs)
  assert c.added == c.with_swap == sum('he saw her' in d for d in train_docs) > 50
  assert c.swaps == {'gender': 2 * c.added}
  # Validation rows are the same; training text gained the swapped copies.
  for k, v in _all(plain.val).items():
    np.testing.assert_array_equal(_all(aug.val)[k], v)
  plain_text, aug_text = _text(_all(plain.train[0])), _text(_all(aug.train[0]))
  assert 'she saw him' not in plain_text and 'she saw him' not in _text(_all(aug.val))
  assert aug_text.count('she saw him') == c.added and aug_text.startswith(plain_text)
  sub = data.load_corpus(_cfg(line_file, counterfactual='gender', counterfactual_mode='substitute',
                              counterfactual_rate=0.5))
  n = sub.counterfactual.substituted
  assert 0 < n < c.with_swap
  sub_text = _text(_all(sub.train[0]))  # each substitute is one byte longer ('he' -> 'she', 'her' -> 'him')
  assert sub_text.count('she saw him') == n and len(sub_text) == len(plain_text) + n


def test_load_corpus_errors(line_file):
  with pytest.raises(data.DataError, match="data.counterfactual_mode must be 'add' or 'substitute'"):
    data.load_corpus(_cfg(line_file, counterfactual='gender', counterfactual_mode='both'))
  with pytest.raises(data.DataError, match=r"data.counterfactual='gender' cannot augment tokens:.*prepar"):
    data.load_corpus(_cfg(line_file, sources='tokens:runs/nowhere', counterfactual='gender'))
  with pytest.raises(data.DataError, match="no counterfactual list 'nope'"):
    data.load_corpus(_cfg(line_file, counterfactual='nope'))


def test_resume_is_exact_with_augmentation(line_file):
  cfg = _cfg(line_file, counterfactual='gender,gender_names', counterfactual_rate=0.5, seed=5)
  first = stream.Batches(data.load_corpus(cfg), 8)
  from_start = [first(step) for step in range(6)]
  resumed = stream.Batches(data.load_corpus(cfg), 8)  # a restarted process rebuilds the corpus
  for step in (3, 4, 5):
    for k, v in from_start[step].items():
      np.testing.assert_array_equal(resumed(step)[k], v)
  plain = stream.Batches(data.load_corpus(_cfg(line_file, seed=5)), 8)
  assert any(not np.array_equal(plain(s)['inputs'], from_start[s]['inputs']) for s in range(6))


def test_configs_carry_the_fields():
  from configs import default, finetune_sst2
  from llm import run, sft
  c = default.get_config('smoke=True')
  assert (c.data.counterfactual, c.data.counterfactual_mode, c.data.counterfactual_rate) == ('', 'add', 1.0)
  c.data.counterfactual = 'gender,gender_names'
  assert run.data_config(c).counterfactual == 'gender,gender_names'
  f = finetune_sst2.get_config('smoke=True')
  f.sft.counterfactual_mode = 'substitute'
  assert run.to_dataclass(sft.SFTConfig, f.sft).counterfactual_mode == 'substitute'


# ------------------------------------------------------------------------- fine-tuning


def test_sft_swaps_prompt_and_completion_together(tmp_path, capsys):
  from llm import sft
  from llm.tokenizer import ByteTokenizer
  records = [{'prompt': f'Q{i}: Who called her', 'completion': ' brother? Mary.'} for i in range(40)]
  records += [{'prompt': f'R{i}: what is 2+2?', 'completion': ' 4'} for i in range(10)]
  (tmp_path / 'qa.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
  cfg = sft.SFTConfig(source='qa.jsonl', seq_len=48, val_fraction=0.2, counterfactual='gender,gender_names')
  train, val = sft.read_examples(cfg, str(tmp_path))
  got, c = sft.counterfactual_examples(train, cfg, str(tmp_path))
  swapped = [(chunks, where) for chunks, where in got if where.endswith('(counterfactual)')]
  with_terms = [ex for ex in train if ex[0][0][0].startswith('Q')]
  assert got[:len(train)] == train and len(swapped) == len(with_terms) == c.added
  chunks, where = swapped[0]
  assert chunks[0][0].endswith('Who called his') and chunks[0][1] is False  # 'his brother' across the pieces
  assert chunks[1] == (' sister? John.', True)
  assert where.startswith(str(tmp_path / 'qa.jsonl'))
  data_ = sft.load_sft(cfg, ByteTokenizer(), root=str(tmp_path))
  assert 'counterfactual augmentation (gender,gender_names' in capsys.readouterr().out
  assert data_.report['train']['examples'] == len(train) + c.added
  assert data_.report['validation']['examples'] == len(val)  # validation examples are not augmented
  assert data_.corpus.counterfactual.added == c.added
  off = sft.load_sft(dataclasses.replace(cfg, counterfactual=''), ByteTokenizer(), root=str(tmp_path))
  assert off.corpus.counterfactual is None and off.report['train']['examples'] == len(train)
  with pytest.raises(data.DataError, match=r'sft.counterfactual_rate must be in \(0, 1\]'):
    sft.load_sft(dataclasses.replace(cfg, counterfactual_rate=2.0), ByteTokenizer(), root=str(tmp_path))
