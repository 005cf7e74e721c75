"""Each filter rule on small hand-written documents it must keep and must drop, at the edges
of its thresholds; the shared tokenizer on the cases the thresholds depend on."""

import dataclasses

import pytest

from llm.data.clean import rules
from llm.data.clean.document import CorpusInputError
from llm.data.clean.text import Analysis, words

SENTENCES = [
    'The committee met on Tuesday to discuss the new library and its opening hours.',
    'Members agreed that the building should stay open later in the evening.',
    'Several of them offered to help with the reading programme for children.',
    'The proposal will be presented to the town council next month.',
    'A plan to repair the roof of the old hall was also put forward.',
    'Volunteers have already collected more than two hundred donated books.',
    'The mayor said that the budget for the project is still being reviewed.',
    'Local schools hope to bring their pupils to the library every week.',
    'A small cafe near the entrance could open by the end of the summer.',
    'Residents were invited to share their ideas at a meeting in the square.',
    'Some asked for more computers, while others wanted a quiet study room.',
    'The architect presented drawings that kept the original brick front.',
]


def prose(n_sentences: int = 4) -> str:
  """Distinct sentences (no repetition), four per line."""
  sents = [SENTENCES[i % len(SENTENCES)] for i in range(n_sentences)]
  return '\n'.join(' '.join(sents[i:i + 4]) for i in range(0, len(sents), 4))


# --------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize('text,expected', [
    ('Hello, world.', ['Hello', ',', 'world', '.']),
    ("Don't stop, it's fine.", ['Do', "n't", 'stop', ',', 'it', "'s", 'fine', '.']),
    ('well-known costs $5.99 or 1,000 at 10:30', ['well', '-', 'known', 'costs', '$', '5.99', 'or', '1,000', 'at', '10:30']),
    ('The U.S. and e.g. Mr. Smith...', ['The', 'U.S.', 'and', 'e.g.', 'Mr.', 'Smith', '...']),
    ('mail jane.doe@example.org or https://example.com/a?b=1.', ['mail', 'jane.doe@example.org', 'or', 'https://example.com/a?b=1', '.']),
    ("I'm sure they'd know o'clock", ['I', "'m", 'sure', 'they', "'d", 'know', "o'clock"]),
    # spaCy keeps these whole: glued dashes, pipes, country codes.
    ('sir,-- Home|About call +44 now--', ['sir,--', 'Home|About', 'call', '+44', 'now--']),
    ('hello--world', ['hello', '--', 'world']),
])
def test_tokenizer_matches_spacy_conventions(text, expected):
  assert words(text) == expected


# ------------------------------------------------------------------------------ Gopher


def gq(text, **kw):
  return rules.gopher_quality(Analysis(text), dataclasses.replace(rules.GopherQualityConfig(), **kw))


def test_gopher_quality_keeps_prose_and_reports_signals():
  v = gq(prose(8))
  assert v.keep, v.reason
  assert v.signals['words'] >= 50 and 3 <= v.signals['mean_word_length'] <= 10
  assert v.signals['stop_words'] >= 2


def test_gopher_quality_word_count_edges():
  base = 'the cat and the dog ' * 10  # exactly 50 words, 2+ stop words
  assert gq(base.strip()).keep
  assert gq(' '.join(base.split()[:49])).reason == 'gopher_short_doc'
  assert gq(base.strip(), max_words=49).reason == 'gopher_long_doc'


def test_gopher_quality_mean_word_length():
  assert gq(' '.join(['the of to a an'] * 20)).reason == 'gopher_below_avg_threshold'
  long_words = ' '.join(['the extraordinarily incomprehensibilities and'] * 20)
  assert gq(long_words).reason == 'gopher_above_avg_threshold'


