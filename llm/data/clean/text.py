"""One shared, lazily computed analysis of a document that every rule reuses.

Reference pipelines tokenise a document once per rule: datatrove 0.10.1 counts words with
``spacy.blank('en')`` (``load_word_tokenizer('en')`` is a ``SpaCyTokenizer``; its
``word_tokenize`` keeps every token's text, stripped, dropping whitespace tokens) in the
Gopher repetition, Gopher quality and FineWeb filters, and splits every kept line into
sentences with that pipeline's ``sentencizer`` in the C4 filter. The thresholds were set on
those counts, so here the words are computed once per text by a port of spaCy's English
tokenizer (v3.8) that needs no spaCy:

  * the text is cut at whitespace; each chunk is looked up in spaCy's special cases
    (``do|n't``, ``can|not``, ``Mr.``, ``e.g.``, ``6|pm``, ``:)``, ...), otherwise prefixes
    and suffixes are split off one at a time (punctuation, quotes, brackets, currency, a
    final ``.`` after a lower-case letter or two capitals, units after digits, ``'s``)
    until a special case or nothing is left, and the rest is split at infixes (``...``,
    ``-`` between letters, ``.`` between a lower-case and an upper-case letter, ``,``
    between letters, ``:<>=/`` before a letter) unless it is a URL;
  * a final pass merges token runs that spell a special case containing punctuation
    (``x:)`` is ``x`` ``:)``), as spaCy's special-case matcher does inside a chunk.

The rule tables below are spaCy's (``spacy/lang/char_classes.py``, ``punctuation.py``,
``tokenizer_exceptions.py`` and ``lang/en/``; MIT licence, Explosion AI), the character
classes written as code-point ranges. The regular expressions are built and applied as
spaCy builds and applies them, with Python's ``re`` as spaCy uses, so a chunk's tokens are
spaCy's; ``tests/test_corpus_tokenizer.py`` compares tables and tokens with spaCy when it
is installed, and ``benchmarks/tokenizer_agreement.py`` measures agreement on corpora.

Speed: a chunk of letters only is one token unless it is a special case (no affix rule
can match it), and every other chunk's tokens are cached (as spaCy caches them), so the
regular expressions only run on chunks not seen recently.
"""

from __future__ import annotations

import functools
import re

# ------------------------------------------------------------- spaCy's character classes
# ALPHA, ALPHA_LOWER and ALPHA_UPPER of spacy/lang/char_classes.py, as the code-point
# ranges they cover (spaCy lists scripts block by block; the sets are equal, tested).
_ALPHA = (
    r'A-Za-zÀ-ÖØ-öø-ƿǄ-ʯΆΈ-ΊΌΎΏΑ-Ωά-ία-ωό-ώЀЁЃ-ЊЌЍА-ёѓ-њќѝҐґҖҗҢңҮүҺһӘәӨө\u0591-\u05F4\u0620-\u064A'
    r'\u066E-\u06D5\u06E5-\u06FF\u0750-\u077F\u08A0-\u08BD\u0900-\u09FF\u0B80-\u0CFF\u0D80-\u0DFF'
    r'\u1100-\u137F\u1D00-\u1D25\u1D6B-\u1D77\u1D79-\u1D9A\u1E00-\u1EFF\u2C60-\u2C7B\u2C7E\u2C7F'
    r'\u2E80-\u2FDF\u2FF0-\u30FF\u31C0-\u31EF\u3200-\u4DBF\u4E00-\u9FFF\uA722-\uA76F\uA771-\uA787'
    r'\uA78B-\uA78E\uA790-\uA7B9\uA7FA\uAB30-\uAB5A\uAB60-\uAB64\uAC00-\uD7AF\uF900-\uFAFF'
    r'\uFB1D-\uFBB1\uFBD3-\uFD3D\uFD50-\uFDC7\uFDF0-\uFDFB\uFE30-\uFE4F\uFE70-\uFEFC\uFF21-\uFF3A'
    r'\uFF41-\uFF5A\U0001EE00-\U0001EEBB\U0001F200-\U0001F2FF\U00020000-\U0002A6DF'
    r'\U0002A700-\U0002EBEF\U0002F800-\U0002FA1F')

