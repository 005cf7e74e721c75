"""PII scrubbing: e-mail addresses, phone numbers and IP addresses -> placeholder tokens.

One pass per kind with compiled regular expressions, each behind a cheap pre-check (no '@'
-> no e-mail search; no digit -> no phone or IP search). Chosen to avoid the usual false
positives of web-text scrubbers: dates (2021-03-04, 03/04/2021), times, version numbers
(1.2.3, 3.10.4), prices, ISBNs, plain counts and invalid dotted quads (999.1.2.3) are left
alone (tested).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re


@dataclasses.dataclass(frozen=True)
class PIIConfig:
  enabled: bool = True
  email: bool = True
  phone: bool = True
  ip: bool = True
  email_token: str = '<EMAIL>'
  phone_token: str = '<PHONE>'
  ip_token: str = '<IP>'


_EMAIL_RE = re.compile(
    r'(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b')

_IPV4_RE = re.compile(
    r'(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.]*\d)(?!\.\w)')
# IPv6: candidates (hex groups with colons) are validated with the ipaddress module, so times
# like 10:30:00 are not matched (they fail validation: too few groups without '::').
_IPV6_RE = re.compile(r'(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])')

# Phone numbers: optional +country code, then groups separated by space, '-', '.' or in
# parentheses. Anchored so that digits glued to other digits, dates and versions do not
# match; the digit count is checked in code (7 to 15 digits, E.164).
_PHONE_RE = re.compile(
    r'(?<![\w+.:/-])'
    r'(?:'
    r'\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,8}){1,4}'  # +44 20 7946 0958, +1 (555) 123-4567
    r'|1[ .-]\d{3}[ .-]\d{3}[ .-]\d{4}'  # 1-800-555-0199
    r'|\(\d{3}\)[ ]?\d{3}[ .-]\d{4}'  # (555) 123-4567
    r'|\d{3}([.-])\d{3}\1\d{4}'  # 555-123-4567, 555.123.4567
    r'|\d{3} \d{3} \d{4}'  # 555 123 4567
    r')'
    r'(?![\w.-]*\d)(?!-\w)')


_DIGIT_RE = re.compile(r'\d')


def _valid_ipv6(s: str) -> bool:
  if s.count(':') < 2 or '::::' in s:
    return False
  try:
    ipaddress.IPv6Address(s)
  except ValueError:
    return False
  return True


def scrub(text: str, cfg: PIIConfig = PIIConfig()) -> tuple[str, dict[str, int]]:
  """Replaces e-mails, phone numbers and IPs; returns (text, {'email', 'phone', 'ip'} counts)."""
  counts = {'email': 0, 'phone': 0, 'ip': 0}
  if not cfg.enabled:
    return text, counts
  if cfg.email and '@' in text:
    text, counts['email'] = _EMAIL_RE.subn(cfg.email_token, text)
  if not _DIGIT_RE.search(text):
    return text, counts
  if cfg.ip:
    text, n4 = _IPV4_RE.subn(cfg.ip_token, text)
    n6 = 0
    if '::' in text or text.count(':') >= 7:
      def repl(m: re.Match) -> str:
        nonlocal n6
        if _valid_ipv6(m.group(0)):
          n6 += 1
          return cfg.ip_token
        return m.group(0)
      text = _IPV6_RE.sub(repl, text)
    counts['ip'] = n4 + n6
  if cfg.phone:
    def phone(m: re.Match) -> str:
      digits = sum(c.isdigit() for c in m.group(0))
      if 7 <= digits <= 15:
        counts['phone'] += 1
        return cfg.phone_token
      return m.group(0)
    text = _PHONE_RE.sub(phone, text)
  return text, counts