def test_gopher_quality_symbols_bullets_ellipsis_alpha_stopwords():
  text = prose(8)
  n = len(words(text))
  limit = int(0.1 * n)
  assert gq(text + ' #' * limit).keep  # at the ratio limit: kept (strictly greater drops)
  assert gq(text + ' #' * (limit + 5)).reason == 'gopher_too_many_hashes'
  bullets = '\n'.join(f'• {t}' for t in SENTENCES[:10])
  assert gq(bullets).reason == 'gopher_too_many_bullets'
  assert gq(bullets + '\nplain line one.\nplain line two.').keep  # 10 of 12 lines < 0.9
  ell = '\n'.join(SENTENCES[:6] + [f'and then part {i} continued...' for i in range(4)])
  assert gq(ell).reason == 'gopher_too_many_end_ellipsis'  # 4/10 > 0.3
  numbers = prose(4) + ' ' + ' '.join(f'{1000 + i} {2000 + i} {3000 + i} {4000 + i}' for i in range(15))
  assert gq(numbers).reason == 'gopher_below_alpha_threshold'
  no_stop = ' '.join(['Committee members discussed library opening hours carefully.'] * 10)
  assert gq(no_stop).reason == 'gopher_enough_stop_words'
  assert gq(no_stop + ' the').reason == 'gopher_enough_stop_words'
  assert gq(no_stop + ' the of').keep


def grep(text, **kw):
  return rules.gopher_repetition(Analysis(text), dataclasses.replace(rules.GopherRepetitionConfig(), **kw))


def test_gopher_repetition_lines_and_paragraphs():
  assert grep(prose(8)).keep
  lines = SENTENCES[:10]
  v = grep('\n'.join(lines + lines[:4]))  # 4 of 14 lines (0.29) repeat, with 29% of the characters
  assert v.reason == 'dup_line_char_frac', v
  assert grep('\n'.join(lines + lines[:4]), dup_line_char_frac=0.3, dup_ngrams=()).keep
  assert grep('\n'.join(lines + lines[:5]), dup_line_char_frac=0.5).reason == 'dup_line_frac'  # 5 of 15 > 0.3
  assert grep('\n'.join(lines + lines[:1])).keep  # 1 of 11 lines, about 9% of the characters
  paras = '\n\n'.join(['Para one is here.', 'Para two is here.', 'Para one is here.', 'Para one is here.'])
  assert grep(paras).reason == 'dup_para_frac'  # 2 of 4 paragraphs repeat


def test_gopher_repetition_ngrams():
  spam = prose(4) + ' ' + ' '.join(['buy cheap shoes'] * 30)
  assert grep(spam).reason == 'top_2_gram'
  # A repeated 10-word passage inside otherwise varied text trips the duplicated n-gram rule.
  passage = 'alpha bravo charlie delta echo foxtrot golf hotel india juliet'
  varied = ' '.join(f'word{i}' for i in range(120))
  text = f'{varied} {passage} {passage} {passage}'
  v = grep(text)
  assert not v.keep and v.reason.startswith('duplicated_'), v
  assert grep(f'{varied} {passage}').keep


def test_scan_matches_reference_definition():
  # The duplicated n-gram count: scan left to right, skip n words after a repeat.
  ws = 'a b c a b c a b c d'.split()
  ids = {w: i for i, w in enumerate(dict.fromkeys(ws))}
  import numpy as np
  h = rules._ngram_hashes(np.array([ids[w] for w in ws], np.uint64), 2)
  chars = [2] * len(h)
  # 2-grams at 0..8: ab bc ca ab bc ca ab bc cd. 0-2 new; 3 ab repeats (+2, jump to 5);
  # 5 ca repeats (+2, jump to 7); 7 bc repeats (+2, jump to 9 = end).
  assert rules._scan_repeated_chars(h.tolist(), chars, 2) == 6


# ---------------------------------------------------------------------------------- C4


def c4(text, **kw):
  return rules.c4(Analysis(text), dataclasses.replace(rules.C4Config(), **kw))


def test_c4_line_rules_and_citations():
  text = '\n'.join([
      'Home | About | Contact',  # no terminal punctuation
      'The first sentence of the article is here.',
      'Too short.',  # fewer than 5 words
      'Please enable JavaScript to see all the comments.',  # javascript
      'This website uses cookies to improve your experience.',  # policy
      'The second sentence cites a source[1] and is edited[edit] here.',
      'The article goes on for a third sentence here!',
      'It ends with a teaser that goes on and on...',  # ellipsis
      'He said that "this line ends with a quote."',
  ])
  v = c4(text)
  assert v.keep
  assert v.text.split('\n') == [
      'The first sentence of the article is here.',
      'The second sentence cites a source and is edited here.',
      'The article goes on for a third sentence here!',
      'He said that "this line ends with a quote."',
  ]
  assert v.edits['c4_citations'] == len('[1]') + len('[edit]')
  assert v.edits['c4_lines'] > 0