_ALPHA_LOWER = (
    r'a-zß-öø-ÿāăąćĉċčďđēĕėęěĝğġģĥħĩīĭįıĳĵķĸĺļľŀłńņňŉŋōŏőœŕŗřśŝşšţťŧũūŭůűųŵŷźżž-ƀƃƅƈƌƍƒƕƙ-ƛƞơƣƥƨƪƫƭưƴƶ'
    r'ƹƺƽ-ƿǆǉǌǎǐǒǔǖǘǚǜǝǟǡǣǥǧǩǫǭǯǰǳǵǹǻǽǿȁȃȅȇȉȋȍȏȑȓȕȗșțȝȟȡȣȥȧȩȫȭȯȱȳ-ȹȼȿɀɂɇɉɋɍɏ-ʯά-ία-ωό-ώа-ёѓ-њќѝґҗңүһәө'
    r'\u0591-\u05F4\u0620-\u064A\u066E-\u06D5\u06E5-\u06FF\u0750-\u077F\u08A0-\u08BD\u0900-\u09FF'
    r'\u0B80-\u0CFF\u0D80-\u0DFF\u1100-\u137F\u1D00-\u1D25\u1D6B-\u1D77\u1D79-\u1D9A\u1E01\u1E03\u1E05'
    r'\u1E07\u1E09\u1E0B\u1E0D\u1E0F\u1E11\u1E13\u1E15\u1E17\u1E19\u1E1B\u1E1D\u1E1F\u1E21\u1E23\u1E25'
    r'\u1E27\u1E29\u1E2B\u1E2D\u1E2F\u1E31\u1E33\u1E35\u1E37\u1E39\u1E3B\u1E3D\u1E3F\u1E41\u1E43\u1E45'
    r'\u1E47\u1E49\u1E4B\u1E4D\u1E4F\u1E51\u1E53\u1E55\u1E57\u1E59\u1E5B\u1E5D\u1E5F\u1E61\u1E63\u1E65'
    r'\u1E67\u1E69\u1E6B\u1E6D\u1E6F\u1E71\u1E73\u1E75\u1E77\u1E79\u1E7B\u1E7D\u1E7F\u1E81\u1E83\u1E85'
    r'\u1E87\u1E89\u1E8B\u1E8D\u1E8F\u1E91\u1E93\u1E95-\u1E9D\u1E9F\u1EA1\u1EA3\u1EA5\u1EA7\u1EA9'
    r'\u1EAB\u1EAD\u1EAF\u1EB1\u1EB3\u1EB5\u1EB7\u1EB9\u1EBB\u1EBD\u1EBF\u1EC1\u1EC3\u1EC5\u1EC7\u1EC9'
    r'\u1ECB\u1ECD\u1ECF\u1ED1\u1ED3\u1ED5\u1ED7\u1ED9\u1EDB\u1EDD\u1EDF\u1EE1\u1EE3\u1EE5\u1EE7\u1EE9'
    r'\u1EEB\u1EED\u1EEF\u1EF1\u1EF3\u1EF5\u1EF7\u1EF9\u1EFB\u1EFD\u1EFF\u2C61\u2C65\u2C66\u2C68\u2C6A'
    r'\u2C6C\u2C71\u2C73\u2C74\u2C76-\u2C7B\u2E80-\u2FDF\u2FF0-\u30FF\u31C0-\u31EF\u3200-\u4DBF'
    r'\u4E00-\u9FFF\uA723\uA725\uA727\uA729\uA72B\uA72D\uA72F-\uA731\uA733\uA735\uA737\uA739\uA73B'
    r'\uA73D\uA73F\uA741\uA743\uA745\uA747\uA749\uA74B\uA74D\uA74F\uA751\uA753\uA755\uA757\uA759\uA75B'
    r'\uA75D\uA75F\uA761\uA763\uA765\uA767\uA769\uA76B\uA76D\uA76F\uA771-\uA778\uA77A\uA77C\uA77F'
    r'\uA781\uA783\uA785\uA787\uA78C\uA78E\uA791\uA793-\uA795\uA797\uA799\uA79B\uA79D\uA79F\uA7A1'
    r'\uA7A3\uA7A5\uA7A7\uA7A9\uA7AF\uA7B5\uA7B7\uA7B9\uA7FA\uAB30-\uAB5A\uAB60-\uAB64\uAC00-\uD7AF'
    r'\uF900-\uFAFF\uFB1D-\uFBB1\uFBD3-\uFD3D\uFD50-\uFDC7\uFDF0-\uFDFB\uFE30-\uFE4F\uFE70-\uFEFC'
    r'\uFF41-\uFF5A\U0001EE00-\U0001EEBB\U0001F200-\U0001F2FF\U00020000-\U0002A6DF'
    r'\U0002A700-\U0002EBEF\U0002F800-\U0002FA1F')

