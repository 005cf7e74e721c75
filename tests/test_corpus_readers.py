"""Tests of llm/data/clean/readers.py: every format, globs and ids, and every kind of bad input."""

import gzip
import io
import json
import os
import random
import zlib

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from llm.data.clean import readers
from llm.data.clean.document import FileStats
from llm.data.clean.readers import CorpusInputError, ReaderConfig


def write(path, data: bytes) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)
  return str(path)


def read(path, cfg=ReaderConfig(), file_id='f'):
  stats = FileStats(str(path))
  docs = list(readers.read_file(str(path), file_id, cfg, stats))
  return docs, stats


def noise(rng: random.Random, n: int) -> str:
  """Hex of ``n`` random bytes: text that barely compresses, so gzip cuts fall where intended."""
  return rng.randbytes(n).hex()


def jsonl(records) -> bytes:
  return b''.join(json.dumps(r).encode() + b'\n' for r in records)


# ----------------------------------------------------------------------------- plain text


def test_text_whole_file_is_one_doc(tmp_path):
  p = write(tmp_path / 'a.txt', b'First line.\n\nSecond paragraph.\n')
  docs, stats = read(p)
  assert [(d.id, d.text, d.source, d.meta) for d in docs] == [('f#000000000', 'First line.\n\nSecond paragraph.\n',
                                                               p, {})]
  assert stats.records == 1 and stats.bytes_read == 31 and not stats.errors


def test_text_blank_line_separator(tmp_path):
  p = write(tmp_path / 'a.txt', b'\xef\xbb\xbfOne a\none b\n\n\n  \nTwo\r\n\r\nThree\nthree b')
  docs, stats = read(p, ReaderConfig(doc_separator='blank_line'))
  assert [(d.id, d.text) for d in docs] == [('f#000000000', 'One a\none b'), ('f#000000001', 'Two'),
                                            ('f#000000002', 'Three\nthree b')]
  assert stats.records == 3


def test_text_line_separator_ids_are_line_numbers(tmp_path):
  p = write(tmp_path / 'a.txt', b'alpha\n\nbeta\r\n   \ngamma')
  docs, stats = read(p, ReaderConfig(doc_separator='line'))
  # Blank lines are skipped without a count but keep their position: ids are line numbers.
  assert [(d.id, d.text) for d in docs] == [('f#000000000', 'alpha'), ('f#000000002', 'beta'),
                                            ('f#000000004', 'gamma')]
  assert stats.records == 3 and stats.empty_text == 0


def test_text_gzip_and_blank_file(tmp_path):
  p = write(tmp_path / 'a.txt.gz', gzip.compress('héllo wörld\n'.encode()))
  docs, _ = read(p)
  assert [d.text for d in docs] == ['héllo wörld\n']
  # Several gzip members (as `cat a.gz b.gz` makes) and zero padding after the last one.
  p = write(tmp_path / 'm.txt.gz', gzip.compress(b'part one, ') + gzip.compress(b'part two') + bytes(512))
  docs, stats = read(p)
  assert [d.text for d in docs] == ['part one, part two'] and not stats.truncated and not stats.errors
  docs, stats = read(write(tmp_path / 'blank.txt', b'  \n\n'))
  assert docs == [] and stats.empty_text == 1 and not stats.empty_file


# ----------------------------------------------------------------------------- JSONL


def test_jsonl_text_and_metadata(tmp_path):
  p = write(tmp_path / 'a.jsonl', jsonl([{'text': 'doc one', 'url': 'http://a', 'n': 3},
                                         {'content': 'other field', 'text': 'doc two', 'tags': ['x']}]))
  docs, stats = read(p)
  assert [(d.id, d.text, d.meta) for d in docs] == [('f#000000000', 'doc one', {'url': 'http://a', 'n': 3}),
                                                    ('f#000000001', 'doc two', {'content': 'other field',
                                                                                    'tags': ['x']})]
  assert stats.records == 2
  docs, _ = read(p, ReaderConfig(text_field='content'))
  assert [(d.id, d.text) for d in docs] == [('f#000000001', 'other field')]


def test_jsonl_gzip_ndjson_and_json_extensions(tmp_path):
  data = jsonl([{'text': f'doc {i}'} for i in range(5)])
  for name, payload in [('a.jsonl.gz', gzip.compress(data)), ('b.ndjson', data), ('c.json.gz', gzip.compress(data))]:
    docs, stats = read(write(tmp_path / name, payload))
    assert [d.text for d in docs] == [f'doc {i}' for i in range(5)], name
    assert stats.records == 5


