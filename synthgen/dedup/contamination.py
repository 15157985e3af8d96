"""Decontamination: does a record contain an evaluation item, verbatim or lightly edited? Measured as the field
measures it, by word n-grams of the item found in the record (GPT-3 used 13-grams, PaLM and the Llama 2
report 8- to 10-grams), not by near-duplicate similarity: a record that embeds a test question in a longer
text is contaminated though the two are far from duplicates, and one edited word in an 8-word query moves a
character-shingle Jaccard to ~0.65.

Each item is scored in [0, 1] against the record; the best item at or above `threshold` is the match.
- Long items (at least 3 x `ngram` words, `ngram` = 8 by default): *coverage*, the share of the item's words
  that lie in one of its word 8-grams found in the record at the same alignment (the Llama 2 report counts
  contaminated tokens the same way). An edit uncovers the words whose every 8-gram it touches: one word
  inside the item, up to 9 at its ends.
- Short items (the short-text rule; a Banking77 or CLINC150 query has 5-15 words): with so few 8-grams one
  edit leaves none, and coverage by 2-grams counts common phrases ("how do i", "my card") as overlap. So a
  short item matches by word edits instead: d, the word edit distance (replace, insert, delete, swap of
  neighbours) between the item's L words and the record's, must be within the item's edit budget,
  max(1, floor((1 - threshold) x L)) from MIN_EDITED_WORDS words up and 0 below (one edit makes a 3-word
  phrase another phrase), with the record at most that many words longer; the score is 1 - d / L.
  Candidates are found through shared word 2-grams. Inside a longer text a short item counts only whole,
  and only from `ngram` words up (a 4-word phrase recurs in unrelated text by chance).
Texts are compared after `normalize` (NFKC, case-folded, punctuation removed), so re-cased and re-punctuated
copies score 1.0. The default threshold 0.9 allows one edit in items of 5-19 words and two in 20-23: one
edit is what a copy that was "lightly edited" carries, and two edits in a 10-word query already make
many an unrelated query of the same intent (`python bench/decontamination.py` measures both on Banking77).
"""

from __future__ import annotations

from collections import defaultdict

from synthgen.dedup.index import Match
from synthgen.dedup.text import normalize

DEFAULT_NGRAM, DEFAULT_THRESHOLD = 8, 0.9
MIN_EDITED_WORDS = 5  # shorter items match only unedited (after normalisation)
ALIGN_NGRAM = 2  # the grams that find where a short item aligns in a record


def edit_distance(a: list[str], b: list[str]) -> int:
    """Word edit distance with swaps of neighbours (optimal string alignment)."""
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows = [rows[-1], row]
    return rows[-1][-1]


class ContaminationIndex:
    """Evaluation items by key; `find(text)` returns the item `text` contains best, scored as the module says."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, ngram: int = DEFAULT_NGRAM) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if ngram < ALIGN_NGRAM:
            raise ValueError(f"ngram must be >= {ALIGN_NGRAM}, got {ngram}")
        self.threshold, self.ngram = threshold, ngram
        self.keys: list[str] = []
        self.items: list[list[str]] = []
        self.grams: dict[tuple[str, ...], list[tuple[int, int]]] = defaultdict(list)  # gram -> (item, start)

    def __len__(self) -> int:
        return len(self.keys)

    def is_long(self, words: int) -> bool:
        """Long items are scored by n-gram coverage, short ones by word edits."""
        return words >= 3 * self.ngram

    def add(self, key: str, text: str) -> None:
        """Index an evaluation item (an empty one is skipped: it would be contained in everything)."""
        words = normalize(text).split()
        if not words:
            return
        item, k = len(self.keys), self.ngram if self.is_long(len(words)) else min(ALIGN_NGRAM, len(words))
        self.keys.append(key)
        self.items.append(words)
        for start in range(len(words) - k + 1):
            self.grams[tuple(words[start : start + k])].append((item, start))

    def find(self, text: str) -> Match | None:
        """The evaluation item `text` contains with the highest score, when at or above the threshold."""
        words = normalize(text).split()
        aligned: dict[tuple[int, int], set[int]] = defaultdict(set)  # long item, offset in text - in item -> 8-gram starts
        shared: dict[int, set[int]] = defaultdict(set)  # short item -> starts of its 2-grams found in the text
        for k in {1, ALIGN_NGRAM, self.ngram}:
            for i in range(len(words) - k + 1):
                for item, start in self.grams.get(tuple(words[i : i + k]), ()):
                    size = len(self.items[item])
                    if k == self.ngram and self.is_long(size):
                        aligned[item, i - start].add(start)
                    elif k == min(ALIGN_NGRAM, size) and not self.is_long(size):
                        shared[item].add(start)
        found: dict[int, float] = {}  # item -> score, for the items that match
        for item, starts in shared.items():
            score = self._edit_score(self.items[item], words, starts)
            if score is not None:
                found[item] = score
        for (item, _), starts in aligned.items():
            covered = len({p for s in starts for p in range(s, s + self.ngram)}) / len(self.items[item])
            if covered >= self.threshold:
                found[item] = max(covered, found.get(item, 0.0))
        if not found:
            return None
        best = min(found, key=lambda item: (-found[item], item))
        return Match(self.keys[best], round(found[best], 4))

    def edit_budget(self, size: int) -> int:
        """The most word edits a short item of `size` words may carry and still match: the threshold's share of
        its words, at least one from MIN_EDITED_WORDS words up, none below (a 3-word phrase one word apart is
        another phrase) or at threshold 1."""
        if size < MIN_EDITED_WORDS or self.threshold >= 1.0:
            return 0
        return max(1, int((1 - self.threshold) * size + 1e-9))

    def _edit_score(self, item: list[str], words: list[str], starts: set[int]) -> float | None:
        """A short item's score, 1 - word edits / its length, when the record is within its edit budget (and at
        most that many words longer); in a longer record, 1.0 for a whole item of `ngram`+ words; else None."""
        size = len(item)
        budget = self.edit_budget(size)
        if len(starts) < size - 1 - 3 * budget:  # each edit breaks at most three of its 2-grams
            return None
        if len(words) > size + budget:
            joined = f" {' '.join(words)} "
            return 1.0 if size >= self.ngram and f" {' '.join(item)} " in joined else None
        edits = edit_distance(item, words)
        return 1 - edits / size if edits <= budget else None