_ALPHA_UPPER = (
    r'A-ZÀ-ÖØ-ÞĀĂĄĆĈĊČĎĐĒĔĖĘĚĜĞĠĢĤĦĨĪĬĮİĲĴĶĹĻĽĿŁŃŅŇŊŌŎŐŒŔŖŘŚŜŞŠŢŤŦŨŪŬŮŰŲŴŶŸŹŻŽƁƂƄƆƇƉ-ƋƎ-ƑƓƔƖ-ƘƜƝƟƠƢƤƦƧ'
    r'ƩƬƮƯƱ-ƳƵƷƸƼǄǇǊǍǏǑǓǕǗǙǛǞǠǢǤǦǨǪǬǮǱǴǶ-ǸǺǼǾȀȂȄȆȈȊȌȎȐȒȔȖȘȚȜȞȠȢȤȦȨȪȬȮȰȲȺȻȽȾɁɃ-ɆɈɊɌɎΆΈ-ΊΌΎΏΑ-ΩЀЁЃ-ЊЌЍ'
    r'А-ЯҐҖҢҮҺӘӨ\u0591-\u05F4\u0620-\u064A\u066E-\u06D5\u06E5-\u06FF\u0750-\u077F\u08A0-\u08BD'
    r'\u0900-\u09FF\u0B80-\u0CFF\u0D80-\u0DFF\u1100-\u137F\u1E00\u1E02\u1E04\u1E06\u1E08\u1E0A\u1E0C'
    r'\u1E0E\u1E10\u1E12\u1E14\u1E16\u1E18\u1E1A\u1E1C\u1E1E\u1E20\u1E22\u1E24\u1E26\u1E28\u1E2A\u1E2C'
    r'\u1E2E\u1E30\u1E32\u1E34\u1E36\u1E38\u1E3A\u1E3C\u1E3E\u1E40\u1E42\u1E44\u1E46\u1E48\u1E4A\u1E4C'
    r'\u1E4E\u1E50\u1E52\u1E54\u1E56\u1E58\u1E5A\u1E5C\u1E5E\u1E60\u1E62\u1E64\u1E66\u1E68\u1E6A\u1E6C'
    r'\u1E6E\u1E70\u1E72\u1E74\u1E76\u1E78\u1E7A\u1E7C\u1E7E\u1E80\u1E82\u1E84\u1E86\u1E88\u1E8A\u1E8C'
    r'\u1E8E\u1E90\u1E92\u1E94\u1E9E\u1EA0\u1EA2\u1EA4\u1EA6\u1EA8\u1EAA\u1EAC\u1EAE\u1EB0\u1EB2\u1EB4'
    r'\u1EB6\u1EB8\u1EBA\u1EBC\u1EBE\u1EC0\u1EC2\u1EC4\u1EC6\u1EC8\u1ECA\u1ECC\u1ECE\u1ED0\u1ED2\u1ED4'
    r'\u1ED6\u1ED8\u1EDA\u1EDC\u1EDE\u1EE0\u1EE2\u1EE4\u1EE6\u1EE8\u1EEA\u1EEC\u1EEE\u1EF0\u1EF2\u1EF4'
    r'\u1EF6\u1EF8\u1EFA\u1EFC\u1EFE\u2C60\u2C62-\u2C64\u2C67\u2C69\u2C6B\u2C6D-\u2C70\u2C72\u2C75'
    r'\u2C7E\u2C7F\u2E80-\u2FDF\u2FF0-\u30FF\u31C0-\u31EF\u3200-\u4DBF\u4E00-\u9FFF\uA722\uA724\uA726'
    r'\uA728\uA72A\uA72C\uA72E\uA732\uA734\uA736\uA738\uA73A\uA73C\uA73E\uA740\uA742\uA744\uA746\uA748'
    r'\uA74A\uA74C\uA74E\uA750\uA752\uA754\uA756\uA758\uA75A\uA75C\uA75E\uA760\uA762\uA764\uA766\uA768'
    r'\uA76A\uA76C\uA76E\uA779\uA77B\uA77D\uA77E\uA780\uA782\uA784\uA786\uA78B\uA78D\uA790\uA792\uA796'
    r'\uA798\uA79A\uA79C\uA79E\uA7A0\uA7A2\uA7A4\uA7A6\uA7A8\uA7AA-\uA7AE\uA7B0-\uA7B4\uA7B6\uA7B8'
    r'\uAC00-\uD7AF\uF900-\uFAFF\uFB1D-\uFBB1\uFBD3-\uFD3D\uFD50-\uFDC7\uFDF0-\uFDFB\uFE30-\uFE4F'
    r'\uFE70-\uFEFC\uFF21-\uFF3A\U0001EE00-\U0001EEBB\U0001F200-\U0001F2FF\U00020000-\U0002A6DF'
    r'\U0002A700-\U0002EBEF\U0002F800-\U0002FA1F')