def test_jsonl_bad_records_counted_exactly(tmp_path):
  lines = [
      b'{"text": "good 0"}',
      b'{"text": "broken',  # bad_json
      b'',  # blank: skipped, not counted
      b'[1, 2]',  # bad_json: not an object
      b'{"body": "no text field"}',  # missing_text
      b'{"text": 42}',  # missing_text: not a string
      b'{"text": null}',  # missing_text
      b'{"text": "   \\n "}',  # empty_text
      b'{"text": ""}',  # empty_text
      b'{"text": "good \xff\xfe bytes"}',  # decode_errors (still yielded)
      b'   ',  # blank
      b'{"text": "good 11"}',
  ]
  docs, stats = read(write(tmp_path / 'bad.jsonl', b'\n'.join(lines) + b'\n'))
  assert [(d.id, d.text) for d in docs] == [('f#000000000', 'good 0'),
                                            ('f#000000009', 'good \ufffd\ufffd bytes'),
                                            ('f#000000011', 'good 11')]
  assert (stats.records, stats.bad_json, stats.missing_text, stats.empty_text, stats.decode_errors) == (3, 2, 3, 2, 1)
  assert not stats.truncated and not stats.empty_file
  joined = '\n'.join(stats.errors)
  assert 'line 1: invalid JSON' in joined  # one message per kind, each with its record number
  assert "line 4: no string field 'text'" in joined and 'text_field' in joined
  assert 'line 7: empty text' in joined
  assert 'line 9: bytes that are not valid utf-8' in joined
  assert len(stats.errors) == 4


def test_decode_errors_plain_text(tmp_path):
  p = write(tmp_path / 'a.txt', b'ok\nbad \xc3\x28 here\nalso \x80 bad\n')
  docs, stats = read(p, ReaderConfig(doc_separator='line'))
  assert [d.text for d in docs] == ['ok', 'bad \ufffd( here', 'also \ufffd bad']
  assert stats.decode_errors == 2 and stats.records == 3
  assert len(stats.errors) == 1 and stats.errors[0].startswith('line 1:')


# ----------------------------------------------------------------------------- truncation and empty files


