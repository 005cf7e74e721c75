"""The shared tokenizer and sentence counter against spaCy's English tokenizer (v3.8), the
one datatrove counts Gopher/FineWeb words and C4 sentences with.

Expected values are spaCy's output, hard-coded, so these run without spaCy; each case was
split differently by the previous regex tokenizer. When spaCy (and datatrove) are installed,
the last tests also compare the rule tables and random text with spaCy itself.
"""

import dataclasses
import random

import pytest

from llm.data.clean import rules
from llm.data.clean import text as text_mod
from llm.data.clean.text import Analysis, chunk_tokens, tokens, words


@pytest.mark.parametrize('text,expected', [
    # Dates and times: '/' splits only before a letter; 'pm' comes off only after a bare hour.
    ('11/02/2006', ['11/02/2006']),
    ('on 9/11 or 1/2', ['on', '9/11', 'or', '1/2']),
    ('6:21pm', ['6:21pm']),
    ('10:30am.', ['10:30am', '.']),
    ('6pm', ['6', 'pm']),
    ('10am, 12p.m.', ['10', 'am', ',', '12', 'p.m.']),
    # Initials and abbreviations: a capital and its dot stay together; "No." and "etc." split.
    ('J. R. R. Tolkien', ['J.', 'R.', 'R.', 'Tolkien']),
    ('by L. Smith', ['by', 'L.', 'Smith']),
    ('x. y.', ['x.', 'y.']),
    ('Ph.D. Sen. Rev. Gov.', ['Ph.D.', 'Sen.', 'Rev.', 'Gov.']),
    ('Calif., GmbH.', ['Calif.', ',', 'GmbH.']),
    ('Mr.Smith', ['Mr.', 'Smith']),
    ('U.S', ['U.S']),
    ('etc.', ['etc', '.']),
    # Quotes glued to words: a quote inside a chunk is no prefix or suffix, so it stays.
    ('type="text"', ['type="text', '"']),
    ('said,"Yes', ['said,"Yes']),
    ('"Hello"world', ['"', 'Hello"world']),
    ('“curly”text', ['“', 'curly”text']),
    # Curly apostrophes and spaCy's apostrophe-less contractions.
    ('y’all', ['y’', 'all']),
    ('dont wont Im id', ['do', 'nt', 'wo', 'nt', 'I', 'm', 'i', 'd']),
    ('gonna', ['gon', 'na']),
    # Units after digits, URLs' neighbours, slashes in special cases.
    ('5km 100M 5G', ['5', 'km', '100', 'M', '5', 'G']),
    ('US$5', ['US$', '5']),
    ('and/or w/o him/her', ['and/or', 'w/o', 'him', '/', 'her']),
    ('<br/>', ['<', 'br/', '>']),
    ('AB.CD ab.Cd', ['AB.CD', 'ab', '.', 'Cd']),
    ('Smile:)', ['Smile', ':)']),  # the special-case matcher inside a chunk
])
def test_tokens_are_spacys(text, expected):
  assert words(text) == expected


@pytest.mark.parametrize('text,expected', [
    # Cases the previous tokenizer already agreed on: kept as they are.
    ('St. Dr. Mr. e.g. a.m. Jan. No.', ['St.', 'Dr.', 'Mr.', 'e.g.', 'a.m.', 'Jan.', 'No', '.']),
    ('"Hello world" (word) \'quoted\' “curly”',
     ['"', 'Hello', 'world', '"', '(', 'word', ')', "'", 'quoted', "'", '“', 'curly', '”']),
    ('don’t it’s ’90s he’ll', ['do', 'n’t', 'it', '’s', '’', '90s', 'he', '’ll']),
    ('2006-11-02', ['2006', '-', '11', '-', '02']),
    ('he said it’s fine’.', ['he', 'said', 'it', '’s', 'fine', '’', '.']),
    ('“done.”', ['“', 'done', '.', '”']),
    ('Wednesday.The', ['Wednesday', '.', 'The']),
])
def test_tokens_spacy_already_agreed_on(text, expected):
  assert words(text) == expected


def test_whitespace_tokens_as_spacy_makes_them():
  # One ' ' after a token is absorbed; other whitespace is a token of its own.
  assert tokens('a  b\tc\n\nd ') == ['a', ' ', 'b', '\t', 'c', '\n\n', 'd']
  assert tokens('  lead') == ['  ', 'lead']
  assert tokens('x \t y') == ['x', '\t ', 'y']
  assert tokens('end.  ') == ['end', '.', ' ']
  assert tokens('') == [] and words('') == []