# Other symbols (category So) as spaCy lists them.
_ICONS = (
    r'\u00A6\u00A9\u00AE\u00B0\u0482\u058D\u058E\u060E\u060F\u06DE\u06E9\u06FD\u06FE\u07F6\u09FA\u0B70'
    r'\u0BF3-\u0BF8\u0BFA\u0C7F\u0D4F\u0D79\u0F01-\u0F03\u0F13\u0F15-\u0F17\u0F1A-\u0F1F\u0F34\u0F36'
    r'\u0F38\u0FBE-\u0FC5\u0FC7-\u0FCC\u0FCE\u0FCF\u0FD5-\u0FD8\u109E\u109F\u1390-\u1399\u1940'
    r'\u19DE-\u19FF\u1B61-\u1B6A\u1B74-\u1B7C\u2100\u2101\u2103-\u2106\u2108\u2109\u2114\u2116\u2117'
    r'\u211E-\u2123\u2125\u2127\u2129\u212E\u213A\u213B\u214A\u214C\u214D\u214F\u218A\u218B'
    r'\u2195-\u2199\u219C-\u219F\u21A1\u21A2\u21A4\u21A5\u21A7-\u21AD\u21AF-\u21CD\u21D0\u21D1\u21D3'
    r'\u21D5-\u21F3\u2300-\u2307\u230C-\u231F\u2322-\u2328\u232B-\u237B\u237D-\u239A\u23B4-\u23DB'
    r'\u23E2-\u2426\u2440-\u244A\u249C-\u24E9\u2500-\u25B6\u25B8-\u25C0\u25C2-\u25F7\u2600-\u266E'
    r'\u2670-\u2767\u2794-\u27BF\u2800-\u28FF\u2B00-\u2B2F\u2B45\u2B46\u2B4D-\u2B73\u2B76-\u2B95'
    r'\u2B98-\u2BC8\u2BCA-\u2BFE\u2CE5-\u2CEA\u2E80-\u2E99\u2E9B-\u2EF3\u2F00-\u2FD5\u2FF0-\u2FFB'
    r'\u3004\u3012\u3013\u3020\u3036\u3037\u303E\u303F\u3190\u3191\u3196-\u319F\u31C0-\u31E3'
    r'\u3200-\u321E\u322A-\u3247\u3250\u3260-\u327F\u328A-\u32B0\u32C0-\u32FE\u3300-\u33FF'
    r'\u4DC0-\u4DFF\uA490-\uA4C6\uA828-\uA82B\uA836\uA837\uA839\uAA77-\uAA79\uFDFD\uFFE4\uFFE8\uFFED'
    r'\uFFEE\uFFFC\uFFFD\U00010137-\U0001013F\U00010179-\U00010189\U0001018C-\U0001018E'
    r'\U00010190-\U0001019B\U000101A0\U000101D0-\U000101FC\U00010877\U00010878\U00010AC8\U0001173F'
    r'\U00016B3C-\U00016B3F\U00016B45\U0001BC9C\U0001D000-\U0001D0F5\U0001D100-\U0001D126'
    r'\U0001D129-\U0001D164\U0001D16A-\U0001D16C\U0001D183\U0001D184\U0001D18C-\U0001D1A9'
    r'\U0001D1AE-\U0001D1E8\U0001D200-\U0001D241\U0001D245\U0001D300-\U0001D356\U0001D800-\U0001D9FF'
    r'\U0001DA37-\U0001DA3A\U0001DA6D-\U0001DA74\U0001DA76-\U0001DA83\U0001DA85\U0001DA86\U0001ECAC'
    r'\U0001F000-\U0001F02B\U0001F030-\U0001F093\U0001F0A0-\U0001F0AE\U0001F0B1-\U0001F0BF'
    r'\U0001F0C1-\U0001F0CF\U0001F0D1-\U0001F0F5\U0001F110-\U0001F16B\U0001F170-\U0001F1AC'
    r'\U0001F1E6-\U0001F202\U0001F210-\U0001F23B\U0001F240-\U0001F248\U0001F250\U0001F251'
    r'\U0001F260-\U0001F265\U0001F300-\U0001F3FA\U0001F400-\U0001F6D4\U0001F6E0-\U0001F6EC'
    r'\U0001F6F0-\U0001F6F9\U0001F700-\U0001F773\U0001F780-\U0001F7D8\U0001F800-\U0001F80B'
    r'\U0001F810-\U0001F847\U0001F850-\U0001F859\U0001F860-\U0001F887\U0001F890-\U0001F8AD'
    r'\U0001F900-\U0001F90B\U0001F910-\U0001F93E\U0001F940-\U0001F970\U0001F973-\U0001F976\U0001F97A'
    r'\U0001F97C-\U0001F9A2\U0001F9B0-\U0001F9B9\U0001F9C0-\U0001F9C2\U0001F9D0-\U0001F9FF'
    r'\U0001FA60-\U0001FA6D')

# spaCy's space-separated lists, verbatim: units are split off after digits ("5km"); the
# missing space in "тбكم" is spaCy's too.
_PUNCT = '… …… , : ; \\! \\? ¿ ؟ ¡ \\( \\) \\[ \\] \\{ \\} < > _ # \\* & 。 ？ ！ ， 、 ； ： ～ · । ، ۔ ؛ ٪'
_QUOTES = '\\\' " ” “ ` ‘ ´ ’ ‚ , „ » « 「 」 『 』 （ ） 〔 〕 【 】 《 》 〈 〉 〈 〉  ⟦ ⟧'
_HYPHENS = '- – — -- --- —— ~'
_CURRENCY = ('\\$ £ € ¥ ฿ US\\$ C\\$ A\\$ ₽ ﷼ ₴ ₠ ₡ ₢ ₣ ₤ ₥ ₦ ₧ ₨ ₩ ₪ ₫ € ₭ ₮ ₯ ₰ '
             '₱ ₲ ₳ ₴ ₵ ₶ ₷ ₸ ₹ ₺ ₻ ₼ ₽ ₾ ₿')
_UNITS = ('km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz m/s '
          'km/h kmh mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K % км км² км³ м м² м³ дм дм² дм³ см '
          'см² см³ мм мм² мм³ нм кг г мг м/с км/ч кПа Па мбар Кб КБ кб Мб МБ мб Гб ГБ гб Тб ТБ тб'
          'كم كم² كم³ م م² م³ سم سم² سم³ مم مم² مم³ كم غرام جرام جم كغ ملغ كوب اكواب')


def _split_chars(s: str) -> list[str]:
  return s.strip().split(' ')


def _merge_chars(s: str) -> str:
  return s.strip().replace(' ', '|')


_CONCAT_QUOTES = _QUOTES.strip().replace(' ', '')
_LIST_PUNCT = _split_chars(_PUNCT)
_LIST_QUOTES = _split_chars(_QUOTES)
_LIST_CURRENCY = _split_chars(_CURRENCY)
_LIST_ELLIPSES = [r'\.\.+', '…']
_LIST_ICONS = [f'[{_ICONS}]']

# spacy/lang/punctuation.py (prefixes, suffixes) and spacy/lang/en/punctuation.py (infixes).
_PREFIXES = (['§', '%', '=', '—', '–', r'\+(?![0-9])'] + _LIST_PUNCT + _LIST_ELLIPSES + _LIST_QUOTES +
             _LIST_CURRENCY + _LIST_ICONS)