def test_truncated_gzip_keeps_records_before_the_cut(tmp_path):
  records = [{'text': f'document number {i} ' + 'x' * (i * 37 % 500), 'i': i} for i in range(400)]
  # Incompressible-ish content so the cut falls well inside the stream.
  rng = random.Random(0)
  records = [dict(r, noise=noise(rng, 64)) for r in records]
  full = gzip.compress(jsonl(records))
  cut = full[:len(full) * 6 // 10]
  docs, stats = read(write(tmp_path / 'cut.jsonl.gz', cut))
  assert stats.truncated
  assert 100 < len(docs) < 400
  # Every document before the cut is kept, in order, complete; the cut line is dropped, not counted as bad JSON.
  assert [d.meta['i'] for d in docs] == list(range(len(docs)))
  assert all(d.text == records[int(d.id[-9:])]['text'] for d in docs)
  assert (stats.records, stats.bad_json) == (len(docs), 0)
  assert any('ends early' in e for e in stats.errors)
  # The reader handed out everything that decompressed before the cut: compare with zlib's own prefix.
  prefix = zlib.decompressobj(31).decompress(cut)
  assert len(docs) == prefix.count(b'\n')


def test_corrupt_gzip_data_is_truncation_not_crash(tmp_path):
  rng = random.Random(1)
  full = bytearray(gzip.compress(jsonl([{'text': noise(rng, 40)} for _ in range(300)])))
  mid = len(full) // 2
  full[mid:mid + 64] = bytes(64)  # damage the middle of the deflate stream
  docs, stats = read(write(tmp_path / 'bad.jsonl.gz', bytes(full)))
  assert stats.truncated and 'corrupt gzip data' in stats.errors[-1]
  # The records that decompressed before the damage are kept, even those zlib
  # produced in the same call that hit the error (about half of the 300).
  assert 140 <= len(docs) < 300
  assert [d.id for d in docs] == [f'f#{i:09d}' for i in range(len(docs))]


def test_truncated_text_file_drops_the_cut_record(tmp_path):
  rng = random.Random(2)
  lines = b''.join(f'line {i} {noise(rng, 30)}\n'.encode() for i in range(200))
  cut = gzip.compress(lines)[:-100]
  docs, stats = read(write(tmp_path / 'a.txt.gz', cut), ReaderConfig(doc_separator='line'))
  assert stats.truncated and 0 < len(docs) < 200
  assert all(d.text == lines.split(b'\n')[int(d.id[-9:])].decode() for d in docs)
  docs, stats = read(tmp_path / 'a.txt.gz')  # whole-file mode: the only record is incomplete
  assert docs == [] and stats.truncated


@pytest.mark.parametrize('name,data', [('empty.txt', b''), ('empty.jsonl.gz', gzip.compress(b'')),
                                       ('empty.warc.gz', b''), ('empty.wet.gz', gzip.compress(b''))])
def test_empty_files(tmp_path, name, data):
  docs, stats = read(write(tmp_path / name, data), ReaderConfig(extractor='resiliparse'))
  assert docs == [] and stats.empty_file and not stats.truncated and stats.records == 0


# ----------------------------------------------------------------------------- size limits


def test_too_large_is_counted_and_skipped(tmp_path):
  p = write(tmp_path / 'a.jsonl', jsonl([{'text': 'short'}, {'text': 'y' * 101}, {'text': 'z' * 100},
                                         {'text': 'w' * 5000}]))
  docs, stats = read(p, ReaderConfig(max_doc_chars=100))
  assert [d.id for d in docs] == ['f#000000000', 'f#000000002']
  assert stats.too_large == 2 and stats.records == 2
  p = write(tmp_path / 'b.txt', b'a\n' + b'q' * 1000 + b'\nb\n\n' + b'c' * 101 + b'\n\nd\n')
  docs, stats = read(p, ReaderConfig(doc_separator='line', max_doc_chars=100))
  assert [(d.id, d.text) for d in docs] == [('f#000000000', 'a'), ('f#000000002', 'b'),
                                            ('f#000000006', 'd')]
  assert stats.too_large == 2
  docs, stats = read(p, ReaderConfig(doc_separator='blank_line', max_doc_chars=100))
  assert [(d.id, d.text) for d in docs] == [('f#000000002', 'd')] and stats.too_large == 2
  docs, stats = read(p, ReaderConfig(max_doc_chars=100))
  assert docs == [] and stats.too_large == 1


def test_three_megabyte_documents(tmp_path):
  big = ('A long sentence of a big document. ' * 90_000)[:3_000_000]
  p = write(tmp_path / 'big.jsonl.gz', gzip.compress(jsonl([{'text': big, 'k': 1}, {'text': 'small'}])))
  docs, stats = read(p)
  assert [len(d.text) for d in docs] == [3_000_000, 5] and docs[0].text == big and stats.too_large == 0
  p = write(tmp_path / 'big.txt', big.encode())
  docs, _ = read(p)
  assert len(docs) == 1 and docs[0].text == big


def test_reading_is_lazy(tmp_path):
  p = write(tmp_path / 'many.txt', b''.join(b'line %d\n' % i for i in range(1_000_000)))  # ~ 13 MB
  stats = FileStats(p)
  it = readers.read_file(p, 0, ReaderConfig(doc_separator='line'), stats)
  assert next(it).text == 'line 0'
  it.close()
  assert stats.bytes_read <= 2 << 20  # one read chunk, not the whole file


# ----------------------------------------------------------------------------- files, globs, ids


def test_globs_order_and_stable_ids(tmp_path):
  names = ['b/2.jsonl', 'a/1.jsonl', 'a/deep/3.jsonl.gz', 'c.txt', 'skip.csv']
  for i, name in enumerate(names):
    data = jsonl([{'text': f'{name} #{j}'} for j in range(3)]) if 'jsonl' in name else f'{name}'.encode()
    write(tmp_path / name, gzip.compress(data) if name.endswith('.gz') else data)
  root = str(tmp_path)
  files = readers.list_files(f'{root}/**/*.jsonl*, {root}/c.txt,{root}/a/1.jsonl')  # a/1.jsonl twice
  assert files == sorted(files) and [os.path.relpath(f, root) for f in files] == [
      'a/1.jsonl', 'a/deep/3.jsonl.gz', 'b/2.jsonl', 'c.txt']
  assert readers.list_files([f'{root}/./c.txt', f'{root}/c.txt']) == [os.path.join(root, 'c.txt')]
  docs, stats = readers.read_files(files, ReaderConfig())
  # Ids are '<path as listed>#<record>': sorted ids are files in path order, records in order.
  assert [d.id for d in docs] == [f'{f}#{r:09d}' for f, n in zip(files, (3, 3, 3, 1)) for r in range(n)]
  assert [d.id for d in docs] == sorted(d.id for d in docs)
  assert [d.text for d in docs][:4] == ['a/1.jsonl #0', 'a/1.jsonl #1', 'a/1.jsonl #2', 'a/deep/3.jsonl.gz #0']
  assert [d.source for d in docs][-1] == files[3]
  assert [s.records for s in stats] == [3, 3, 3, 1] and [s.path for s in stats] == files
  # Ids do not move when a skip rule changes: drop one record, the others keep their ids.
  docs2, _ = readers.read_files(files, ReaderConfig(max_doc_chars=len('a/1.jsonl #0')))
  by_id = {d.id: d.text for d in docs}
  assert all(by_id[d.id] == d.text for d in docs2) and len(docs2) == 7  # 'a/deep/3.jsonl.gz #i' are too long


def test_pattern_matching_nothing_names_pattern_and_fix(tmp_path):
  write(tmp_path / 'a.txt', b'x')
  pattern = str(tmp_path / 'nope' / '*.jsonl')
  with pytest.raises(CorpusInputError, match='matches no file') as e:
    readers.list_files(f'{tmp_path}/a.txt,{pattern}')
  assert repr(pattern) in str(e.value) and 'quote' in str(e.value)
  with pytest.raises(CorpusInputError, match='matches no file'):
    readers.list_files(str(tmp_path / 'missing.txt'))
  with pytest.raises(CorpusInputError, match='is a directory'):
    readers.list_files(str(tmp_path))
  with pytest.raises(CorpusInputError, match='no input pattern'):
    readers.list_files(' , ')


def test_formats_and_config_errors(tmp_path):
  assert [readers.detect_format(p) for p in ['a.txt', 'A.TXT.GZ', 'x.jsonl', 'x.ndjson.gz', 'x.json', 'x.warc.wet.gz',
                                             'x.wet', 'x.warc.gz', 'x.warc']] == [
                                                 'text', 'text', 'jsonl', 'jsonl', 'jsonl', 'wet', 'wet', 'warc', 'warc']
  with pytest.raises(CorpusInputError, match=r"--config\.reader\.format=") as e:
    readers.detect_format('data/x.csv')
  assert "'data/x.csv'" in str(e.value)
  p = write(tmp_path / 'x.csv', b'{"text": "hi"}\n')
  with pytest.raises(CorpusInputError):
    read(p)
  assert [d.text for d in read(p, ReaderConfig(format='jsonl'))[0]] == ['hi']
  with pytest.raises(CorpusInputError, match='cannot read input file'):
    readers.read_file(str(tmp_path / 'gone.txt'), 0, ReaderConfig(), FileStats('gone'))  # raises at the call
  for bad in [dict(doc_separator='para'), dict(extractor='bs4'), dict(format='csv'), dict(max_doc_chars=0),
              dict(text_field='')]:
    # Hints name the flag a user types, not a dataclass field.
    with pytest.raises(CorpusInputError, match=f'--config.reader.{next(iter(bad))}') as e:
      ReaderConfig(**bad)
    assert 'ReaderConfig' not in str(e.value)


def test_missing_text_field_hint_names_the_flag(tmp_path):
  p = write(tmp_path / 'a.jsonl', b'{"content": "hi there"}\n')
  docs, stats = read(p)
  assert not docs and stats.missing_text == 1
  assert '--config.reader.text_field=' in stats.errors[0] and 'ReaderConfig' not in stats.errors[0]


@pytest.mark.parametrize('name,data', [
    ('random.warc.gz', bytes(range(7, 256)) * 40),  # not gzip at all, despite the name
    ('random-gz.warc.gz', gzip.compress(bytes(range(256)) * 40)),  # gzip of random-looking bytes
    ('text.warc', b'hello world\nthis is text\n'),
    ('crawl.warc.wet.gz', gzip.compress(b'<html><body>a web page</body></html>\n')),
])
def test_a_file_that_is_not_warc_says_so(tmp_path, name, data):
  p = write(tmp_path / name, data)
  docs, stats = read(p)
  assert docs == [] and stats.wrong_format and not stats.truncated
  kind = 'WET' if '.wet' in name else 'WARC'
  assert stats.errors == [stats.errors[0]] and stats.errors[0].startswith(f'not a {kind} file')
  assert 'Content-Length' not in stats.errors[0]


# ----------------------------------------------------------------------------- WARC / WET

ARTICLE = [
    'The river valley was settled by farmers in the twelfth century, who built terraces along the slopes.',
    'Over the following centuries the village grew into a market town with a stone bridge and a mill.',
    'Today the old mill houses a museum that tells the story of the harvest festivals held every autumn.',
    'Visitors can walk the historic railway path that links the station to the mountain lakes nearby.',
]


def article_html(title='Valley history', extra='') -> bytes:
  paras = ''.join(f'<p>{s} {s}</p>' for s in ARTICLE)
  return (f'<!DOCTYPE html><html><head><title>{title}</title>'
          '<script>var secretTracker = "SCRIPTCODE"; function go(){{}}</script></head><body>'
          '<nav><ul><li><a href="/">NAVHOME</a></li><li><a href="/about">NAVABOUT</a></li>'
          '<li><a href="/shop">NAVSHOP</a></li></ul></nav>'
          f'<main><article><h1>{title}</h1>{paras}{extra}</article></main>'
          '<footer><a href="/privacy">Privacy</a> FOOTERTEXT</footer></body></html>').encode()


def warc_bytes(records, gzip_records=True) -> bytes:
  """records: (type, uri, payload bytes, http headers list or None, content type for non-HTTP records)."""
  out = io.BytesIO()
  writer = WARCWriter(out, gzip=gzip_records)
  writer.write_record(writer.create_warcinfo_record('test.warc', {'software': 'tests'}))
  for rtype, uri, payload, http, ctype in records:
    if http is not None:
      proto = 'HTTP/1.1'
      status = 'GET / HTTP/1.1' if rtype == 'request' else '200 OK'
      http = StatusAndHeaders(status, http, protocol=proto, is_http_request=rtype == 'request')
    rec = writer.create_warc_record(uri, rtype, payload=io.BytesIO(payload), http_headers=http,
                                    warc_content_type=ctype,
                                    warc_headers_dict={'WARC-Date': '2024-05-01T10:00:00Z'})
    writer.write_record(rec)
  return out.getvalue()


HTML = [('Content-Type', 'text/html; charset=utf-8')]
WARC_RECORDS = [
    ('request', 'https://ex.com/a', b'', [('Host', 'ex.com')], None),  # record 1: ignored
    ('response', 'https://ex.com/a', article_html(), HTML, None),  # record 2: doc
    ('metadata', 'https://ex.com/a', b'fetchTimeMs: 12\n', None, 'application/warc-fields'),  # ignored
    ('response', 'https://ex.com/logo.png', b'\x89PNG\r\n\x1a\n' + bytes(100), [('Content-Type', 'image/png')], None),
    ('response', 'https://ex.com/data', b'{"a": 1}', [('Content-Type', 'application/json')], None),
    ('response', 'https://ex.com/empty', b'<html><body><nav>x</nav></body></html>', HTML, None),  # extract_failed
    ('response', 'https://ex.com/noct', article_html('No content type'), [], None),  # sniffed as HTML: doc
    ('response', 'https://ex.com/latin', article_html('Caf\xe9 history'.encode('latin-1').decode('latin-1')).replace(
        b'Caf\xc3\xa9', b'Caf\xe9'), [('Content-Type', 'text/html; charset=ISO-8859-1')], None),  # header charset
    ('response', 'https://ex.com/badutf', article_html(extra='<p>bad \xff byte</p>').replace(b'\xc3\xbf', b'\xff'),
     HTML, None),  # decode error
]


@pytest.mark.parametrize('extractor', ['trafilatura', 'resiliparse'])
def test_warc_html_extraction(tmp_path, extractor):
  p = write(tmp_path / 'crawl.warc.gz', warc_bytes(WARC_RECORDS))
  docs, stats = read(p, ReaderConfig(extractor=extractor))
  assert [d.id for d in docs] == ['f#000000002', 'f#000000007', 'f#000000008', 'f#000000009']
  assert [d.meta['url'] for d in docs] == ['https://ex.com/a', 'https://ex.com/noct', 'https://ex.com/latin',
                                           'https://ex.com/badutf']
  assert docs[0].meta['date'] == '2024-05-01T10:00:00Z' and docs[0].meta['warc_record_id'].startswith('<urn:uuid:')
  for d in docs:
    for sentence in ARTICLE:
      assert sentence in d.text
    for junk in ['SCRIPTCODE', 'secretTracker', 'NAVHOME', 'NAVSHOP']:
      assert junk not in d.text
  assert 'Café history' in docs[2].text
  assert 'bad \ufffd byte' in docs[3].text
  assert (stats.records, stats.non_html, stats.extract_failed, stats.decode_errors, stats.truncated) == (4, 2, 1, 1,
                                                                                                         False)
  assert any('record 4' in e and 'image/png' in e for e in stats.errors)


def test_warc_gzip_per_record_whole_file_and_plain_agree(tmp_path):
  records = [('response', f'https://ex.com/{i}', article_html(f'Page {i}'), HTML, None) for i in range(3)]
  plain = warc_bytes(records, gzip_records=False)
  variants = {'rec.warc.gz': warc_bytes(records), 'whole.warc.gz': gzip.compress(plain), 'plain.warc': plain}
  results = {}
  for name, data in variants.items():
    docs, stats = read(write(tmp_path / name, data), ReaderConfig(extractor='resiliparse'))
    results[name] = [(d.id, d.text) for d in docs]
    assert stats.records == 3 and not stats.truncated and not stats.errors, name
  assert results['rec.warc.gz'][0][0] == 'f#000000001'  # record 0 is the warcinfo
  assert 'Page 2' in results['rec.warc.gz'][2][1]
  assert results['rec.warc.gz'] == results['whole.warc.gz'] == results['plain.warc']


@pytest.mark.parametrize('gzipped', [True, False])
def test_warc_truncated_keeps_earlier_records(tmp_path, gzipped):
  records = [('response', f'https://ex.com/{i}', article_html(f'Page {i}'), HTML, None) for i in range(5)]
  data = warc_bytes(records, gzip_records=gzipped)
  last = warc_bytes(records[-1:], gzip_records=gzipped)
  warcinfo = warc_bytes([], gzip_records=gzipped)
  cut = data[:len(data) - (len(last) - len(warcinfo)) // 2]  # half-way into the last record
  name = 'cut.warc.gz' if gzipped else 'cut.warc'
  docs, stats = read(write(tmp_path / name, cut), ReaderConfig(extractor='resiliparse'))
  assert [d.meta['url'] for d in docs] == [f'https://ex.com/{i}' for i in range(4)]
  assert stats.truncated and stats.records == 4 and stats.extract_failed == 0 and len(stats.errors) == 1


def test_warc_garbage_is_counted_not_raised(tmp_path):
  good = warc_bytes([('response', 'https://ex.com/0', article_html(), HTML, None)], gzip_records=False)
  docs, stats = read(write(tmp_path / 'g.warc', good + b'this is not a WARC header\r\n\r\nmore junk\r\n'),
                     ReaderConfig(extractor='resiliparse'))
  assert len(docs) == 1 and stats.truncated and 'reading of this file stops here' in stats.errors[-1]
  docs, stats = read(write(tmp_path / 'n.warc', b'hello world\nnot a warc\n'), ReaderConfig(extractor='resiliparse'))
  assert docs == [] and stats.wrong_format and stats.errors[0].startswith('not a WARC file')


def test_too_large_html_text(tmp_path):
  p = write(tmp_path / 'a.warc.gz', warc_bytes([('response', 'https://ex.com/a', article_html(), HTML, None)]))
  docs, stats = read(p, ReaderConfig(extractor='resiliparse', max_doc_chars=200))
  assert docs == [] and stats.too_large == 1


def test_wet_conversion_records(tmp_path):
  text0 = 'Plain text of page zero.\nSecond line.'
  records = [('conversion', 'https://ex.com/0', text0.encode(), None, 'text/plain'),
             ('conversion', 'https://ex.com/1', b'   \n', None, 'text/plain'),  # empty_text
             ('conversion', 'https://ex.com/2', 'Seite zwei \xfcber'.encode() + b' \xff', None, 'text/plain')]
  p = write(tmp_path / 'x.warc.wet.gz', warc_bytes(records))
  docs, stats = read(p)
  assert [(d.id, d.text, d.meta['url']) for d in docs] == [
      ('f#000000001', text0, 'https://ex.com/0'), ('f#000000003', 'Seite zwei über \ufffd', 'https://ex.com/2')]
  assert docs[0].meta['date'] == '2024-05-01T10:00:00Z'
  assert (stats.records, stats.empty_text, stats.decode_errors, stats.truncated) == (2, 1, 1, False)
