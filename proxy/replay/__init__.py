"""``shadowproxy replay`` and ``shadowproxy export-corpus``: stored mismatching requests sent
again now, to say which are fixed, still different or now failing; and kept, with the
primary's answers, as a regression corpus a team's CI replays (docs/replay.md).

One idea per module: ``model`` (the nouns), ``records`` (reading the sink or a file),
``plan`` (records to cases, and what cannot be replayed faithfully), ``answers`` (redacted,
comparable answers), ``http_side`` and ``store_side`` (one case against each mode's sides),
``corpus`` (its format), ``runner`` (cases against the sides, a few at a time), ``render``
(what is printed).
"""