_SUFFIXES = (_LIST_PUNCT + _LIST_ELLIPSES + _LIST_QUOTES + _LIST_ICONS + ["'s", "'S", '’s', '’S', '—', '–'] + [
    r'(?<=[0-9])\+',
    r'(?<=°[FfCcKk])\.',
    rf'(?<=[0-9])(?:{_merge_chars(_CURRENCY)})',
    rf'(?<=[0-9])(?:{_merge_chars(_UNITS)})',
    # PUNCT joined by '|' inside a character class, as spaCy writes it ('|' is in the class).
    rf'(?<=[0-9{_ALPHA_LOWER}%²\-\+{_merge_chars(_PUNCT)}(?:{_CONCAT_QUOTES})])\.',
    rf'(?<=[{_ALPHA_UPPER}][{_ALPHA_UPPER}])\.',
])
_INFIXES = _LIST_ELLIPSES + _LIST_ICONS + [
    r'(?<=[0-9])[+\-\*^](?=[0-9-])',
    rf'(?<=[{_ALPHA_LOWER}{_CONCAT_QUOTES}])\.(?=[{_ALPHA_UPPER}{_CONCAT_QUOTES}])',
    rf'(?<=[{_ALPHA}]),(?=[{_ALPHA}])',
    rf'(?<=[{_ALPHA}0-9])(?:{_merge_chars(_HYPHENS)})(?=[{_ALPHA}])',
    rf'(?<=[{_ALPHA}0-9])[:<>=/](?=[{_ALPHA}])',
]

# spacy.util.compile_prefix_regex / compile_suffix_regex / compile_infix_regex. Every
# prefix alternative starts with '^', so .match finds what spaCy's .search finds.
_prefix_match = re.compile('|'.join('^' + p for p in _PREFIXES if p.strip())).match
_suffix_search = re.compile('|'.join(p + '$' for p in _SUFFIXES if p.strip())).search
_infix_finditer = re.compile('|'.join(p for p in _INFIXES if p.strip())).finditer

# Speed-ups that change no result. (1) Every suffix alternative but '\.\.+' matches a fixed
# string of at most _SUFFIX_TAIL characters, and all must reach the end, so the leftmost
# match starts in the last _SUFFIX_TAIL characters or where a final run of dots starts:
# searching from there (lookbehinds still see the whole string) finds the same match
# without trying every alternative at every position of a long chunk. (2) An infix match
# consumes one of _has_infix_char's characters, so a chunk without any has no infix.
_SUFFIX_TAIL = max(len(p.replace('\\', '')) for p in
                   _LIST_PUNCT + _LIST_QUOTES + _split_chars(_CURRENCY) + _split_chars(_UNITS) + ["'s"])
_has_infix_char = re.compile(f'[.…+\\-*^,–—~:<>=/{_ICONS}]').search


def _suffix_len(s: str) -> int:
  """Length of spaCy's suffix of ``s`` (``Tokenizer.find_suffix``), 0 if none."""
  pos = len(s) - _SUFFIX_TAIL
  if pos > 0 and s.endswith('..'):
    pos = min(pos, len(s.rstrip('.')))
  m = _suffix_search(s, pos if pos > 0 else 0)
  return m.end() - m.start() if m else 0


# spacy/lang/tokenizer_exceptions.py URL_PATTERN (URL_MATCH): a chunk left after affix
# splitting that matches is one token (no infix split).
_url_match = re.compile(
    r'(?u)^'
    r'(?:(?:[\w\+\-\.]{2,})://)?'  # protocol
    r'(?:\S+(?::\S*)?@)?'  # user:pass@
    r'(?:'
    r'(?!(?:10|127)(?:\.\d{1,3}){3})'  # not a private or local IP address
    r'(?!(?:169\.254|192\.168)(?:\.\d{1,3}){2})'
    r'(?!172\.(?:1[6-9]|2\d|3[0-1])(?:\.\d{1,3}){2})'
    r'(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])'  # IP address
    r'(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5])){2}'
    r'(?:\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4]))'
    r'|'
    r'(?:(?:[A-Za-z0-9\u00a1-\uffff][A-Za-z0-9\u00a1-\uffff_-]{0,62})?[A-Za-z0-9\u00a1-\uffff]\.)+'  # host
    rf'(?:[{_ALPHA_LOWER}]{{2,63}})'  # TLD
    r')'
    r'(?::\d{2,5})?'  # port
    r'(?:[/?#]\S*)?'  # path
    r'$').match

# ------------------------------------------------------------------- special cases
_EMOTICONS = r"""
(*_*) (-8 (-: (-; (-_-) (._.) (: (; (= (>_<) (^_^) (o: (¬_¬) (ಠ_ಠ) (╯°□°）╯︵┻━┻ )-: ): -_- -__- ._.
0.0 0.o 0_0 0_o 8) 8-) 8-D 8D :'( :') :'-( :'-) :( :(( :((( :() :) :)) :))) :* :-( :-(( :-((( :-) :-))
:-))) :-* :-/ :-0 :-3 :-> :-D :-O :-P :-X :-] :-o :-p :-x :-| :-} :/ :0 :1 :3 :> :D :O :P :X :] :o :o)
:p :x :| :} ;) ;-) ;-D ;D ;_; <.< </3 <3 <33 <333 =( =) =/ =3 =D =[ =] =| >.< >.> >:( >:o ><(((*> @_@
O.O O.o O_O O_o V.V V_V XD XDD [-: [: [= ]= ^_^ ^__^ ^___^ o.0 o.O o.o o_0 o_O o_o v.v v_v xD xDD
¯\(ツ)/¯ ಠ_ಠ ಠ︵ಠ
""".split()


