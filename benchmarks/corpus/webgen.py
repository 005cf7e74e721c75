"""Deterministic generator of a realistic web-like corpus for benchmarks and demos.

No web crawl can be downloaded here, so this builds one: real sentences (SST-2 movie
reviews, CrowS-Pairs, WinoBias, Tiny Shakespeare, all bundled in ``data/``) laid out the
way text extracted from web pages looks, with the noise the cleaning rules are meant to
catch. Each record is ``{'text', 'url', 'kind'}``; ``kind`` is the ground truth of what
the generator meant the page to be, so a pipeline's decisions can be scored against it.

Kinds and their share of the documents (drawn independently per document):

  ==========  =====  ==================================================================
  article     49.95  paragraphs of 2-6 real sentences inside site boilerplate: menus,
                     cookie banners, share buttons, "Posted by ...", copyright lines;
                     wiki-style sites add "[1]", "[edit]", "[citation needed]". About
                     10% carry PII look-alikes (versions, ISO dates, prices, ISBNs) and
                     3% a short quote in another language.
  exact_dup    6     an exact copy of an earlier document under another URL (mirror,
                     tracking query, AMP page, reply link)
  near_dup     6     an earlier document with a few words replaced/inserted/deleted
                     (about 0.3-1.2% of its words), a boilerplate line swapped and/or a
                     date changed; word 5-gram Jaccard to the original mostly > 0.8
  pii          5     an article with e-mail addresses, phone numbers (US, UK and other
                     international formats), IPv4 and some IPv6 addresses in natural
                     sentences, plus look-alikes that must survive scrubbing
  code         4     Python / JavaScript / HTML / CSS snippets, often in a Q&A thread
  lorem        2     lorem ipsum filler and "Hello world!" theme demo pages
  foreign      5     French, German, Spanish, Italian, Portuguese, Dutch, Russian,
                     Chinese, Arabic, Japanese
  short        5     a title and 5-40 words: 404 pages, log-in forms, "coming soon"
  spam         4     SEO spam: a line repeated many times, keyword stuffing, hashtags
  list         4     bullet lists, number tables, product specs, link lists of teasers
  shakespeare  5     passages of Tiny Shakespeare (verse: short lines, many without
                     terminal punctuation). The text is only ~200k words, so these
                     pages overlap each other, like the many Shakespeare mirrors online
  identity     4     CrowS-Pairs and WinoBias sentences (gender, race, religion,
                     nationality, age, sexual orientation, disability, ...) mixed with
                     ordinary prose, so the representation audit has terms to count
  huge         0.05  hundreds of KB: a blog archive of many articles, a web-server log
                     dump (full of IP addresses) or a CSV data dump
  ==========  =====  ==================================================================

Pages belong to sites (Zipf-distributed page counts); a site keeps its header and footer
lines on every page, so the same boilerplate recurs across many documents, as on the real
web, which is what C4-style repeated-line removal exploits. Lengths are log-normal: the
mean is ~420 words (median ~330), with some 20-word stubs and a few 5-10k word pages.
Prose paragraphs are random combinations of ~6.2k whole review sentences, so a sentence
recurs across the corpus but a paragraph line practically never does.

Determinism: everything is drawn from one ``random.Random(seed)`` stream in document
order (never ``hash()`` of a string, which is salted per process), so a (num_docs, seed)
pair always gives the same sequence of records. ``write_corpus`` cuts that sequence into
contiguous shards and writes gzip with a zero timestamp and no file name, so the shard
files are byte-identical between runs and their concatenation does not depend on the
shard count. Exact and near duplicates copy from a reservoir sample of all earlier
documents, so a copy may land in a different shard from its original.

Command line::

  python -m benchmarks.corpus.webgen --out DIR --num_docs 100000 --shards 8 --seed 0
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import functools
import glob
import gzip
import hashlib
import itertools
import json
import math
import os
import random
import re
import time
from typing import Any, Iterator

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'data')

# (kind, percent of documents). Sums to 100.
KIND_WEIGHTS: tuple[tuple[str, float], ...] = (
    ('article', 49.95), ('exact_dup', 6.0), ('near_dup', 6.0), ('pii', 5.0), ('code', 4.0),
    ('lorem', 2.0), ('foreign', 5.0), ('short', 5.0), ('spam', 4.0), ('list', 4.0),
    ('shakespeare', 5.0), ('identity', 4.0), ('huge', 0.05),
)
KINDS: tuple[str, ...] = tuple(k for k, _ in KIND_WEIGHTS)

RESERVOIR_SIZE = 5000  # earlier documents that duplicates may copy from
MAX_WORDS = 10_000  # cap of the log-normal body length (huge documents are separate)

# ----------------------------------------------------------------------------------------
# Source text
# ----------------------------------------------------------------------------------------

_CONTRACTION = re.compile(r" (n't|'s|'re|'ve|'ll|'d|'m)\b")
_SPACE_BEFORE = re.compile(r" ([,.;:!?%)\]]|\.\.\.)")
_PRONOUN_I = re.compile(r"\bi\b")
# SST phrases that start mid-sentence: a verb or a clitic left over from the parse tree.
_FRAGMENT_START = frozenset(
    "'s 's, n't 're 've 'll 'd 'm , . ; : -- ) ... is are was were be been being am has have had "
    "does do did and or but nor of to for with by from that which who whom whose as than "
    "so if because while although though into onto at in on about".split())


def detokenize(sentence: str) -> str:
  """Turns an SST-2 token string into web-looking prose.

  ``"it 's a charming , often affecting journey . "`` becomes
  ``"It's a charming, often affecting journey."``: punctuation and clitics re-attached,
  PTB quotes made straight, the pronoun "i" and the first letter capitalised, and a full
  stop added where the phrase has no terminal punctuation.
  """
  s = ' ' + ' '.join(sentence.split()) + ' '
  # PTB quotes: `` and '' are double, ` opens a single one; a lone ' closes a quote or
  # marks a plural possessive ("the actors ' work"), both attached to the word before.
  s = s.replace(' `` ', ' "').replace(" '' ", '" ').replace(' ` ', " '").replace(" ' ", "' ")
  s = s.replace(' -- ', ' - ').replace(' ( ', ' (').replace(' $ ', ' $')
  s = _CONTRACTION.sub(r'\1', s)
  s = _SPACE_BEFORE.sub(r'\1', s)
  s = _PRONOUN_I.sub('I', s).strip()
  s = re.sub(r'(^|[.!?] )(mr|ms|mrs|dr)\.', lambda m: m.group(1) + m.group(2).capitalize() + '.', s)
  for i, c in enumerate(s):
    if c.isalpha():
      s = s[:i] + c.upper() + s[i + 1:]
      break
  if s and s[-1] not in '.!?"\'':
    s += '.'
  return s


@dataclasses.dataclass
class Sources:
  """The real text the generator draws from (loaded once per process)."""
  sentences: list[str]  # detokenised whole SST-2 sentences of >= 8 words (~6.2k)
  sentence_words: list[int]  # word count of each
  phrases: list[str]  # short SST-2 phrases (2-6 words), for titles, list items, link text
  identity: list[str]  # CrowS-Pairs (both sentences of a pair) and WinoBias sentences
  shakespeare: list[str]  # Tiny Shakespeare speeches (blank-line separated blocks)
  vocab: list[str]  # distinct lowercase words, for near-duplicate edits


def _drop_subphrases(sentences: list[str]) -> list[str]:
  """Removes SST phrases contained in a longer one.

  SST-2's 67k training rows are the parse-tree nodes of ~6.9k review sentences, so most
  rows are fragments of others ("is n't bad", "the movie is n't bad"). Keeping only the
  maximal ones gives ~6.2k whole sentences that read as prose, and unrelated documents
  do not share n-grams through a sentence whole in one and as a fragment in the other.
  """
  # Index phrases by their first three words, then look for those keys at every position
  # of every sentence (phrases are whitespace-normalised, so split(' ') is exact).
  starts: dict[str, list[int]] = {}
  for i, s in enumerate(sentences):
    starts.setdefault(' '.join(s.split(' ', 3)[:3]), []).append(i)
  padded = [' ' + s + ' ' for s in sentences]
  contained: set[int] = set()
  for i, s in enumerate(sentences):
    words = s.split(' ')
    for j in range(len(words) - 2):
      for p in starts.get(' '.join(words[j:j + 3]), ()):
        if p != i and p not in contained and len(padded[p]) < len(padded[i]) and padded[p] in padded[i]:
          contained.add(p)
  return [s for i, s in enumerate(sentences) if i not in contained]


@functools.lru_cache(maxsize=2)
def load_sources(data_dir: str = DATA_DIR) -> Sources:
  """Reads the bundled data sets (about a second; cached per process)."""
  raw: dict[str, None] = {}  # insertion-ordered set: file order, duplicates dropped
  with open(os.path.join(data_dir, 'sst2_train.tsv'), encoding='utf-8') as f:
    next(f)  # header
    for line in f:
      raw[' '.join(line.rstrip('\n').split('\t', 1)[-1].split())] = None
  long, short = [], []
  for s in raw:
    w = s.split()
    if len(w) >= 8 and w[0] not in _FRAGMENT_START:
      long.append(s)
    elif 2 <= len(w) <= 6 and w[0] not in _FRAGMENT_START and all(t[0].isalnum() for t in w):
      short.append(s)
  sentences = [detokenize(s) for s in _drop_subphrases(long)]
  phrases = [detokenize(s).rstrip('.') for s in short]

  identity: dict[str, None] = {}
  with open(os.path.join(data_dir, 'crows_pairs_anonymized.csv'), encoding='utf-8', newline='') as f:
    for row in csv.DictReader(f):
      for col in ('sent_more', 'sent_less'):
        identity[' '.join(row[col].split())] = None
  for path in sorted(glob.glob(os.path.join(data_dir, 'winobias', '*.txt.*'))):
    with open(path, encoding='utf-8') as f:
      for line in f:
        s = re.sub(r'^\d+\s+', '', line.strip()).replace('[', '').replace(']', '')
        if s:
          identity[' '.join(s.split())] = None
  # A few CrowS-Pairs sentences lack a full stop; without it they would run into the next.
  identity_list = [s if s[-1] in '.!?"\'' else s + '.' for s in identity]

  with open(os.path.join(data_dir, 'tinyshakespeare.txt'), encoding='utf-8') as f:
    blocks = [b.strip() for b in f.read().split('\n\n') if b.strip()]

  vocab: dict[str, None] = {}
  for s in sentences:
    for w in s.lower().split():
      if w.isalpha() and len(w) > 2:
        vocab[w] = None
  return Sources(sentences=sentences, sentence_words=[len(s.split()) for s in sentences],
                 phrases=phrases, identity=identity_list, shakespeare=blocks, vocab=list(vocab))


# ----------------------------------------------------------------------------------------
# Web boilerplate
# ----------------------------------------------------------------------------------------

MONTHS = ('January', 'February', 'March', 'April', 'May', 'June', 'July', 'August',
          'September', 'October', 'November', 'December')
_DATE_RE = re.compile(r'\b(' + '|'.join(MONTHS) + r') (\d{1,2}), (\d{4})\b')

_NAV_ITEMS = ('Home', 'About', 'About Us', 'Contact', 'Contact Us', 'Blog', 'News', 'Reviews',
              'Movies', 'TV', 'Features', 'Services', 'Shop', 'FAQ', 'Archives', 'Categories',
              'Events', 'Careers', 'Support', 'Help', 'Login', 'Sign up', 'Subscribe', 'Search',
              'Community', 'Forums', 'Videos', 'Podcast', 'Newsletter', 'Donate')
_NAV_SEPARATORS = (' | ', ' · ', ' / ', ' » ', '  ', ' - ')
_HEADER_SINGLES = ('Menu', 'Skip to content', 'Skip to main content', 'Toggle navigation',
                   'Main menu', 'Search for:', 'Search', 'Close', 'Log in', 'Sign in',
                   'Primary Menu', 'Open menu', 'Jump to navigation', 'Jump to search',
                   'Breaking News', 'Trending', 'Advertisement', 'Sponsored')
_COOKIE_FIRST = ('This website uses cookies to improve your experience.',
                 'We use cookies to ensure that we give you the best experience on our website.',
                 'This site uses cookies.',
                 'We use cookies and similar technologies to personalise content and ads.',
                 'Our website uses cookies to analyse traffic and improve your experience.')
_COOKIE_SECOND = ('By continuing you agree to our Cookie Policy.',
                  "We'll assume you're ok with this, but you can opt-out if you wish.",
                  'If you continue to use this site we will assume that you are happy with it.',
                  'By continuing to browse the site you are agreeing to our use of cookies.',
                  'Learn more', 'Accept', 'Accept all cookies', 'Got it!', 'OK', 'Cookie settings')
_FOOTER_LINKS = ('Privacy Policy', 'Terms of Use', 'Terms and Conditions', 'Cookie Policy',
                 'Sitemap', 'Accessibility', 'Advertise', 'Contact', 'Imprint', 'RSS', 'Jobs',
                 'Do Not Sell My Personal Information', 'Disclaimer', 'Editorial Policy')
_SHARE = ('Share on Facebook', 'Share on Twitter', 'Tweet', 'Pin it', 'Share this:',
          'Share this article', 'Facebook Twitter LinkedIn Email', 'Share', 'Email this',
          'Click to share on Twitter (Opens in new window)',
          'Click to share on Facebook (Opens in new window)', 'Print', 'Like this:',
          'Like Loading...', 'Share via WhatsApp')
_ENGAGE = ('Read more...', 'Read more »', 'Continue reading →', 'Load more', 'Show more',
           'Leave a Reply', 'Leave a comment', 'Comments are closed.', '0 comments',
           'Your email address will not be published. Required fields are marked *',
           'Please enable JavaScript to view the comments powered by Disqus.',
           'Please enable JavaScript to view the comments',
           'Related Posts', 'You may also like', 'Recommended for you', 'Popular Posts',
           'Sign up for our newsletter to get the latest news.', 'Follow us', 'Back to top',
           'Next post →', '← Previous post', 'Powered by WordPress', 'Report an error',
           'Subscribe to our newsletter', 'Enter your email address', 'Filed under: Reviews',
           'Tags: film, review, drama', 'Posted in Uncategorized', 'What do you think?',
           'Join the discussion', 'Add Comment', 'Was this article helpful? Yes No')
_COMPANY_WORDS = ('Example', 'Acme', 'Northwind', 'Globex', 'Initech', 'Umbrella', 'Stark',
                  'Wayne', 'Vandelay', 'Hooli', 'Contoso', 'Fabrikam', 'Tailspin', 'Litware',
                  'Proseware', 'Blue Yonder', 'Silver Screen', 'Red Carpet', 'Open Road',
                  'Bright Lights')
_COMPANY_SUFFIX = ('Inc.', 'LLC', 'Ltd', 'Media', 'Media Group', 'Publishing', 'Group',
                   'Network', 'GmbH', 'Co.')
_AUTHORS = ('admin', 'editor', 'staff', 'guest', 'webmaster', 'John Smith', 'Maria Garcia',
            'Wei Chen', 'Aisha Khan', 'Oliver Brown', 'Sofia Rossi', 'Liam Murphy',
            'Priya Patel', 'Lucas Martin', 'Emma Wilson', 'Kenji Tanaka', 'Fatima Ali',
            'Noah Johnson', 'Chloe Dubois', 'Mateo Silva', 'Hannah Becker', 'Yusuf Demir')
_DOMAIN_A = ('daily', 'film', 'movie', 'screen', 'cinema', 'critic', 'reel', 'popcorn',
             'city', 'local', 'metro', 'north', 'south', 'blue', 'green', 'red', 'silver',
             'golden', 'open', 'urban', 'pacific', 'river', 'summit', 'bright', 'quiet',
             'modern', 'classic', 'indie', 'big', 'little', 'first', 'true', 'wild')
_DOMAIN_B = ('review', 'reviews', 'news', 'times', 'post', 'journal', 'blog', 'world', 'hub',
             'corner', 'notes', 'central', 'online', 'guide', 'insider', 'weekly', 'herald',
             'gazette', 'tribune', 'voice', 'digest', 'planet', 'zone', 'lab', 'buzz',
             'chronicle', 'report', 'club', 'house', 'desk', 'wire', 'feed', 'stories')
_TLDS = ('.com',) * 10 + ('.net', '.org', '.co.uk', '.io', '.info', '.blog', '.news', '.us',
                          '.ca', '.com.au', '.ie')
_SECTIONS = ('movies', 'culture', 'entertainment', 'reviews', 'arts', 'opinion', 'features',
             'local', 'world', 'lifestyle')


def _title_case(phrase: str) -> str:
  small = {'a', 'an', 'the', 'of', 'and', 'or', 'in', 'on', 'to', 'for', 'at', 'by', 'with'}
  words = phrase.split()
  return ' '.join(w if (i and w in small) else w[:1].upper() + w[1:] for i, w in enumerate(words))


def _slug(text: str, max_words: int = 8) -> str:
  words = re.findall(r'[a-z0-9]+', text.lower())[:max_words]
  return '-'.join(words) or 'page'


def _nav_line(rng: random.Random, items: tuple[str, ...] = _NAV_ITEMS) -> str:
  k = rng.randint(3, 7)
  return rng.choice(_NAV_SEPARATORS).join(['Home'] + rng.sample(items[1:], k - 1))


def _boilerplate_pool(rng: random.Random) -> tuple[list[str], list[str]]:
  """A few hundred boilerplate lines that site templates draw from: (nav lines, all)."""
  navs = list(dict.fromkeys(_nav_line(rng) for _ in range(120)))
  pool: dict[str, None] = dict.fromkeys(navs)
  for s in _HEADER_SINGLES + _SHARE + _ENGAGE + _FOOTER_LINKS:
    pool[s] = None
  for a in _COOKIE_FIRST:
    for b in _COOKIE_SECOND:
      pool[a + ' ' + b] = None
  for _ in range(40):
    pool[rng.choice((' | ', ' · ', '  ')).join(rng.sample(_FOOTER_LINKS, rng.randint(2, 5)))] = None
  return navs, list(pool)


@dataclasses.dataclass
class Site:
  """A web site: its pages share the header and footer boilerplate lines."""
  domain: str
  style: str  # blog, news, wiki, forum, shop, code, spam, or a language code for foreign sites
  header: list[str]
  footer: list[str]
  company: str
  topic: str = ''  # what a spam site sells


# ----------------------------------------------------------------------------------------
# Foreign-language text: template sentences (subject + predicate + time) give hundreds of
# natural variants per language, plus a few fixed sentences.
# ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Lang:
  name: str
  subjects: tuple[str, ...]
  predicates: tuple[Any, ...]  # str, or (verb, rest) for verb-second languages
  times: tuple[str, ...]
  extras: tuple[str, ...]
  nav: str
  copyright: str
  pattern: str  # '{s} {p} {t}.' etc.; {v} {r} for verb-second languages


_LANGS: dict[str, _Lang] = {
    'fr': _Lang('French',
                ('Mon voisin', 'La maire de la ville', 'Notre équipe', 'Le professeur de chimie',
                 'Ma grand-mère', 'Le petit garçon', 'Cette entreprise', 'Le chef du restaurant'),
                ('prépare un gâteau au chocolat', 'lit le journal au café',
                 "visite le musée d'art moderne", 'répare la vieille voiture',
                 'écrit une longue lettre à sa sœur', 'organise une fête dans le jardin',
                 'achète des légumes au marché', 'regarde un film en noir et blanc',
                 'apprend à jouer du piano', 'se promène le long de la rivière'),
                ('chaque dimanche', 'tous les matins', 'depuis trois ans', 'pendant les vacances',
                 'avant le dîner', 'le samedi après-midi', 'cette semaine', 'quand il pleut'),
                ("Le prix de l'électricité a encore augmenté cet hiver.",
                 "Il faut réserver une table à l'avance, car le restaurant est toujours complet.",
                 'Nous avons passé une excellente soirée avec nos amis.',
                 "Les travaux sur la ligne de métro dureront jusqu'au mois de juin.",
                 'Cette recette est simple et ne demande que quelques ingrédients.',
                 'Merci beaucoup pour votre aide et votre patience.',
                 'La bibliothèque municipale est fermée le lundi.',
                 "Les enfants jouent dans la cour de l'école."),
                'Accueil | Actualités | À propos | Contact',
                '© {year} Tous droits réservés. Mentions légales | Politique de confidentialité',
                '{s} {p} {t}.'),
    'de': _Lang('German',
                ('Mein Nachbar', 'Die Bürgermeisterin', 'Unser Team', 'Der Chemielehrer',
                 'Meine Großmutter', 'Der kleine Junge', 'Diese Firma', 'Der Koch des Restaurants'),
                (('backt', 'einen Schokoladenkuchen'), ('liest', 'die Zeitung im Café'),
                 ('besucht', 'das Museum für moderne Kunst'), ('repariert', 'das alte Auto'),
                 ('schreibt', 'einen langen Brief an die Familie'),
                 ('organisiert', 'ein Fest im Garten'), ('kauft', 'Gemüse auf dem Markt'),
                 ('sieht', 'einen alten Schwarzweißfilm'), ('lernt', 'Klavier spielen'),
                 ('wandert', 'am Fluss entlang')),
                ('jeden Sonntag', 'jeden Morgen', 'seit drei Jahren', 'in den Ferien',
                 'vor dem Abendessen', 'am Samstagnachmittag', 'diese Woche', 'bei Regen'),
                ('Der Strompreis ist in diesem Winter wieder gestiegen.',
                 'Man sollte im Voraus einen Tisch reservieren, weil das Restaurant immer ausgebucht ist.',
                 'Wir hatten einen wunderbaren Abend mit unseren Freunden.',
                 'Die Bauarbeiten an der U-Bahn-Linie dauern noch bis Juni.',
                 'Dieses Rezept ist einfach und braucht nur wenige Zutaten.',
                 'Vielen Dank für Ihre Hilfe und Ihre Geduld.',
                 'Die Stadtbibliothek ist montags geschlossen.',
                 'Die Kinder spielen auf dem Schulhof.'),
                'Startseite | Aktuelles | Über uns | Kontakt',
                '© {year} Alle Rechte vorbehalten. Impressum | Datenschutz',
                '{s} {v} {t} {r}.'),
    'es': _Lang('Spanish',
                ('Mi vecino', 'La alcaldesa', 'Nuestro equipo', 'El profesor de química',
                 'Mi abuela', 'El niño pequeño', 'Esta empresa', 'El cocinero del restaurante'),
                ('prepara un pastel de chocolate', 'lee el periódico en la cafetería',
                 'visita el museo de arte moderno', 'repara el coche viejo',
                 'escribe una carta larga a su hermana', 'organiza una fiesta en el jardín',
                 'compra verduras en el mercado', 've una película en blanco y negro',
                 'aprende a tocar el piano', 'pasea por la orilla del río'),
                ('todos los domingos', 'cada mañana', 'desde hace tres años',
                 'durante las vacaciones', 'antes de la cena', 'los sábados por la tarde',
                 'esta semana', 'cuando llueve'),
                ('El precio de la electricidad ha vuelto a subir este invierno.',
                 'Hay que reservar mesa con antelación porque el restaurante siempre está lleno.',
                 'Pasamos una noche estupenda con nuestros amigos.',
                 'Las obras de la línea de metro durarán hasta junio.',
                 'Esta receta es sencilla y solo necesita unos pocos ingredientes.',
                 'Muchas gracias por su ayuda y su paciencia.',
                 'La biblioteca municipal cierra los lunes.',
                 'Los niños juegan en el patio del colegio.'),
                'Inicio | Noticias | Quiénes somos | Contacto',
                '© {year} Todos los derechos reservados. Aviso legal | Política de privacidad',
                '{s} {p} {t}.'),
    'it': _Lang('Italian',
                ('Il mio vicino', 'La sindaca', 'La nostra squadra', 'Il professore di chimica',
                 'Mia nonna', 'Il bambino', 'Questa azienda', 'Il cuoco del ristorante'),
                ('prepara una torta al cioccolato', 'legge il giornale al bar',
                 'visita il museo di arte moderna', 'ripara la vecchia macchina',
                 'scrive una lunga lettera alla sorella', 'organizza una festa in giardino',
                 'compra la verdura al mercato', 'guarda un film in bianco e nero',
                 'impara a suonare il pianoforte', 'passeggia lungo il fiume'),
                ('ogni domenica', 'tutte le mattine', 'da tre anni', 'durante le vacanze',
                 'prima di cena', 'il sabato pomeriggio', 'questa settimana', 'quando piove'),
                ("Il prezzo dell'elettricità è aumentato di nuovo quest'inverno.",
                 'Bisogna prenotare un tavolo in anticipo perché il ristorante è sempre pieno.',
                 'Abbiamo passato una serata splendida con i nostri amici.',
                 'I lavori sulla linea della metropolitana dureranno fino a giugno.',
                 'Questa ricetta è semplice e richiede pochi ingredienti.',
                 'Grazie mille per il vostro aiuto e la vostra pazienza.',
                 'La biblioteca comunale è chiusa il lunedì.',
                 'I bambini giocano nel cortile della scuola.'),
                'Home | Notizie | Chi siamo | Contatti',
                '© {year} Tutti i diritti riservati. Note legali | Informativa sulla privacy',
                '{s} {p} {t}.'),
    'pt': _Lang('Portuguese',
                ('O meu vizinho', 'A presidente da câmara', 'A nossa equipa',
                 'O professor de química', 'A minha avó', 'O menino', 'Esta empresa',
                 'O cozinheiro do restaurante'),
                ('prepara um bolo de chocolate', 'lê o jornal no café',
                 'visita o museu de arte moderna', 'conserta o carro velho',
                 'escreve uma longa carta à irmã', 'organiza uma festa no jardim',
                 'compra legumes no mercado', 'vê um filme a preto e branco',
                 'aprende a tocar piano', 'passeia à beira do rio'),
                ('todos os domingos', 'todas as manhãs', 'há três anos', 'durante as férias',
                 'antes do jantar', 'aos sábados à tarde', 'esta semana', 'quando chove'),
                ('O preço da eletricidade voltou a subir este inverno.',
                 'É preciso reservar mesa com antecedência porque o restaurante está sempre cheio.',
                 'Passámos uma noite fantástica com os nossos amigos.',
                 'As obras na linha do metro vão durar até junho.',
                 'Esta receita é simples e leva poucos ingredientes.',
                 'Muito obrigado pela sua ajuda e paciência.',
                 'A biblioteca municipal fecha às segundas-feiras.',
                 'As crianças brincam no pátio da escola.'),
                'Início | Notícias | Sobre nós | Contacto',
                '© {year} Todos os direitos reservados. Política de privacidade',
                '{s} {p} {t}.'),
    'nl': _Lang('Dutch',
                ('Mijn buurman', 'De burgemeester', 'Ons team', 'De scheikundeleraar', 'Mijn oma',
                 'Het kleine jongetje', 'Dit bedrijf', 'De kok van het restaurant'),
                (('bakt', 'een chocoladetaart'), ('leest', 'de krant in het café'),
                 ('bezoekt', 'het museum voor moderne kunst'), ('repareert', 'de oude auto'),
                 ('schrijft', 'een lange brief aan de familie'),
                 ('organiseert', 'een feest in de tuin'), ('koopt', 'groenten op de markt'),
                 ('kijkt', 'naar een oude zwart-witfilm'), ('leert', 'piano spelen'),
                 ('wandelt', 'langs de rivier')),
                ('elke zondag', 'elke ochtend', 'al drie jaar', 'tijdens de vakantie',
                 'voor het avondeten', 'op zaterdagmiddag', 'deze week', 'bij regen'),
                ('De prijs van elektriciteit is deze winter opnieuw gestegen.',
                 'Je moet vooraf een tafel reserveren, want het restaurant zit altijd vol.',
                 'We hebben een heerlijke avond gehad met onze vrienden.',
                 'De werkzaamheden aan de metrolijn duren nog tot juni.',
                 'Dit recept is eenvoudig en vraagt maar een paar ingrediënten.',
                 'Hartelijk dank voor uw hulp en geduld.',
                 'De openbare bibliotheek is op maandag gesloten.',
                 'De kinderen spelen op het schoolplein.'),
                'Home | Nieuws | Over ons | Contact',
                '© {year} Alle rechten voorbehouden. Privacyverklaring | Disclaimer',
                '{s} {v} {t} {r}.'),
    'ru': _Lang('Russian',
                ('Мой сосед', 'Мэр города', 'Наша команда', 'Учитель химии', 'Моя бабушка',
                 'Маленький мальчик', 'Эта компания', 'Повар ресторана'),
                ('печёт шоколадный торт', 'читает газету в кафе',
                 'посещает музей современного искусства', 'чинит старую машину',
                 'пишет длинное письмо сестре', 'устраивает праздник в саду',
                 'покупает овощи на рынке', 'смотрит чёрно-белый фильм',
                 'учится играть на пианино', 'гуляет вдоль реки'),
                ('каждое воскресенье', 'каждое утро', 'уже три года', 'во время отпуска',
                 'перед ужином', 'по субботам', 'на этой неделе', 'когда идёт дождь'),
                ('Цены на электричество этой зимой снова выросли.',
                 'Столик нужно бронировать заранее, потому что в ресторане всегда много людей.',
                 'Мы прекрасно провели вечер с друзьями.',
                 'Ремонт линии метро продлится до июня.',
                 'Этот рецепт очень простой, и для него нужно всего несколько ингредиентов.',
                 'Большое спасибо за вашу помощь и терпение.',
                 'Городская библиотека по понедельникам не работает.',
                 'Дети играют во дворе школы.'),
                'Главная | Новости | О нас | Контакты',
                '© {year} Все права защищены. Политика конфиденциальности',
                '{s} {p} {t}.'),
    'zh': _Lang('Chinese',
                ('我的邻居', '市长', '我们的团队', '化学老师', '我的奶奶', '那个小男孩', '这家公司',
                 '餐厅的厨师'),
                ('做巧克力蛋糕', '在咖啡馆看报纸', '参观现代艺术博物馆', '修理那辆旧车',
                 '给妹妹写一封长信', '在花园里举办聚会', '去市场买蔬菜', '看一部黑白电影',
                 '学习弹钢琴', '沿着河边散步'),
                ('每个星期天', '每天早上', '三年来一直', '放假的时候', '晚饭前', '每个星期六下午',
                 '这个星期', '下雨的时候'),
                ('今年冬天电费又涨了。', '这家餐厅总是客满，所以最好提前订位。',
                 '我们和朋友们度过了一个愉快的晚上。', '地铁线路的施工将持续到六月。',
                 '这个食谱很简单，只需要几种材料。', '非常感谢您的帮助和耐心。', '市图书馆星期一闭馆。',
                 '孩子们在学校的操场上玩耍。'),
                '首页 | 新闻 | 关于我们 | 联系我们',
                '© {year} 版权所有 | 隐私政策',
                '{s}{t}{p}。'),
    'ar': _Lang('Arabic',
                ('جاري', 'رئيس البلدية', 'فريقنا', 'أستاذ الكيمياء', 'جدي', 'الولد الصغير',
                 'الطباخ في المطعم', 'صديقي'),
                ('يخبز كعكة الشوكولاتة', 'يقرأ الجريدة في المقهى', 'يزور متحف الفن الحديث',
                 'يصلح السيارة القديمة', 'يكتب رسالة طويلة إلى أخته', 'ينظم حفلة في الحديقة',
                 'يشتري الخضار من السوق', 'يشاهد فيلما بالأبيض والأسود',
                 'يتعلم العزف على البيانو', 'يتمشى على ضفة النهر'),
                ('كل يوم أحد', 'كل صباح', 'منذ ثلاث سنوات', 'خلال العطلة', 'قبل العشاء',
                 'يوم السبت بعد الظهر', 'هذا الأسبوع', 'عندما تمطر'),
                ('ارتفعت أسعار الكهرباء مرة أخرى هذا الشتاء.',
                 'يجب حجز طاولة مسبقا لأن المطعم ممتلئ دائما.',
                 'قضينا أمسية رائعة مع أصدقائنا.',
                 'ستستمر أعمال الصيانة في خط المترو حتى شهر يونيو.',
                 'هذه الوصفة بسيطة ولا تحتاج إلا إلى بعض المكونات.',
                 'شكرا جزيلا على مساعدتكم وصبركم.',
                 'المكتبة العامة مغلقة يوم الاثنين.',
                 'يلعب الأطفال في ساحة المدرسة.'),
                'الرئيسية | الأخبار | من نحن | اتصل بنا',
                '© {year} جميع الحقوق محفوظة.',
                '{s} {p} {t}.'),
    'ja': _Lang('Japanese',
                ('私の隣人', '市長', '私たちのチーム', '化学の先生', '私の祖母', 'その男の子', 'この会社',
                 'レストランのシェフ'),
                ('チョコレートケーキを作ります', 'カフェで新聞を読みます', '現代美術館を訪れます',
                 '古い車を修理します', '妹に長い手紙を書きます', '庭でパーティーを開きます',
                 '市場で野菜を買います', '白黒映画を見ます', 'ピアノを習っています', '川沿いを散歩します'),
                ('毎週日曜日に', '毎朝', '三年前から', '休みの間に', '夕食の前に', '土曜日の午後に',
                 '今週', '雨の日に'),
                ('今年の冬も電気代が上がりました。', 'このレストランはいつも満席なので、予約したほうがいいです。',
                 '友達と楽しい夜を過ごしました。', '地下鉄の工事は六月まで続きます。',
                 'このレシピは簡単で、材料も少ししか必要ありません。', 'ご協力とご理解をありがとうございます。',
                 '市立図書館は月曜日が休館日です。', '子どもたちは校庭で遊んでいます。'),
                'ホーム | ニュース | 会社概要 | お問い合わせ',
                '© {year} All Rights Reserved. プライバシーポリシー',
                '{s}は{t}{p}。'),
}
_LANG_WEIGHTS = (('fr', 15), ('de', 15), ('es', 15), ('it', 10), ('pt', 10), ('nl', 10),
                 ('ru', 8), ('zh', 7), ('ar', 5), ('ja', 5))
_LANG_TLDS = {'fr': '.fr', 'de': '.de', 'es': '.es', 'it': '.it', 'pt': '.pt', 'nl': '.nl',
              'ru': '.ru', 'zh': '.cn', 'ar': '.ae', 'ja': '.jp'}


def _foreign_sentence(rng: random.Random, lang: _Lang) -> str:
  if rng.random() < 0.1:
    return rng.choice(lang.extras)
  p = rng.choice(lang.predicates)
  if isinstance(p, tuple):
    return lang.pattern.format(s=rng.choice(lang.subjects), v=p[0], t=rng.choice(lang.times), r=p[1])
  return lang.pattern.format(s=rng.choice(lang.subjects), p=p, t=rng.choice(lang.times))


# ----------------------------------------------------------------------------------------
# PII and look-alikes
# ----------------------------------------------------------------------------------------

_FIRST = ('jane', 'john', 'maria', 'wei', 'aisha', 'oliver', 'sofia', 'liam', 'priya', 'lucas',
          'emma', 'kenji', 'fatima', 'noah', 'chloe', 'mateo', 'hannah', 'yusuf', 'olga', 'ravi',
          'ana', 'tom', 'lena', 'omar', 'grace', 'diego', 'mei', 'samuel', 'zara', 'ivan')
_LAST = ('doe', 'smith', 'garcia', 'chen', 'khan', 'brown', 'rossi', 'murphy', 'patel', 'martin',
         'wilson', 'tanaka', 'ali', 'johnson', 'dubois', 'silva', 'becker', 'demir', 'ivanova',
         'kumar', 'lopez', 'nguyen', 'schmidt', 'okafor', 'kowalski', 'haddad', 'jensen', 'park')
_MAIL_DOMAINS = ('example.com', 'example.org', 'example.net', 'mail.example.com',
                 'inbox.example.org', 'post.example.net', 'example.co.uk', 'example.de',
                 'university.example.edu', 'company.example')


def _email(rng: random.Random, first: str, last: str) -> str:
  user = rng.choice((f'{first}.{last}', f'{first[0]}{last}', f'{first}{rng.randint(1, 99)}',
                     f'{first}_{last}', f'{last}.{first}', 'info', 'support', 'sales', 'press',
                     f'{first}+news'))
  return f'{user}@{rng.choice(_MAIL_DOMAINS)}'


def _phone(rng: random.Random) -> str:
  r = rng.random
  area = rng.randint(201, 989)
  line = f'01{rng.randint(0, 99):02d}'  # 555-0100..0199 is reserved for fiction
  if r() < 0.55:
    return rng.choice((f'({area}) 555-{line}', f'{area}-555-{line}', f'{area}.555.{line}',
                       f'+1 {area} 555 {line}', f'+1-{area}-555-{line}', f'1-800-555-{line}'))
  d = lambda n: ''.join(str(rng.randint(0, 9)) for _ in range(n))
  return rng.choice((f'+44 20 7946 0{d(3)}', f'020 7946 0{d(3)}', f'+44 7700 900{d(3)}',
                     f'+33 1 {d(2)} {d(2)} {d(2)} {d(2)}', f'+49 30 {d(7)}',
                     f'+49 (0)89 {d(6)}', f'+91 98{d(3)} {d(5)}', f'+61 2 {d(4)} {d(4)}',
                     f'+81 3-{d(4)}-{d(4)}', f'+55 11 9{d(4)}-{d(4)}', f'+34 91 {d(3)} {d(2)} {d(2)}'))


def _ipv4(rng: random.Random) -> str:
  r = rng.randint
  return rng.choice((f'192.0.2.{r(1, 254)}', f'198.51.100.{r(1, 254)}', f'203.0.113.{r(1, 254)}',
                     f'10.{r(0, 255)}.{r(0, 255)}.{r(1, 254)}', f'192.168.{r(0, 255)}.{r(1, 254)}',
                     f'{r(11, 223)}.{r(0, 255)}.{r(0, 255)}.{r(1, 254)}'))


def _ipv6(rng: random.Random) -> str:
  h = lambda: f'{rng.randint(0, 0xffff):x}'
  return rng.choice((f'2001:db8:{h()}:{h()}::{h()}', f'2001:db8::{h()}',
                     f'2001:0db8:85a3:0000:0000:8a2e:0370:{rng.randint(0, 0xffff):04x}',
                     f'fe80::{h()}:{h()}:{h()}:{h()}'))


_PII_TEMPLATES = (
    'Contact me at {email} if you have any questions.',
    'For press inquiries, email {name} at {email} or call {phone}.',
    'You can reach our office at {phone} (Monday to Friday, 9am to 5pm).',
    'Call {phone} to book a table for the screening.',
    'If the problem persists, send the logs to {email}.',
    'The server at {ip} stopped responding at around midnight.',
    'My IP address is {ip}, but the site still blocks me.',
    'Connections from {ip6} were rejected by the firewall.',
    'Send your CV and a short cover letter to {email}.',
    'Questions? Write to {email} or phone {phone}.',
    'Tel: {phone} | Fax: {phone2}',
    'Our London office can be reached on +44 20 7946 0{d3}.',
    '{Name} ({email}) wrote:',
    'Ping {ip} to check whether the router is up.',
    'Reply to this post or message me directly at {email}.',
    'Tickets are available by phone at {phone} or by e-mail at {email}.',
    'The admin panel is only reachable from {ip} and {ip2}.',
    'I finally got through to customer service on {phone} after an hour on hold.',
    'Thanks to {Name} for the tip! You can follow her work or email {email}.',
    'Our new mail server listens on {ip6} as well as {ip}.',
)
_LOOKALIKE_TEMPLATES = (
    'Version {v} fixes a crash on startup; {v2} is planned for next month.',
    'The screening was moved to {iso}.',
    'Tickets cost ${price} (or £{price2} in the UK).',
    'ISBN {isbn}',
    'The theatre was built in {year} and renovated in {year2}.',
    'Order #{order} has shipped and should arrive within 3-5 business days.',
    'The film grossed ${big} in its opening weekend.',
    'Updated on {iso} at 14:{mm} UTC.',
    'Requires Windows build 10.0.{build}.{small} or later.',
    'Runtime: 1 h {mm} min. Rated {rating}/10 by {votes} users.',
    'Part no. {part} fits models from {year} to {year2}.',
    'Coordinates: 51.{c1}, -0.{c2}',
    'Room {room}, 2nd floor, open {hh}:00-{hh2}:30.',
    'Save {pct}% today: was ${price2}, now ${price}.',
)


def _fill_lookalike(rng: random.Random, template: str) -> str:
  r = rng.randint
  year = r(1950, 2015)
  return template.format(
      v=f'{r(0, 9)}.{r(0, 20)}.{r(0, 30)}', v2=f'{r(1, 9)}.{r(0, 9)}', price=f'{r(1, 99)}.{r(0, 99):02d}',
      price2=f'{r(100, 199)}.{r(0, 99):02d}',
      iso=f'{r(2005, 2024)}-{r(1, 12):02d}-{r(1, 28):02d}',
      isbn=rng.choice((f'978-{r(0, 1)}-{r(100, 999)}-{r(10000, 99999)}-{r(0, 9)}',
                       f'0-{r(100, 999)}-{r(10000, 99999)}-{r(0, 9)}')),
      year=year, year2=year + r(5, 40), order=r(100000, 9999999),
      big=f'{r(1, 250)},{r(0, 999):03d},{r(0, 999):03d}',
      mm=f'{r(0, 59):02d}', build=r(10240, 22631), small=r(1, 3000), rating=f'{r(1, 9)}.{r(0, 9)}',
      votes=f'{r(1, 99)},{r(0, 999):03d}', part=f'{r(1000, 9999)}-{r(100, 999)}', c1=r(1000, 9999),
      c2=r(1000, 9999), room=f'{r(1, 4)}.{r(1, 40):02d}', hh=r(7, 10), hh2=r(16, 20), pct=r(10, 70))


# ----------------------------------------------------------------------------------------
# Code, lists, spam, lorem, short pages
# ----------------------------------------------------------------------------------------

_PY_SNIPPETS = (
    'def {fn}({a}, {b}={n}):\n    # {comment}\n    result = []\n    for {i} in range({b}):\n'
    '        if {i} % {m} == 0:\n            result.append({a} * {i})\n    return result\n\n\n'
    'print({fn}({n2}))',
    'import json\n\nwith open("{file}.json") as f:\n    {v} = json.load(f)\n\n'
    '# {comment}\nfor key, value in sorted({v}.items()):\n    print(f"{{key}}: {{value}}")',
    'class {Cls}:\n    """{comment}."""\n\n    def __init__(self, {a}):\n        self.{a} = {a}\n'
    '        self.count = 0\n\n    def {fn}(self):\n        self.count += 1\n        return self.{a} * {m}',
    '{v} = [{n}, {n2}, {m}, {n}]\n{v} = list(dict.fromkeys({v}))  # {comment}\nprint({v})',
    'with open("{file}.txt", encoding="utf-8") as f:\n    for line in f:\n'
    '        line = line.strip()\n        if not line or line.startswith("#"):\n'
    '            continue\n        print(line.split(","))',
)
_JS_SNIPPETS = (
    "function {fnc}({a}) {{\n  const {v} = document.getElementById('{id}');\n  // {comment}\n"
    "  {v}.addEventListener('click', () => {{\n    console.log({a});\n  }});\n}}",
    'const {v} = items.filter(x => x.{a} > {n}).map(x => x.{b});\n'
    'console.log({v}.length); // {comment}',
    "fetch('/api/{file}?page={m}')\n  .then(res => res.json())\n  .then(data => {{\n"
    '    {v} = data.results;\n    render({v});\n  }})\n  .catch(err => console.error(err));',
    'let timer;\nfunction {fnc}(fn, ms = {n}) {{\n  /* {comment} */\n  clearTimeout(timer);\n'
    '  timer = setTimeout(fn, ms);\n}}',
    'for (let {i} = 0; {i} < {n}; {i}++) {{\n  if ({i} % {m} === 0) {{ continue; }}\n'
    '  total += {i};\n}}',
)
_HTML_SNIPPETS = (
    '<div class="{cls}">\n  <h1>{title}</h1>\n  <p>{text}</p>\n  <a href="/{file}.html">Read more</a>\n</div>',
    '<ul id="{id}">\n  <li><a href="#">Home</a></li>\n  <li><a href="#{file}">{title}</a></li>\n</ul>',
    '<form action="/{file}" method="post">\n  <label for="{id}">Name</label>\n'
    '  <input type="text" id="{id}" name="{a}">\n  <button type="submit">Send</button>\n</form>',
)
_CSS_SNIPPETS = (
    '.{cls} {{\n  margin: {n}px auto;\n  color: #{hex};\n  display: flex;\n  justify-content: center;\n}}',
    '#{id}:hover {{\n  background-color: #{hex};\n  transition: all 0.{m}s ease-in-out;\n}}\n'
    '/* {comment} */',
    '@media (max-width: {n2}px) {{\n  .{cls} {{ font-size: {m}px; padding: 0; }}\n}}',
)
_CODE_LANGS = (('Python', _PY_SNIPPETS), ('JavaScript', _JS_SNIPPETS), ('HTML', _HTML_SNIPPETS),
               ('CSS', _CSS_SNIPPETS))
_CODE_TASKS = ('read a file line by line', 'sort a list of dictionaries by a key',
               'center a div horizontally', 'remove duplicates from an array',
               'parse a JSON response', 'format a date as a string', 'debounce a click handler',
               'merge two dictionaries', 'change the background color on hover',
               'count the words in a string', 'skip comment lines when parsing a config file',
               'make a navigation bar responsive')
_CODE_NAMES = ('items', 'data', 'config', 'total', 'values', 'users', 'rows', 'cache', 'result',
               'buffer', 'records', 'scores', 'names', 'queue', 'payload')
_CODE_COMMENTS = ('TODO: handle the empty case', 'keep the original order', 'this is the slow part',
                  'see the docs for details', 'fixed in the latest version', 'works for me',
                  'avoid a second pass over the list', 'default value if missing')


def _fill_code(rng: random.Random, template: str, title: str) -> str:
  a, b, v = rng.sample(_CODE_NAMES, 3)
  verb = rng.choice(('process', 'load', 'parse', 'compute', 'handle', 'update', 'render'))
  fn = verb + '_' + rng.choice(_CODE_NAMES)
  fnc = re.sub(r'_(\w)', lambda m: m.group(1).upper(), fn)
  return template.format(
      fn=fn, fnc=fnc, a=a, b=b, v=v, i=rng.choice('ijk'), n=rng.randint(2, 50), n2=rng.randint(100, 1200),
      m=rng.randint(2, 9), comment=rng.choice(_CODE_COMMENTS), file=rng.choice(_CODE_NAMES),
      Cls=fn.split('_')[1].capitalize() + rng.choice(('Manager', 'Store', 'Parser', 'Counter')),
      id=rng.choice(_CODE_NAMES) + '-' + rng.choice(('btn', 'list', 'form', 'nav')),
      cls=rng.choice(('container', 'card', 'header', 'menu', 'wrapper', 'hero', 'footer')),
      hex=f'{rng.randint(0, 0xffffff):06x}', title=title, text=title + ' and more.')


_SPAM_PRODUCTS = ('shoes', 'watches', 'sunglasses', 'handbags', 'phone cases', 'vitamins',
                  'essay writing', 'web hosting', 'car insurance', 'payday loans', 'sneakers',
                  'jerseys', 'perfume', 'headphones', 'weight loss pills', 'followers', 'VPN')
_SPAM_ADJ = ('cheap', 'best', 'discount', 'top', 'free', 'original', 'wholesale', 'genuine',
             'luxury', 'official', 'fast', 'online')
_LOREM = ('lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor '
          'incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud '
          'exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure in '
          'reprehenderit voluptate velit esse cillum fugiat nulla pariatur excepteur sint '
          'occaecat cupidatat non proident sunt culpa qui officia deserunt mollit anim id est '
          'laborum').split()
_SHORT_PAGES = (
    ('404 Not Found', 'The requested URL {path} was not found on this server.'),
    ('Page not found', 'Sorry, the page you are looking for does not exist or has been moved.'),
    ('Coming soon', 'We are working on something awesome. Stay tuned!'),
    ('Log in', 'Username\nPassword\nRemember me\nForgot your password?'),
    ('Access denied', 'You do not have permission to view this page.'),
    ('This domain is for sale!', 'Contact us for details and pricing.'),
    ('Redirecting...', 'If you are not redirected automatically, follow this link.'),
    ('Under construction', 'Please check back later.'),
    ('Subscribe', 'Get the latest reviews delivered to your inbox every week.'),
    ('Thank you!', 'Your message has been sent. We will get back to you soon.'),
    ('Search results', 'No results found. Try different keywords.'),
    ('503 Service Unavailable', 'The server is temporarily unable to service your request.'),
)


# ----------------------------------------------------------------------------------------
# The generator
# ----------------------------------------------------------------------------------------

class _Generator:
  """One deterministic stream of documents; all randomness comes from ``self.rng``."""

  def __init__(self, seed: int, sources: Sources):
    self.rng = random.Random(seed)
    self.src = sources
    self.nav_lines, self.boilerplate = _boilerplate_pool(random.Random(seed * 7919 + 1))
    self.boilerplate_set = frozenset(self.boilerplate)
    self.sites = self._make_sites(random.Random(seed * 7919 + 2))
    self.reservoir: list[tuple[str, str]] = []  # (text, url) of earlier documents
    self.seen = 0  # documents offered to the reservoir
    self.url_keys: set[bytes] = set()  # 8-byte digests of the URLs handed out so far
    self.kinds = [k for k, _ in KIND_WEIGHTS]
    self.cum = [c / 100.0 for c in itertools.accumulate(w for _, w in KIND_WEIGHTS)]
    self.langs = [k for k, _ in _LANG_WEIGHTS]
    self.lang_cum = list(itertools.accumulate(w for _, w in _LANG_WEIGHTS))

  # ---- sites ----

  def _make_sites(self, rng: random.Random) -> dict[str, list[Site]]:
    """Site pools per style; index 0 of each pool is its most visited site (Zipf)."""
    used: set[str] = set()

    def domain(a: tuple[str, ...], b: tuple[str, ...], tlds: tuple[str, ...]) -> str:
      while True:
        d = rng.choice(a) + rng.choice(('', '', '-')) + rng.choice(b)
        d += (str(rng.randint(1, 99)) if rng.random() < 0.15 else '') + rng.choice(tlds)
        if d not in used:
          used.add(d)
          return d

    def company() -> str:
      return rng.choice(_COMPANY_WORDS) + ' ' + rng.choice(_COMPANY_SUFFIX)

    def english(style: str) -> Site:
      header = []
      if rng.random() < 0.5:
        header.append(rng.choice(('Skip to content', 'Skip to main content', 'Jump to navigation')))
      if rng.random() < 0.85:
        header.append(rng.choice(self.nav_lines))
      if rng.random() < 0.4:
        header.append(rng.choice(_HEADER_SINGLES))
      footer = [rng.choice(self.boilerplate) for _ in range(rng.randint(0, 3))]
      if rng.random() < 0.5:
        footer.append(rng.choice(_COOKIE_FIRST) + ' ' + rng.choice(_COOKIE_SECOND))
      if rng.random() < 0.6:
        footer.append(' | '.join(rng.sample(_FOOTER_LINKS, rng.randint(2, 5))))
      c = company()
      year = rng.randint(2009, 2023)
      if rng.random() < 0.8:
        footer.append(rng.choice((f'Copyright © {year} {c}. All rights reserved.', f'© {year} {c}',
                                  f'All content © {year - rng.randint(1, 8)}-{year} {c}',
                                  f'© {c} {year}. All Rights Reserved.')))
      d = domain(_DOMAIN_A, _DOMAIN_B, _TLDS)
      return Site(d, style, header, list(dict.fromkeys(footer)), c)

    sites: dict[str, list[Site]] = {}
    styles = ('blog',) * 5 + ('news',) * 3 + ('wiki',) + ('forum',) * 2
    sites['general'] = [english(rng.choice(styles)) for _ in range(2500)]
    sites['shop'] = [english('shop') for _ in range(300)]
    sites['code'] = [english('code') for _ in range(150)]
    sites['spam'] = []
    for _ in range(400):
      s = english('spam')
      s.topic = rng.choice(_SPAM_PRODUCTS)
      while True:
        d = (f'{rng.choice(_SPAM_ADJ)}-{s.topic.replace(" ", "-").lower()}'
             f'{rng.choice(("", "-outlet", "-store", "-shop", "-online", "-deals", str(rng.randint(1, 999))))}'
             f'{rng.choice((".biz", ".top", ".xyz", ".info", ".online", ".shop", ".com"))}')
        if d not in used:
          used.add(d)
          s.domain = d
          break
      sites['spam'].append(s)
    for code, lang in _LANGS.items():
      pool = []
      for _ in range(120):
        s = english(code)
        s.domain = domain(_DOMAIN_A, _DOMAIN_B, (_LANG_TLDS[code],))
        year = rng.randint(2009, 2023)
        s.header = [lang.nav] if rng.random() < 0.7 else []
        s.footer = [lang.copyright.format(year=year)] if rng.random() < 0.7 else []
        pool.append(s)
      sites['foreign:' + code] = pool
    return sites

  def _site(self, pool: str) -> Site:
    sites = self.sites[pool]
    # Zipf-like: a few sites hold many pages (their boilerplate repeats across documents).
    return sites[int(len(sites) * self.rng.random() ** 2.5)]

  def _date(self) -> tuple[int, int, int]:
    r = self.rng.randint
    return r(2008, 2024), r(1, 12), r(1, 28)

  def _url(self, site: Site, title: str, kind: str) -> str:
    rng = self.rng
    y, m, d = self._date()
    slug, n = _slug(title), rng.randint(10_000, 9_999_999)
    style = site.style
    if kind == 'short':
      path = rng.choice((f'p/{n}', f'login?next=%2F{slug}', f'{slug}-{n}', f'404?from={n}',
                         f'index.php?page_id={n}'))
    elif kind == 'shakespeare':
      path = f'shakespeare/{slug}-{n}.html'
    elif style == 'blog':
      path = f'{y}/{m:02d}/{d:02d}/{slug}-{n % 1000}/'
    elif style == 'news':
      path = f'{rng.choice(_SECTIONS)}/{slug}-{n}'
    elif style == 'wiki':
      path = 'wiki/' + '_'.join(w.capitalize() for w in slug.split('-')) + f'_{n % 10000}'
    elif style == 'forum':
      path = rng.choice((f't/{slug}/{n}', f'threads/{slug}.{n}/', f'r/movies/comments/{n:x}/{slug}/'))
    elif style == 'code':
      path = rng.choice((f'questions/{n}/{slug}', f'blog/{slug}-{n}', f'docs/{slug}.html#{n}'))
    elif style in ('shop', 'spam'):
      path = rng.choice((f'products/{slug}-{n}', f'{slug}-{n}.html', f'item.php?id={n}',
                         f'tag/{slug}/page/{n % 50}'))
    else:  # foreign
      path = rng.choice((f'article/{n}', f'{y}/{m:02d}/{n}.html', f'news/{n}'))
    return f'https://{site.domain}/{path}'

  # ---- text building blocks ----

  def _words_target(self, median: float, sigma: float, low: int = 15) -> int:
    return max(low, min(MAX_WORDS, int(self.rng.lognormvariate(math.log(median), sigma))))

  def _title(self) -> str:
    return _title_case(self.rng.choice(self.src.phrases))

  def _paragraphs(self, n_words: int, identity_share: float = 0.0, cite: bool = False) -> list[str]:
    """Lines of 2-6 real sentences until ``n_words`` words."""
    rng, src = self.rng, self.src
    sents, counts, ident = src.sentences, src.sentence_words, src.identity
    n_sents, n_ident = len(sents), len(ident)
    rnd = rng.random
    lines, total, note = [], 0, 0
    while total < n_words:
      k = 2 + int(rnd() * 5)
      para = []
      for _ in range(k):
        if identity_share and rnd() < identity_share:
          s = ident[int(rnd() * n_ident)]
          total += s.count(' ') + 1
        else:
          j = int(rnd() * n_sents)
          s = sents[j]
          total += counts[j]
        if cite and rnd() < 0.12:
          note += 1
          s += '[citation needed]' if rnd() < 0.15 else f'[{note}]'
        para.append(s)
      lines.append(' '.join(para))
      if rnd() < 0.08 and total < n_words:
        head = self._title()
        lines.append(head + '[edit]' if cite else head)
    return lines

  def _wrap(self, site: Site, title: str, body: list[str], byline: bool = True) -> str:
    """Puts site boilerplate, title and byline around the body lines."""
    rng = self.rng
    lines = list(site.header) if rng.random() < 0.8 else []
    lines.append(title)
    if byline and rng.random() < 0.5:
      y, m, d = self._date()
      author = rng.choice(_AUTHORS)
      lines.append(rng.choice((f'Posted by {author} on {MONTHS[m - 1]} {d}, {y}',
                               f'By {author} | {MONTHS[m - 1]} {d}, {y}',
                               f'Published {MONTHS[m - 1]} {d}, {y}', f'Last updated: {y}-{m:02d}-{d:02d}',
                               f'{MONTHS[m - 1]} {d}, {y} by {author}')))
    lines.extend(body)
    if rng.random() < 0.8:
      lines.extend(site.footer)
    return '\n'.join(lines)

  # ---- kinds ----

  def article(self) -> tuple[str, str]:
    rng = self.rng
    site = self._site('general')
    title = self._title()
    body = self._paragraphs(self._words_target(330, 0.75), cite=site.style == 'wiki')
    if rng.random() < 0.10:
      body.insert(rng.randint(0, len(body)), _fill_lookalike(rng, rng.choice(_LOOKALIKE_TEMPLATES)))
    if rng.random() < 0.03:
      code = self._lang()
      lang = _LANGS[code]
      body.insert(rng.randint(0, len(body)),
                  f'A reader wrote to us in {lang.name}: "{_foreign_sentence(rng, lang)}"')
    if rng.random() < 0.3:
      body.append(rng.choice(_SHARE))
    return self._wrap(site, title, body), self._url(site, title, 'article')

  def pii(self) -> tuple[str, str]:
    rng = self.rng
    site = self._site('general')
    title = self._title()
    body = self._paragraphs(self._words_target(250, 0.7))
    for _ in range(rng.randint(1, 6)):
      first, last = rng.choice(_FIRST), rng.choice(_LAST)
      s = rng.choice(_PII_TEMPLATES).format(
          email=_email(rng, first, last), name=first.capitalize(),
          Name=f'{first.capitalize()} {last.capitalize()}',
          phone=_phone(rng), phone2=_phone(rng), ip=_ipv4(rng), ip2=_ipv4(rng), ip6=_ipv6(rng),
          d3=f'{rng.randint(0, 999):03d}')
      i = rng.randint(0, len(body))
      if i < len(body) and rng.random() < 0.5:
        body[i] = body[i] + ' ' + s  # inside a paragraph, not only on a line of its own
      else:
        body.insert(i, s)
    if rng.random() < 0.5:
      for _ in range(rng.randint(1, 3)):
        body.insert(rng.randint(0, len(body)), _fill_lookalike(rng, rng.choice(_LOOKALIKE_TEMPLATES)))
    if rng.random() < 0.4:
      first, last = rng.choice(_FIRST), rng.choice(_LAST)
      body.append(f'Contact: {_email(rng, first, last)} | Tel: {_phone(rng)}')
    return self._wrap(site, title, body), self._url(site, title, 'pii')

  def identity(self) -> tuple[str, str]:
    site = self._site('general')
    title = self._title()
    body = self._paragraphs(self._words_target(300, 0.6), identity_share=0.5)
    return self._wrap(site, title, body), self._url(site, title, 'identity')

  def code(self) -> tuple[str, str]:
    rng = self.rng
    site = self._site('code')
    lang_name, snippets = rng.choice(_CODE_LANGS)
    task = rng.choice(_CODE_TASKS)
    title = rng.choice((f'How do I {task} in {lang_name}?', f'{lang_name}: {task}',
                        f'How to {task} ({lang_name} tutorial)', f'Why does my code fail to {task}?'))
    body = []
    if rng.random() < 0.7:
      body.append(rng.choice((f"I'm trying to {task} but it doesn't work.", f'I need to {task}.',
                              f'What is the cleanest way to {task}?')) + ' ' +
                  rng.choice(('Here is what I tried so far:', 'I have the following code:', 'My code:')))
    for _ in range(rng.randint(1, 4)):
      body.append(_fill_code(rng, rng.choice(snippets), self._title()))
      if rng.random() < 0.6:
        body.append(rng.choice(('You can use the following snippet instead:', 'Try this:',
                                'This works because the loop stops as soon as the condition is false.',
                                'Note that this only works in newer versions.', 'Hope this helps!',
                                f'EDIT: I am using {lang_name} on Ubuntu 22.04.',
                                'Any help would be appreciated, thanks!',
                                'It throws an error on the second line.')))
    if rng.random() < 0.3:
      body.extend(self._paragraphs(self._words_target(60, 0.5)))
    return self._wrap(site, title, body), self._url(site, title, 'code')

  def lorem(self) -> tuple[str, str]:
    rng = self.rng
    site = self._site('general')
    if rng.random() < 0.2:
      title = rng.choice(('Hello world!', 'Sample Page'))
      body = ['Welcome to WordPress. This is your first post. Edit or delete it, then start writing!']
    else:
      title = 'Lorem Ipsum'
      body = []
    n, words = self._words_target(200, 0.7), 0
    first = True
    while words < n:
      sents = []
      for _ in range(rng.randint(3, 7)):
        w = [rng.choice(_LOREM) for _ in range(rng.randint(6, 15))]
        if rng.random() < 0.3:
          w[rng.randrange(len(w) - 1)] += ','
        sents.append(' '.join(w).capitalize() + '.')
        words += len(w)
      if first:
        sents[0] = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit.'
        first = False
      body.append(' '.join(sents))
    return self._wrap(site, title, body, byline=False), self._url(site, title, 'lorem')

  def _lang(self) -> str:
    x = self.rng.random() * self.lang_cum[-1]
    for code, c in zip(self.langs, self.lang_cum):
      if x < c:
        return code
    return self.langs[-1]

  def foreign(self) -> tuple[str, str]:
    rng = self.rng
    code = self._lang()
    lang = _LANGS[code]
    site = self._site('foreign:' + code)
    title = _foreign_sentence(rng, lang).rstrip('.。')
    n = self._words_target(10, 0.7, low=2)  # sentences
    body = []
    while n > 0:
      k = rng.randint(1, 5)
      body.append(' '.join(_foreign_sentence(rng, lang) for _ in range(k)).replace('。 ', '。'))
      n -= k
    return self._wrap(site, title, body, byline=False), self._url(site, title, 'foreign')

  def short(self) -> tuple[str, str]:
    rng = self.rng
    site = self._site('general')
    if rng.random() < 0.5:
      title, text = rng.choice(_SHORT_PAGES)
      text = text.replace('{path}', '/' + _slug(self._title()))
    else:
      title = self._title()
      text = rng.choice(self.src.sentences)
    words = text.split(' ')
    limit = rng.randint(5, 40)
    text = ' '.join(words[:limit])
    lines = [title, text]
    if rng.random() < 0.3:
      lines.insert(0, site.header[-1] if site.header else 'Menu')
    doc = '\n'.join(lines)
    words = doc.split()
    if len(words) > 40:  # a long nav line or title: keep the page short
      doc = ' '.join(words[:40])
    return doc, self._url(site, title, 'short')

  def spam(self) -> tuple[str, str]:
    rng = self.rng
    site = self._site('spam')
    product = site.topic if rng.random() < 0.8 else rng.choice(_SPAM_PRODUCTS)
    adj = lambda: rng.choice(_SPAM_ADJ)
    title = f'Buy {adj().capitalize()} {product.title()} Online'
    lines = []
    target = self._words_target(300, 0.8, low=40)
    repeated = rng.choice((f'Buy cheap {product} online - best price {product} - free shipping!',
                           f'{adj()} {product} {adj()} {product} {adj()} {product}',
                           f'Best {product} 2024 - click here - {adj()} {product} sale',
                           f'Order {product} now!!! Limited offer!!!'))
    words = 0
    while words < target:
      r = rng.random()
      if r < 0.45:
        line = repeated
      elif r < 0.75:
        line = ' '.join(f'{adj()} {product}' for _ in range(rng.randint(5, 25)))
      elif r < 0.9:
        tags = [product.replace(' ', '')] + [a + product.replace(' ', '') for a in rng.sample(_SPAM_ADJ, 5)]
        line = ' '.join('#' + t for t in tags + ['sale', 'deal', 'shopping', 'instagood'])
      else:
        line = f'Click here >>> https://{site.domain}/{_slug(product)}-{rng.randint(1, 999)}'
      lines.append(line)
      words += line.count(' ') + 1
    while lines.count(repeated) < 3:  # the signature of SEO spam: one line over and over
      lines.insert(rng.randint(0, len(lines)), repeated)
    return self._wrap(site, title, lines, byline=False), self._url(site, title, 'spam')

  def listing(self) -> tuple[str, str]:
    rng = self.rng
    site = self._site('shop' if rng.random() < 0.5 else 'general')
    title = self._title()
    body: list[str] = []
    for _ in range(rng.randint(1, 3)):
      form = rng.randrange(4)
      if form == 0:
        bullet = rng.choice(('• ', '- ', '* ', '» ', ''))
        numbered = rng.random() < 0.2
        for i in range(rng.randint(4, 30)):
          item = _title_case(rng.choice(self.src.phrases))
          body.append(f'{i + 1}. {item}' if numbered else bullet + item)
      elif form == 1:
        sep = rng.choice((' | ', '\t', ', '))
        body.append(sep.join(('Model', 'Price', 'Weight (kg)', 'Rating', 'Stock')))
        for i in range(rng.randint(3, 25)):
          body.append(sep.join((f'{rng.choice("ABCXZ")}{rng.randint(100, 999)}',
                                f'${rng.randint(5, 900)}.{rng.randint(0, 99):02d}',
                                f'{rng.uniform(0.1, 30):.1f}', f'{rng.uniform(1, 5):.1f}',
                                str(rng.randint(0, 500)))))
      elif form == 2:
        specs = (('Brand', rng.choice(_COMPANY_WORDS)), ('Model', f'{rng.choice("XYZ")}-{rng.randint(10, 999)}'),
                 ('Weight', f'{rng.uniform(0.1, 9):.2f} kg'),
                 ('Dimensions', f'{rng.randint(5, 80)} x {rng.randint(5, 80)} x {rng.randint(1, 30)} cm'),
                 ('Color', rng.choice(('Black', 'White', 'Silver', 'Blue', 'Red'))),
                 ('Battery', f'{rng.randint(1000, 6000)} mAh'), ('Warranty', f'{rng.randint(1, 5)} years'),
                 ('Price', f'${rng.randint(10, 2000)}.99'),
                 ('Firmware', f'v{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}'))
        body.extend(f'{k}: {v}' for k, v in rng.sample(specs, rng.randint(4, len(specs))))
      else:
        for _ in range(rng.randint(3, 15)):
          s = rng.choice(self.src.sentences)
          cut = ' '.join(s.split()[:rng.randint(5, 12)]).rstrip('.,;:')
          body.append(rng.choice(('', '» ', '→ ')) + cut + '...')
        if rng.random() < 0.5:
          body.append(rng.choice(('Read more »', 'More stories', 'Load more')))
    return self._wrap(site, title, body, byline=False), self._url(site, title, 'list')

  def shakespeare(self) -> tuple[str, str]:
    rng = self.rng
    blocks = self.src.shakespeare
    n = self._words_target(220, 0.7, low=20)
    i = rng.randrange(len(blocks))
    body, words = [], 0
    while words < n:
      b = blocks[i % len(blocks)]
      body.append(b)
      words += len(b.split())
      i += 1
    act = rng.choice(('I', 'II', 'III', 'IV', 'V'))
    title = f'Act {act}, Scene {rng.randint(1, 7)}'
    site = self._site('general')
    if rng.random() < 0.5:
      return '\n'.join([title] + body), self._url(site, title, 'shakespeare')
    return self._wrap(site, title, body, byline=False), self._url(site, title, 'shakespeare')

  def huge(self) -> tuple[str, str]:
    rng = self.rng
    site = self._site('general')
    target = rng.randint(150_000, 700_000)  # characters
    form = rng.randrange(3)
    if form == 0:  # a blog archive: every post on one page
      title = f'Archive: {rng.choice(MONTHS)} {rng.randint(2008, 2024)}'
      parts, size = [], 0
      while size < target:
        t = self._title()
        paras = self._paragraphs(self._words_target(400, 0.5))
        parts.append(t)
        parts.extend(paras)
        parts.append('Read more...')
        size += len(t) + sum(len(p) for p in paras)
      return self._wrap(site, title, parts, byline=False), self._url(site, title, 'huge')
    if form == 1:  # a web-server access log
      title = 'access.log'
      lines, size = [], 0
      paths = ['/', '/index.html', '/wp-login.php', '/api/v1/items', '/feed', '/robots.txt', '/favicon.ico']
      agents = ('Mozilla/5.0 (Windows NT 10.0; Win64; x64)', 'curl/7.68.0', 'Googlebot/2.1', 'python-requests/2.31')
      y, mo = rng.randint(2015, 2024), rng.randint(1, 12)
      while size < target:
        line = (f'{_ipv4(rng)} - - [{rng.randint(1, 28):02d}/{MONTHS[mo - 1][:3]}/{y}:{rng.randint(0, 23):02d}:'
                f'{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} +0000] "GET {rng.choice(paths)} HTTP/1.1" '
                f'{rng.choice((200, 200, 200, 301, 304, 404, 500))} {rng.randint(0, 50000)} '
                f'"-" "{rng.choice(agents)}"')
        lines.append(line)
        size += len(line) + 1
      return title + '\n' + '\n'.join(lines), self._url(site, title, 'huge')
    title = 'data export'
    lines, size = ['id,date,value,count,category'], 0
    while size < target:
      line = (f'{len(lines)},{rng.randint(2010, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},'
              f'{rng.uniform(-1000, 1000):.4f},{rng.randint(0, 10 ** 6)},{rng.choice(_SECTIONS)}')
      lines.append(line)
      size += len(line) + 1
    return title + '\n' + '\n'.join(lines), self._url(site, title, 'huge')

  # ---- duplicates ----

  def _mirror_url(self, url: str) -> str:
    rng = self.rng
    domain, _, path = url[len('https://'):].partition('/')
    r = rng.random()
    if r < 0.35:
      return f'https://{self._site("general").domain}/{path}'
    if r < 0.6:
      sep = '&' if '?' in path else '?'
      source = rng.choice(('twitter', 'facebook', 'newsletter', 'rss'))
      return f'https://{domain}/{path}{sep}utm_source={source}&utm_medium=social'
    if r < 0.75:
      return f'https://{domain}/{path.rstrip("/")}/amp'
    if r < 0.9:
      sep = '&' if '?' in path else '?'
      return f'https://{domain}/{path}{sep}replytocom={rng.randint(100, 99999)}'
    return f'https://www.{domain}/{path}'

  def exact_dup(self) -> tuple[str, str] | None:
    if not self.reservoir:
      return None
    text, url = self.rng.choice(self.reservoir)
    return text, self._mirror_url(url)

  def near_dup(self) -> tuple[str, str] | None:
    rng = self.rng
    for _ in range(5):
      if not self.reservoir:
        return None
      text, url = rng.choice(self.reservoir)
      if text.count(' ') >= 60:
        break
    else:
      return None
    lines = text.split('\n')
    # Word edits: ~0.3-1.2% of the words, each touching at most five 5-gram shingles.
    n_words = text.count(' ') + len(lines)
    edits = max(1, round(n_words * rng.uniform(0.003, 0.012)))
    candidates = [i for i, l in enumerate(lines) if l.count(' ') >= 6]
    vocab = self.src.vocab
    for _ in range(edits):
      if not candidates:
        break
      i = rng.choice(candidates)
      words = lines[i].split(' ')
      j = rng.randrange(len(words))
      op = rng.random()
      if op < 0.5:
        words[j] = rng.choice(vocab)
      elif op < 0.8:
        words.insert(j, rng.choice(vocab))
      elif len(words) > 7:
        del words[j]
      lines[i] = ' '.join(words)
    # Swap a boilerplate line, as when a page is re-crawled after a site redesign.
    if rng.random() < 0.5:
      bp = [i for i, l in enumerate(lines) if l in self.boilerplate_set]
      if bp:
        lines[rng.choice(bp)] = rng.choice(self.boilerplate)
      else:
        lines.insert(rng.choice((0, len(lines))), rng.choice(self.boilerplate))
    out = '\n'.join(lines)
    if rng.random() < 0.5:  # a changed date ("updated on ...")
      out = _DATE_RE.sub(lambda m: f'{m.group(1)} {rng.randint(1, 28)}, {m.group(3)}', out, count=1)
    if out == text:
      out = text + '\nUpdated: ' + rng.choice(vocab)
    return out, self._mirror_url(url)

  # ---- driver ----

  def _kind(self) -> str:
    x = self.rng.random()
    for kind, c in zip(self.kinds, self.cum):
      if x < c:
        return kind
    return self.kinds[-1]

  def make(self, kind: str) -> tuple[str, str, str]:
    """One document of ``kind`` (duplicates fall back to an article before any exist)."""
    method = 'listing' if kind == 'list' else kind
    out = getattr(self, method)()
    if out is None:
      kind, out = 'article', self.article()
    return out[0], out[1], kind

  def remember(self, text: str, url: str) -> None:
    """Reservoir sample of earlier documents, so duplicates can copy from any of them."""
    self.seen += 1
    if len(self.reservoir) < RESERVOIR_SIZE:
      self.reservoir.append((text, url))
    else:
      j = self.rng.randrange(self.seen)
      if j < RESERVOIR_SIZE:
        self.reservoir[j] = (text, url)

  def unique_url(self, url: str) -> str:
    """Makes ``url`` one not handed out before (popular sites, mirrors of one page)."""
    while True:
      key = hashlib.blake2b(url.encode('utf-8'), digest_size=8).digest()
      if key not in self.url_keys:
        self.url_keys.add(key)
        return url
      url += ('&' if '?' in url else '?') + f'ref={self.rng.randint(1, 999_999)}'

  def __iter__(self) -> Iterator[dict[str, str]]:
    while True:
      text, url, kind = self.make(self._kind())
      url = self.unique_url(url)
      if kind != 'huge':
        self.remember(text, url)
      yield {'text': text, 'url': url, 'kind': kind}


def generate(num_docs: int, seed: int = 0) -> Iterator[dict[str, str]]:
  """Yields ``num_docs`` records ``{'text', 'url', 'kind'}``, the same for the same seed.

  The first ``n`` records of ``generate(N, seed)`` do not depend on ``N``.
  """
  if num_docs < 0:
    raise ValueError(f'num_docs must be >= 0, got {num_docs}')
  return itertools.islice(_Generator(seed, load_sources()), num_docs)


def shard_path(out_dir: str, index: int, shards: int) -> str:
  return os.path.join(out_dir, f'webgen-{index:05d}-of-{shards:05d}.jsonl.gz')


def _write(out_dir: str, num_docs: int, shards: int, seed: int, compresslevel: int = 6
           ) -> tuple[list[str], dict[str, Any]]:
  """Writes the shards; returns their paths and counts (docs per kind, bytes)."""
  if shards < 1:
    raise ValueError(f'shards must be >= 1, got {shards}')
  os.makedirs(out_dir, exist_ok=True)
  paths = [shard_path(out_dir, i, shards) for i in range(shards)]
  # Contiguous ranges: shard i holds documents [bounds[i], bounds[i+1]), so the
  # concatenated shards are the generate() sequence whatever the shard count.
  bounds = [i * num_docs // shards for i in range(shards + 1)]
  kinds: collections.Counter[str] = collections.Counter()
  text_bytes = 0
  records = generate(num_docs, seed)
  for i, path in enumerate(paths):
    tmp = path + '.tmp'
    with open(tmp, 'wb') as raw, gzip.GzipFile(filename='', mode='wb', fileobj=raw,
                                               compresslevel=compresslevel, mtime=0) as f:
      buf = []
      for _ in range(bounds[i + 1] - bounds[i]):
        rec = next(records)
        kinds[rec['kind']] += 1
        line = json.dumps(rec, ensure_ascii=False) + '\n'
        buf.append(line)
        if len(buf) >= 512:
          data = ''.join(buf).encode('utf-8')
          text_bytes += len(data)
          f.write(data)
          buf = []
      data = ''.join(buf).encode('utf-8')
      text_bytes += len(data)
      f.write(data)
    os.replace(tmp, path)  # never leave a half-written shard under the final name
  stats = {'docs': num_docs, 'kinds': dict(sorted(kinds.items())), 'jsonl_bytes': text_bytes,
           'gzip_bytes': sum(os.path.getsize(p) for p in paths)}
  return paths, stats


def write_corpus(out_dir: str, num_docs: int, shards: int = 8, seed: int = 0) -> list[str]:
  """Writes ``out_dir/webgen-{i:05d}-of-{n:05d}.jsonl.gz`` (JSON lines: text, url, kind).

  Returns the shard paths in order. Shards hold contiguous runs of ``generate(num_docs,
  seed)``; files are byte-identical between runs with the same arguments.
  """
  return _write(out_dir, num_docs, shards, seed)[0]


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--out', required=True, help='output directory')
  p.add_argument('--num_docs', type=int, default=100_000)
  p.add_argument('--shards', type=int, default=8)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--compresslevel', type=int, default=6, help='gzip level 1 (fast) .. 9 (small)')
  args = p.parse_args(argv)
  t0 = time.perf_counter()
  paths, stats = _write(args.out, args.num_docs, args.shards, args.seed, args.compresslevel)
  secs = time.perf_counter() - t0
  print(f'wrote {stats["docs"]:,} documents to {len(paths)} shards in {args.out} ({secs:.1f} s)')
  for kind in KINDS:
    n = stats['kinds'].get(kind, 0)
    print(f'  {kind:12s} {n:8,d}  {100 * n / max(1, stats["docs"]):5.2f}%')
  print(f'total: {stats["jsonl_bytes"] / 1e6:,.1f} MB of JSONL, {stats["gzip_bytes"] / 1e6:,.1f} MB gzipped')


if __name__ == '__main__':
  main()