def test_c4_page_rules():
  body = 'The first sentence of the article is here.\nThe second sentence of it is here.\nThe third one is here too.'
  assert c4(body).keep
  assert c4(body + '\nLorem ipsum dolor sit amet, consectetur.').reason == 'lorem_ipsum'
  assert c4(body + '\nfunction f() { return the value of it. }.').reason == 'curly_bracket'
  # A word over 1,000 characters drops its line, as in TFDS's clean_page, not the page.
  long_line = 'x' * 1001 + ' is a very long word in the middle of a line.'
  v = c4(body + '\n' + long_line)
  assert v.keep and v.text == body and v.edits['c4_lines'] == len(long_line)
  v = c4(long_line + '\n' + body)
  assert v.keep and v.text == body
  assert c4(long_line + '\nThe first sentence of the article is here.').reason == 'too_few_sentences'
  allowed = 'x' * 1000 + ' is a long word but allowed.'
  assert c4(body + '\n' + allowed).keep and c4(body + '\n' + allowed).text is None  # unchanged
  v = c4(body + '\n' + long_line, max_word_length=-1)
  assert v.keep and v.text is None
  two = 'The first sentence of the article is here.\nThe second sentence of it is here.'
  assert c4(two).reason == 'too_few_sentences'
  # Two lines but three sentences: kept.
  assert c4('The first sentence is here. The second one is here.\nThe third sentence is here now.').keep
  assert c4(two, min_sentences=2).keep


def test_count_sentences_ignores_abbreviations_and_numbers():
  assert rules.count_sentences('The U.S. Army paid 3.14 dollars to Mr. Smith today.') == 1
  assert rules.count_sentences('One is here. Two is here! Three is here?') == 3
  assert rules.count_sentences('') == 0
  assert rules.count_sentences('© Hooli Inc. 2017. All Rights Reserved.') == 2  # 'Inc.' ends none
  assert rules.count_sentences('Маленький мальчик гуляет. Наша команда учится.') == 2  # any script
  # spaCy keeps an unspaced CJK run as one token, so its full stops end no sentence there.
  assert rules.count_sentences('今天天气很好。我们去公园。好的') == 1
  assert rules.count_sentences('今天天气很好。 我们去公园。 好的') == 3


# ----------------------------------------------------------------------------- FineWeb


def fw(text, **kw):
  return rules.fineweb(Analysis(text), dataclasses.replace(rules.FineWebConfig(), **kw))


def test_fineweb_rules():
  assert fw(prose(8)).keep
  no_punct = '\n'.join([f'A line about topic number {i} without an end mark' for i in range(10)])
  assert fw(no_punct).reason == 'line_punct_ratio'
  assert fw(no_punct + '\nBut this one ends here.\nAnd this one ends too.').keep  # 2 of 12 > 0.12
  short = '\n'.join(['Short line.'] + [f'Item {i}.' for i in range(7)] + [prose(4), prose(8).split(chr(10))[1], SENTENCES[8] + ' ' + SENTENCES[9]])
  assert fw(short).reason == 'short_line_ratio'  # 8 of 11 lines are <= 30 chars
  dup = '\n'.join([prose(4), SENTENCES[5] + ' ' + SENTENCES[6], 'Shared footer line that repeats.', 'Shared footer line that repeats.'])
  assert fw(dup).reason == 'char_dup_ratio'
  listy = '\n'.join(f'Internationalisation{i:03d} decentralisation.' for i in range(40))  # 3 tokens a line
  v = fw(listy)
  assert v.reason == 'list_ratio' and v.signals['newlines_per_word'] > 0.03


# ------------------------------------------------------------------- language, badwords