def _special_cases() -> dict[str, tuple[str, ...]]:
  """spaCy's English tokenizer exceptions (``nlp.tokenizer.rules``): string -> its tokens.

  Built the way spacy/lang/en/tokenizer_exceptions.py builds them (only the ORTH of each
  token matters for tokenisation), on top of spacy/lang/tokenizer_exceptions.py's base
  exceptions, then every entry with ``'`` copied with ``’`` (``spacy.util.update_exc``).
  """
  base: dict[str, tuple[str, ...]] = {}
  for orth in [' ', '\t', '\\t', '\n', '\\n', '\u2014', '\u00a0', "'", '\\")', '<space>', "''", 'C++',
               *(c + '.' for c in 'abcdefghijklmnopqrstuvwxyzäöü'), *_EMOTICONS]:
    base[orth] = (orth,)
  for u in 'cfkCFK':
    base[f'°{u}.'] = ('°', u, '.')

  exc: dict[str, tuple[str, ...]] = {}

  def add(*parts: str) -> None:
    exc[''.join(parts)] = parts

  def cased(word: str) -> tuple[str, str]:
    return word, word.title()

  for orth in cased('i'):
    add(orth, "'m"), add(orth, 'm'), add(orth, "'m", 'a'), add(orth, 'm', 'a')
  for pron in ('i', 'you', 'he', 'she', 'it', 'we', 'they'):
    for orth in cased(pron):
      add(orth, "'ll"), add(orth, 'll'), add(orth, "'ll", "'ve"), add(orth, 'll', 've')
      add(orth, "'d"), add(orth, 'd'), add(orth, "'d", "'ve"), add(orth, 'd', 've')
  for pron in ('i', 'you', 'we', 'they'):
    for orth in cased(pron):
      add(orth, "'ve"), add(orth, 've')
  for pron in ('you', 'we', 'they'):
    for orth in cased(pron):
      add(orth, "'re"), add(orth, 're')
  for pron in ('he', 'she', 'it'):
    for orth in cased(pron):
      add(orth, "'s"), add(orth, 's')
  for word in ('who', 'what', 'when', 'where', 'why', 'how', 'there', 'that', 'this', 'these', 'those'):
    for orth in cased(word):
      if word not in ('these', 'those'):  # plural: no 's
        add(orth, "'s"), add(orth, 's')
      add(orth, "'ll"), add(orth, 'll'), add(orth, "'ll", "'ve"), add(orth, 'll', 've')
      if word not in ('that', 'this'):  # singular: no 're, 've
        add(orth, "'re"), add(orth, 're'), add(orth, "'ve"), add(orth, 've')
      add(orth, "'d"), add(orth, 'd'), add(orth, "'d", "'ve"), add(orth, 'd', 've')
  for verb in ('ca', 'could', 'do', 'does', 'did', 'had', 'may', 'might', 'must', 'need', 'ought', 'sha',
               'should', 'wo', 'would'):
    for orth in cased(verb):
      add(orth, "n't"), add(orth, 'nt'), add(orth, "n't", "'ve"), add(orth, 'nt', 've')
  for verb in ('could', 'might', 'must', 'should', 'would'):
    for orth in cased(verb):
      add(orth, "'ve"), add(orth, 've')
  for verb in ('ai', 'are', 'is', 'was', 'were', 'have', 'has', 'dare'):
    for orth in cased(verb):
      add(orth, "n't"), add(orth, 'nt')
  for word in ('doin', 'goin', 'nothin', 'nuthin', 'ol', 'somethin'):  # trailing apostrophe
    for orth in cased(word):
      add(orth), add(orth + "'")
  for word in ('em', 'll', 'nuff'):  # leading apostrophe
    add(word), add("'" + word)
  for h in range(1, 13):
    for period in ('a.m.', 'am', 'p.m.', 'pm'):
      add(str(h), period)
  for parts in [("y'", 'all'), ('y', 'all'), ('how', "'d", "'y"), ('How', "'d", "'y"), ('not', "'ve"),
                ('not', 've'), ('Not', "'ve"), ('Not', 've'), ('can', 'not'), ('Can', 'not'), ('gon', 'na'),
                ('Gon', 'na'), ('got', 'ta'), ('Got', 'ta'), ('let', "'s"), ('Let', "'s"), ("c'm", 'on'),
                ("C'm", 'on')]:
    add(*parts)
  for orth in (
      "'S 's ‘S ‘s and/or w/o 're 'Cause 'cause 'cos 'Cos 'coz 'Coz 'cuz 'Cuz 'bout ma'am Ma'am o'clock "
      "O'clock lovin' Lovin' lovin Lovin havin' Havin' havin Havin doin' Doin' doin Doin goin' Goin' goin Goin "
      'Mt. Ak. Ala. Apr. Ariz. Ark. Aug. Calif. Colo. Conn. Dec. Del. Feb. Fla. Ga. Ia. Id. Ill. Ind. Jan. '
      'Jul. Jun. Kan. Kans. Ky. La. Mar. Mass. Mich. Minn. Miss. N.C. N.D. N.H. N.J. N.M. N.Y. Neb. Nebr. '
      'Nev. Nov. Oct. Okla. Ore. Pa. S.C. Sep. Sept. Tenn. Va. Wash. Wis. '
      "'d a.m. Adm. Bros. co. Co. Corp. D.C. Dr. e.g. E.g. E.G. Gen. Gov. i.e. I.e. I.E. Inc. Jr. Ltd. Md. "
      'Messrs. Mo. Mont. Mr. Mrs. Ms. p.m. Ph.D. Prof. Rep. Rev. Sen. St. vs. v.s.').split():
    add(orth)
  # Ordinary words the patterns above would split ("hell" = he|ll, "were" = we|re).
  for word in ('Ill ill Its its Hell hell Shell shell Shed shed were Were Well well Whore whore').split():
    exc.pop(word, None)

  rules = {**base, **exc}
  rules.update({k.replace("'", '’'): tuple(p.replace("'", '’') for p in v) for k, v in rules.items() if "'" in k})
  return rules