@pytest.mark.parametrize('line,expected', [
    ('I met him on Wednesday.The next day he left.', 2),  # no space after the stop
    ('A sentence.Another one.', 2),
    ('The end.“Quote” starts.', 2),
    ('Don’t. Stop it now.', 2),  # curly apostrophe before the end mark
    ('I know it’s. Then.', 2),
    ('The ’90s. They were fun.', 2),
    ("It's. Then", 2),
    ('He said it’s fine’. Then he left.', 2),
    ('Prices rose 5%. Then fell.', 2),
    ('Ends with etc. Then more.', 2),  # "etc." is not one of spaCy's abbreviations
    ('He was boring... but fine.', 1),  # '...' is one token, not a sentence end
    ('He met J. R. R. Tolkien, the writer.', 1),  # initials keep their dot
    ('Meet at 10 a.m. Then go.', 1),  # 'a.m.' keeps its dot
    ('Copyright © 2009 Initech GmbH. All rights reserved.', 1),  # so does 'GmbH.'
    ('今天天气很好。 我们去公园。 好的', 3),
    ('今天天气很好。我们去公园。好的', 1),  # one chunk, one token: no split without spaces
    ('Stop!!! Now. Really?! Yes.', 4),
    ('Hello.  World.', 2),
])
def test_count_sentences_as_spacys_sentencizer(line, expected):
  assert rules.count_sentences(line) == expected


def test_alpha_ratio_decision_flips_with_the_old_tokenisation():
  # spaCy: '6:21pm' and '11/02/2006' are one token each: 13 of 16 tokens per sentence have
  # a letter (0.8125, kept). The regex tokenizer made them '6:21' 'pm' and '11' '/' '02' '/'
  # '2006': 13 of 21 (0.62), below Gopher's 0.8, and the page was dropped.
  doc = ' '.join(f'The weekly meeting {i} of the group started at 6:21pm on 11/02/2006 in the hall.'
                 for i in range(5))
  assert len(words(doc)) == 80
  v = rules.gopher_quality(Analysis(doc), rules.GopherQualityConfig())
  assert v.keep, v.reason
  assert v.signals['alpha_words_ratio'] == pytest.approx(13 / 16)


def test_sentence_terminals_are_symbols():
  # datatrove's PUNCTUATION_SET includes the sentence terminals of every script.
  assert {'।', '؟', '‼', '｡'} <= rules.PUNCTUATION
  cfg = dataclasses.replace(rules.GopherQualityConfig(), min_words=1)
  v = rules.gopher_quality(Analysis('नमस्ते दुनिया । ' * 30), cfg)  # 90 tokens, 30 of them '।'
  assert v.signals['words'] == 60


def test_words_equals_the_whole_text_definition_with_and_without_cache(monkeypatch):
  """words() = the non-space tokens of tokens() (spaCy's algorithm over the whole text):
  its letters-only shortcut, its chunk cache (cleared when full) and its chunk-by-chunk
  matcher never change a token."""
  rng = random.Random(0)
  pieces = ['Mr.', 'U.S.', "don't", 'dont', 'cannot', 'Cannot.', 'end.', '(a)', '3.14', '+44', 'a|b', 'sir,--',
            '#tag', '...', '…', '—', '1,000', "it's", 'x@y.org', 'café', 'naïve.', '½', '_x_', 'über,', ':)',
            '6pm', '6:21pm', '11/02/2006', 'J.', 'x.', '"a"b', '“q”', 'https://x.org/a.', 'e.g.,', 'Im',
            '5km', 'US$5', 'and/or', '°C.', 'Wednesday.The', '’90s', "''", '(e.g.', 'i.e.)', '(', ':', 'id.',
            'x:)', 'o.O']
  docs = [' '.join(rng.choice(pieces) + rng.choice(['', '', '.', ',', ')', '"', '’', ':)']) for _ in range(80))
          for _ in range(40)]
  monkeypatch.setattr(text_mod, '_CACHE_SIZE', 16)
  for d in docs:
    expected = [t for t in tokens(d) if not t.isspace()]
    assert words(d) == expected
    assert words(d) == expected  # cached
    if not any(c in text_mod._MATCHED for c in d.split()):
      assert expected == [t for c in d.split() for t in chunk_tokens(c)]
  assert len(text_mod._CACHE) <= 16
  assert all(chunk_tokens(k) == v for k, v in text_mod._ALPHA_SPECIAL.items())