def test_language_id_uses_bundled_model():
  lid = rules.LanguageId(rules.LanguageConfig())
  assert lid(Analysis(prose())).keep
  v = lid(Analysis('Le comité s’est réuni mardi pour discuter de la nouvelle bibliothèque et '
                   'des horaires d’ouverture pendant les vacances scolaires.'))
  assert not v.keep and v.reason == 'language_fr'
  assert 0 <= v.signals['lang_score'] < 0.65
  strict = rules.LanguageId(rules.LanguageConfig(threshold=0.9999))
  v = strict(Analysis('The committee met on Tuesday, and then it rained.'))
  assert not v.keep and v.reason == 'language_low_score' and 0.5 < v.signals['lang_score'] <= 0.9999


def test_bad_words_filter(tmp_path):
  path = tmp_path / 'bad.txt'
  path.write_text('# comment\nbadword\ntwo words\n')
  bw = rules.BadWords(rules.BadWordsConfig(enabled=True, words_file=str(path)))
  assert not bw(Analysis('This has a BadWord in it.')).keep
  assert not bw(Analysis('Here are two words together.')).keep
  assert bw(Analysis('A badwordy token is not the word.')).keep
  with pytest.raises(CorpusInputError, match='--config.rules.bad_words.words_file'):
    rules.BadWords(rules.BadWordsConfig(enabled=True, words_file=str(tmp_path / 'missing.txt')))


def test_default_bad_words_list_is_shipped():
  assert rules.BadWords(rules.BadWordsConfig(enabled=True))


# ------------------------------------------------------------------------------ chain


def test_chain_order_first_reason_and_overlap():
  chain = rules.RuleChain(dataclasses.replace(rules.RulesConfig(), language=rules.LanguageConfig(enabled=False)))
  assert chain.names == ['gopher_repetition', 'gopher_quality', 'c4', 'fineweb']
  ok = chain(prose(8))
  assert ok.removed_by == '' and ok.failed == []
  spam = '\n'.join(['buy cheap shoes now'] * 20)
  r = chain(spam)
  assert r.removed_by == 'gopher_repetition'
  assert 'gopher_quality' in r.failed and len(r.failed) >= 3  # all rules evaluated
  r1 = chain(spam, all_rules=False)
  assert r1.failed == ['gopher_repetition']


def test_chain_c4_rewrite_is_what_later_rules_and_output_see():
  chain = rules.RuleChain(dataclasses.replace(rules.RulesConfig(), language=rules.LanguageConfig(enabled=False)))
  text = 'Home | About | Contact\n' + prose(8) + '\nCopyright 2020 Example'
  r = chain(text)
  assert r.removed_by == ''
  assert r.text == prose(8)
  assert r.edits['c4_lines'] == len('Home | About | Contact') + len('Copyright 2020 Example')


def test_fast_tokenizer_path_equals_the_regex_and_word_counts_equal_definitions():
  """words() skips the affix rules for letters-only chunks and caches the rest; the Gopher
  counts run as regexes over the joined tokens. Both must equal their plain definitions
  (spaCy's algorithm chunk by chunk, the per-token tests) on messy web-like text."""
  import random
  from llm.data.clean import text as text_mod
  from benchmarks.corpus import webgen
  docs = [r['text'] for r in webgen.generate(300, seed=5)]
  rng = random.Random(0)
  pieces = ['Mr.', 'U.S.', "don't", 'cannot', 'Cannot.', 'end.', '(a)', '3.14', '+44', 'a|b', 'sir,--',
            '#tag', '...', '…', '—', '1,000', "it's", 'x@y.org', 'café', 'naïve.', '½', '_x_', 'über,']
  docs += [' '.join(rng.choice(pieces) for _ in range(60)) for _ in range(50)]
  for d in docs:
    toks = text_mod.words(d)
    assert toks == [t for t in text_mod.tokens(d) if not t.isspace()]
    n_words = len(toks)
    if not n_words:
      continue
    v = rules.gopher_quality(Analysis(d), dataclasses.replace(rules.GopherQualityConfig(), min_words=1))
    real = [w for w in toks if not rules.PUNCTUATION.issuperset(w)]
    assert v.signals['words'] == len(real)
    if real:
      assert v.signals['mean_word_length'] == pytest.approx(sum(map(len, real)) / len(real))
      alpha = sum(any(c.isalpha() for c in w) for w in toks) / n_words
      assert v.signals['alpha_words_ratio'] == pytest.approx(alpha)