_SPECIAL = _special_cases()

# ------------------------------------------------------------------ the algorithm


def _affix_tokens(chunk: str, specials: bool) -> list[str]:
  """spaCy's ``Tokenizer._split_affixes`` + ``_attach_tokens`` on one whitespace-free chunk.

  Prefixes and suffixes come off one at a time (both in one round when both match) until
  nothing matches or what is left (or what is left without the affix just found) is a
  special case; the middle is a special case, a URL, or split at its infixes.
  """
  prefixes: list[str] = []
  suffixes: list[str] = []
  s = chunk
  last = 0
  while s and len(s) != last:
    if specials and s in _SPECIAL:
      break
    last = len(s)
    m = _prefix_match(s)
    pre = m.end() if m else 0
    if pre and specials and s[pre:] in _SPECIAL:
      prefixes.append(s[:pre])
      s = s[pre:]
      break
    suf = _suffix_len(s[pre:] if pre else s)  # a slice: lookbehinds must not see the prefix
    if suf and specials and s[:-suf] in _SPECIAL:
      suffixes.append(s[-suf:])
      s = s[:-suf]
      break
    if pre and suf:  # the suffix was found in s[pre:], so they never overlap
      prefixes.append(s[:pre])
      suffixes.append(s[-suf:])
      s = s[pre:-suf]
    elif pre:
      prefixes.append(s[:pre])
      s = s[pre:]
    elif suf:
      suffixes.append(s[-suf:])
      s = s[:-suf]
  out = prefixes
  if s:
    special = _SPECIAL.get(s) if specials else None
    if special is not None:
      out.extend(special)
    elif _url_match(s):
      out.append(s)
    elif _has_infix_char(s) is None:
      out.append(s)
    else:
      start = 0
      for m in _infix_finditer(s):
        i, j = m.span()
        if i == 0:  # spaCy never splits an infix off the start
          continue
        if i != start:
          out.append(s[start:i])
        if i != j:
          out.append(s[i:j])
        start = j
      if start < len(s):
        out.append(s[start:])
  out.extend(reversed(suffixes))
  return out


def _matcher_patterns() -> tuple[dict, frozenset[tuple[str, str]]]:
  """A trie of the token runs that spell a special case with punctuation in it, and the
  pairs of tokens that follow each other in such a run.

  spaCy adds such special cases (those an affix rule matches, when ``faster_heuristics``
  is on, the default) to a phrase matcher over the tokens they would get without special
  cases; after tokenising it replaces matched runs by the special case's tokens
  (``_apply_special_cases``, ported in ``_apply_matcher``). Nested dicts, token by token;
  the key '' (no token is empty) marks the end of a run.
  """
  trie: dict = {}
  pairs = set()
  for orth in _SPECIAL:
    if ' ' in orth or orth.isspace():  # never inside a chunk
      continue
    if _prefix_match(orth) or _suffix_search(orth) or next(_infix_finditer(orth), None):
      run = _affix_tokens(orth, specials=False)
      pairs.update(zip(run, run[1:]))
      node = trie
      for t in run:
        node = node.setdefault(t, {})
      node[''] = True
  return trie, frozenset(pairs)


_MATCHER, _MATCHER_PAIRS = _matcher_patterns()


def _apply_matcher(toks: list[str], glued: list[bool] | None = None) -> list[str]:
  """spaCy's ``_apply_special_cases``: matched runs of tokens become the special case.

  ``glued[k]`` says token k follows token k-1 inside one chunk (None: all tokens are one
  chunk). A run across whitespace matches too but changes nothing (its text holds a space,
  which no special case in the matcher does); it still takes part in resolving overlaps
  as ``_filter_special_spans`` does: longest match first, then leftmost; a match is kept
  if neither its first nor its last token is in a match considered before it.
  """
  n = len(toks)
  matches = []
  trie = _MATCHER
  for i in range(n):
    node = trie.get(toks[i])
    j = i + 1
    while node is not None:
      if '' in node:
        matches.append((i, j))
      if j == n:
        break
      node = node.get(toks[j])
      j += 1
  if not matches:
    return toks
  matches.sort(key=lambda m: (m[0] - m[1], m[0]))  # longest first, then leftmost
  seen: set[int] = set()
  kept = {}
  for i, j in matches:
    if i not in seen and j - 1 not in seen:
      kept[i] = j
    seen.update(range(i, j))
  out: list[str] = []
  i = 0
  while i < n:
    j = kept.get(i)
    if j is not None and (glued is None or all(glued[i + 1:j])):
      out.extend(_SPECIAL[''.join(toks[i:j])])
      i = j
    else:
      out.append(toks[i])
      i += 1
  return out