def test_a_match_across_whitespace_cancels_one_inside_a_chunk():
  # spaCy's matcher also matches '(' ':' across the space (a special case '(:'); that match
  # changes nothing but, being leftmost, wins over ':' ')' inside the chunk ':)'.
  assert words(':)x') == [':)', 'x']  # ':' ')' 'x' after affix splitting, then merged
  assert words('( :)x') == ['(', ':', ')', 'x']
  assert words('(  :)x') == ['(', ':)', 'x']  # a whitespace token in between: no match across
  assert words('his id. The') == ['his', 'i', 'd.', 'The']  # 'i' 'd' '.' merged by the special 'd.'


def test_suffix_and_infix_shortcuts_change_nothing():
  """The suffix search from the tail and the infix pre-check give spaCy's plain results."""
  rng = random.Random(2)
  alphabet = list('aZ9.,…-–—~:<>=/+*^\'"’()$£%°CFkmgUS▶') + ['US$', 'km', 'mbar', 'اكواب', '...', '.' * 9]
  for _ in range(20000):
    s = ''.join(rng.choice(alphabet) for _ in range(rng.randint(1, 16)))
    m = text_mod._suffix_search(s)
    assert text_mod._suffix_len(s) == (m.end() - m.start() if m else 0), s
    if text_mod._has_infix_char(s) is None:
      assert next(text_mod._infix_finditer(s), None) is None, s


# ------------------------------------------------------------------ against spaCy itself


@pytest.fixture(scope='module')
def spacy_nlp():
  spacy = pytest.importorskip('spacy')
  return spacy.blank('en')


def test_tables_equal_spacys(spacy_nlp):
  import re
  from spacy.lang import char_classes as cc
  from spacy.pipeline.sentencizer import Sentencizer
  from spacy.symbols import ORTH
  tok = spacy_nlp.tokenizer
  assert {k: tuple(d[ORTH] for d in v) for k, v in tok.rules.items()} == text_mod._SPECIAL
  names = ('ALPHA_LOWER', 'ALPHA_UPPER', 'ICONS', 'ALPHA')
  for name in names:  # same code points
    a, b = re.compile(f'[{getattr(cc, name)}]'), re.compile(f'[{getattr(text_mod, "_" + name)}]')
    assert all(bool(a.match(chr(c))) == bool(b.match(chr(c))) for c in range(0x110000)), name

  def shape(pattern, classes):
    for name in names:
      pattern = pattern.replace(classes(name), f'<{name}>')
    return pattern

  ours = (text_mod._prefix_match, text_mod._suffix_search, text_mod._infix_finditer, text_mod._url_match)
  theirs = (tok.prefix_search, tok.suffix_search, tok.infix_finditer, tok.url_match)
  for o, t in zip(ours, theirs):  # same expressions, up to how the classes are written
    assert shape(o.__self__.pattern, lambda n: getattr(text_mod, '_' + n)) == \
        shape(t.__self__.pattern, lambda n: getattr(cc, n))
  assert rules._SENTENCE_PUNCT == set(Sentencizer.default_punct_chars)


def test_letters_only_chunks_are_one_token_in_spacy(spacy_nlp):
  # The shortcut in words(): no affix rule matches a chunk of letters (str.isalpha).
  letters = [chr(c) for c in range(0x110000) if chr(c).isalpha()]
  for k in range(0, len(letters), 5000):
    chunks = [f'a{c}b{c}' for c in letters[k:k + 5000]] + letters[k:k + 5000]
    assert [t.text for t in spacy_nlp.tokenizer(' '.join(chunks))] == chunks


def test_tables_equal_datatroves():
  dt_text = pytest.importorskip('datatrove.utils.text')
  assert set(rules.TERMINAL_PUNCTUATION) == set(dt_text.TERMINAL_PUNCTUATION)
  assert rules.PUNCTUATION - {'\t', '\n'} == dt_text.PUNCTUATION_SET  # tokens never hold \t \n


def test_random_text_tokenises_as_spacy(spacy_nlp):
  spacy_nlp.add_pipe('sentencizer')
  rng = random.Random(1)
  alphabet = list('aAbZz09.,;:!?\'"’‘“”()[]{}<>-–—/\\@#$%&*+=_~|…°€£é ') + ['  ', '\n', 'US$', 'St.', "n't",
                                                                           'http://', 'www.', '.com', 'pm', 'km']
  for _ in range(3000):
    s = ''.join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
    doc = spacy_nlp(s)
    assert tokens(s) == [t.text for t in doc], s
    assert words(s) == [t.text for t in doc if t.text.strip()], s
    if s.strip():
      assert rules.count_sentences(s) == len(list(doc.sents)), s
