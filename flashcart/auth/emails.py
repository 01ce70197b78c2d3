"""Email addresses as account names: one account per address, however it is spelled.

Addresses equal after Unicode compatibility normalisation (NFKC) and case folding
are one account: `ＡＮＡ@example.com` (fullwidth), `Ana@Example.com` and
`ana@example.com` all name `ana@example.com`, which is how addresses are stored,
looked up and counted by the login limits.

NFKC does not join look-alikes from different scripts: a Cyrillic `а` stays apart
from a Latin `a`, so `pаypal@example.com` would be a second account that reads like
the first. Sign-up therefore refuses an address whose local part, or any one label
of its domain, mixes scripts, except the mixes everyday writing uses (Unicode
UTS #39's "highly restrictive" level: Latin with Han and Japanese kana, with Han and
Bopomofo, or with Han and Hangul). An address written in one script, whichever it is
(`иван@пример.рф`), is welcome.
"""

import unicodedata

# The first word of a letter's Unicode name is its script, near enough for this test.
_SAME_SCRIPT = {"IDEOGRAPHIC": "CJK"}
_USUAL_MIXES = (
    {"LATIN", "CJK", "HIRAGANA", "KATAKANA"},
    {"LATIN", "CJK", "BOPOMOFO"},
    {"LATIN", "CJK", "HANGUL"},
)
MIXED_SCRIPTS = (
    "The address mixes letters of different scripts (such as Latin and Cyrillic) in "
    "one part; write each part in one script."
)


def normalise(address):
    """The one spelling of `address`: trimmed, NFKC, case-folded."""
    folded = unicodedata.normalize("NFKC", address.strip()).casefold()
    # Case folding can undo NFKC (e.g. U+0345), so normalise again.
    return unicodedata.normalize("NFKC", folded)


def _script(letter):
    name = unicodedata.name(letter, "").replace("-", " ").split(" ")[0]
    return _SAME_SCRIPT.get(name, name)


def mixes_scripts(address):
    """Whether the local part or a domain label of `address` mixes scripts."""
    local, _, domain = address.rpartition("@")
    for part in (local, *domain.split(".")):
        scripts = {_script(char) for char in part if char.isalpha()}
        if len(scripts) > 1 and not any(scripts <= mix for mix in _USUAL_MIXES):
            return True
    return False