def _first_pass(chunk: str) -> list[str]:
  """A chunk's tokens before the special-case matcher (``Tokenizer._tokenize_affixes``)."""
  special = _SPECIAL.get(chunk)
  return list(special) if special is not None else _affix_tokens(chunk, specials=True)


def chunk_tokens(chunk: str) -> tuple[str, ...]:
  """spaCy's tokens of one whitespace-free chunk on its own (``words`` caches this)."""
  return tuple(_apply_matcher(_first_pass(chunk)))


_SPACE_SPLIT = re.compile(r'(\s+)')


def tokens(text: str) -> list[str]:
  """All the tokens of spaCy's ``Doc``, whitespace tokens included (the sentencizer sees them).

  spaCy absorbs one ' ' after a token into the token; the rest of a run of whitespace (or
  all of it, when the run starts with another space character or starts the text) is a
  token of its own. The special-case matcher runs over the whole text, as spaCy's does.
  """
  toks: list[str] = []
  glued: list[bool] = []
  parts = _SPACE_SPLIT.split(text)  # chunk, space, chunk, ..., chunk ('' at an edge)
  for k, part in enumerate(parts):
    if not part:
      continue
    if k % 2 == 0:  # the chunk's tokens before the matcher, from the caches where possible
      if part.isalpha():
        first = _ALPHA_SPECIAL.get(part) or (part,)
      else:
        first = _CACHE.get(part) or _first_pass(part)
      toks.extend(first)
      glued.append(False)
      glued.extend([True] * (len(first) - 1))
      continue
    if k == 1 and not parts[0] or part[0] != ' ':
      toks.append(part)
    elif len(part) > 1:
      toks.append(part[1:])
    else:
      continue
    glued.append(False)
  return _apply_matcher(toks, glued)


# Letters-only chunks that are special cases ("cannot", "dont", "Im", "gonna"); any other
# letters-only chunk is one token, as no prefix, suffix or infix rule matches letters alone.
_ALPHA_SPECIAL = {k: v for k, v in _SPECIAL.items() if k.isalpha()}

# Tokens of recently seen chunks with anything but letters. Web text repeats its chunks
# ("the", "it.", "(2019)", "don't"), so most lookups hit; bounded, and cleared when full
# rather than evicted one by one (cheap, and the frequent chunks come straight back).
# Chunks in which the special-case matcher merged tokens ("x:)", "id.") go to _MATCHED,
# with the first and last token they had before the merge: a match across the
# whitespace before or after them can cancel that merge in spaCy.
_CACHE: dict[str, tuple[str, ...]] = {}
_MATCHED: dict[str, tuple[tuple[str, ...], str, str]] = {}
_CACHE_SIZE = 1 << 17


def words(text: str) -> list[str]:
  """spaCy's English tokens of ``text`` as datatrove's ``word_tokenize`` returns them
  (whitespace tokens dropped).

  Chunk by chunk (spaCy cuts at the same whitespace, ``str.isspace``), the tokens are
  ``chunk_tokens`` of each chunk, unless a special case matched inside a chunk and a run
  of the matcher could cross the whitespace around it; then the text gets the matcher
  over the whole text, as in ``tokens`` (tested against both).
  """
  out: list[str] = []
  append, extend = out.append, out.extend
  cache, alpha_special = _CACHE, _ALPHA_SPECIAL
  merged = None  # (start, end in out, first and last token before the merge) per merged chunk
  for chunk in text.split():
    if chunk.isalpha():
      special = alpha_special.get(chunk)
      if special is None:
        append(chunk)
      else:
        extend(special)
      continue
    toks = cache.get(chunk)
    if toks is None:
      entry = _MATCHED.get(chunk)
      if entry is None:
        first = _first_pass(chunk)
        toks = tuple(_apply_matcher(first))
        if toks == tuple(first):
          store, value = cache, toks
        else:
          store, entry = _MATCHED, (toks, first[0], first[-1])
          value = entry
        if len(store) >= _CACHE_SIZE:
          store.clear()
        store[chunk] = value
      if entry is not None:
        if merged is None:
          merged = []
        merged.append((len(out), len(out) + len(entry[0]), entry[1], entry[2]))
        extend(entry[0])
        continue
    extend(toks)
  if merged:
    # Every other chunk's tokens in `out` are its tokens before the matcher, so a run across
    # a merged chunk's edge needs one of these pairs (whitespace unknown: assume one space).
    pairs, prev_end = _MATCHER_PAIRS, -1
    for start, end, first, last in merged:
      if (start == prev_end or start and (out[start - 1], first) in pairs or
          end < len(out) and (last, out[end]) in pairs):
        return [t for t in tokens(text) if not t.isspace()]
      prev_end = end
  return out


class Analysis:
  """Features of one text, each computed on first use and then shared by all rules."""

  __slots__ = ('text', '__dict__')

  def __init__(self, text: str):
    self.text = text

  @functools.cached_property
  def words(self) -> list[str]:
    return words(self.text)

  @functools.cached_property
  def lines(self) -> list[str]:
    """``str.splitlines()`` of the text (Gopher quality semantics)."""
    return self.text.splitlines()

  @functools.cached_property
  def nonempty_lines(self) -> list[str]:
    """Lines of ``text.split('\\n')`` that are not blank (FineWeb semantics)."""
    return [l for l in self.text.split('\n') if l.strip()]
