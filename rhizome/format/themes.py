"""Themes of each pair (``--enable-semantic-labeling``) and the sampling weight they give it.

Themes
------
TF-IDF (scikit-learn ``TfidfVectorizer``, sublinear tf) over each pair's
``text``. Terms come from :func:`candidate_terms`: the text is lowercased and
code blocks, inline code, URLs, e-mail addresses, paths/dotted names and
possessive "'s" are blanked out; a word is 3+ letters and nothing else (so
"x2", "snake_case", "don't" and numbers never are), and not a stop word
(scikit-learn's English list plus :data:`CHAT_FILLER`). Unigrams are the words;
bigrams are two adjacent words with no stop word, punctuation or number
between them ("capital of France" gives no "capital_france"). ``min_df=1`` (a
theme seen once is exactly what weighting is for); ``max_df=0.5`` from
:data:`MAX_DF_MIN_PAIRS` pairs on (below that, and if it would leave nothing,
every term is kept); a bigram must occur in :data:`BIGRAM_MIN_DF` pairs.

A pair's TF-IDF themes are its ``top_k`` best terms by score (ties to the
alphabetically first). A word gives its place to a bigram of the same pair that
contains it when, over the corpus, at least :data:`BIGRAM_TAKES_OVER` of the
pairs with the word also have the bigram (the word is mostly used in that
phrase); a term sharing a word with one already chosen is skipped. So a pair
about James Joyce gets "james_joyce", not "joyce" then "james". Themes are
lowercase with spaces as underscores.

With ``--extract-keyphrases``, KeyBERT's ranking orders each pair's candidate
phrases (its terms among the :data:`KEYPHRASE_CANDIDATES` best TF-IDF terms of
any pair of its batch, same tokenisation) by cosine to the pair's embedding,
using the shipped embedder and the pair embeddings dedup already computed;
phrase vectors go through the embedding cache, so no phrase is embedded twice. A pair's
``themes`` interleave TF-IDF terms and keyphrases (TF-IDF first, so the
dominant theme is the top TF-IDF term), with the same no-shared-word rule, at
most ``max_themes``.

Weights
-------
For theme t let c_t be the number of this run's pairs that carry it and f_t its
frequency: f_t = c_t, or in adaptive mode f_t = c_t + decay * H_t (see
``rhizome.format.semantic_memory``). With f̄ the mean of f_t over this run's K
themes, temperature alpha (default 0.5) and cap (default 10), the theme weight is

    u_t = min(cap, (f̄ / f_t) ** alpha)

so a theme of average frequency weighs 1, rarer themes more, never over cap.

* ``tfidf``: a pair's raw weight is the mean of u_t over its themes.
* ``ipf``: table T[t, s] = sum over pairs of source s carrying theme t of
  1 / (number of the pair's themes), so each pair adds 1 in total. IPF fits T to
  two margins: themes get T's row sums times u_t (rescaled to T's total: tempered
  toward uniform), sources keep their observed totals (reweighting must not
  shift the conversation / PDF mix). With F the fitted table, a pair's raw weight
  is the mean over its themes of F[t, s] / T[t, s]. IPF's fit is T scaled by a
  factor per theme and one per source, so the weighted number of pairs of each
  source equals its observed count exactly. When the theme targets cannot be
  met within those source totals (a boosted theme found in one source only),
  IPF does not converge; it stops after 1,000 sweeps on the source margin, met
  exactly, with the theme margin as close as the sources allow (``ipf`` in the
  statistics says how close).
* ``hybrid`` (default): the geometric mean of the normalised tfidf and ipf weights.

Raw weights are divided by their mean over pairs that have themes, so the mean
weight over the dataset is 1; a pair without themes gets exactly 1.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rhizome.format.ipf import ipf
from rhizome.format.records import Pair
from rhizome.log import get_logger, progress
from rhizome.memory.embedder import EmbeddingCache, embed_missing, text_key

log = get_logger(__name__)

# Words that carry no topic in chat, on top of scikit-learn's English stop words.
CHAT_FILLER = frozenset({
    "like", "just", "thanks", "thank", "yes", "yeah", "yep", "nope", "okay", "sure", "really", "actually",
    "basically", "maybe", "pretty", "lot", "lots", "thing", "things", "stuff", "want", "wants", "know",
    "think", "got", "gonna", "wanna", "let", "need", "use", "using", "used", "make", "good", "great", "help",
    "helps", "hello", "hey", "right", "sorry", "kind", "way", "going", "doing", "does", "did", "said",
    "say", "tell", "able", "certainly", "absolutely", "feel", "free", "hope", "glad", "happy", "awesome",
    "cool", "nice", "exactly", "definitely", "probably", "especially", "specific", "example", "examples",
})
MAX_DF_MIN_PAIRS = 20
BIGRAM_MIN_DF = 2  # a bigram in one pair only is more often chance adjacency than a phrase
BIGRAM_TAKES_OVER = 0.5
DEFAULT_TOP_K = 3
DEFAULT_MAX_THEMES = 5
KEYPHRASE_CANDIDATES = 12
DEFAULT_ALPHA = 0.5
DEFAULT_CAP = 10.0
METHODS = ("tfidf", "ipf", "hybrid")

_NOISE = [
    re.compile(r"```.*?(?:```|\Z)", re.DOTALL),  # fenced code
    re.compile(r"`[^`\n]*`"),  # inline code
    re.compile(r"(?:https?://|www\.)\S+|\S+@\S+"),  # URLs, e-mail addresses
    re.compile(r"\S*\w[./\\]\w\S*"),  # paths, file names, module.attribute
]
_POSSESSIVE = re.compile(r"'s\b")
_TOKEN = re.compile(r"[\w']+|[^\w\s]")  # words (with digits, underscores, apostrophes) or one punctuation mark
_WORD = re.compile(r"[^\W\d_]{3,}")  # what may be a term: 3+ letters, nothing else


@functools.lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS | CHAT_FILLER)


def preprocess(text: str) -> str:
    """Lowercase and blank out code, URLs and paths, so only prose yields terms."""
    text = text.replace("\u2019", "'").lower()
    for pattern in _NOISE:
        text = pattern.sub(" ", text)
    return _POSSESSIVE.sub("", text)


def candidate_terms(text: str) -> list[str]:
    """Unigrams and bigrams of ``text``: a bigram never spans a stop word, punctuation, a number or code."""
    stops = stop_words()
    terms: list[str] = []
    previous = None
    for token in _TOKEN.findall(preprocess(text)):
        if _WORD.fullmatch(token) and token not in stops:
            terms.append(token)
            if previous is not None:
                terms.append(f"{previous} {token}")
            previous = token
        else:
            previous = None
    return terms


def normalize_theme(term: str) -> str:
    return "_".join(term.lower().split())


def _pick(ranked: Sequence[str], limit: int) -> list[str]:
    """The first ``limit`` terms that share no word with a term picked before them."""
    used: set[str] = set()
    picked = []
    for term in ranked:
        words = term.split("_")
        if used.intersection(words):
            continue
        picked.append(term)
        used.update(words)
        if len(picked) == limit:
            break
    return picked


def _rank_row(columns: np.ndarray, scores: np.ndarray, vocabulary: Sequence[str], phrases: _Phrases) -> list[str]:
    """A row's terms, best first; a word gives its place to the first of its phrases that the row has."""
    order = np.lexsort((columns, -scores))  # highest score first, ties in vocabulary (alphabetical) order
    present = set(columns.tolist())
    ranked = []
    for column in columns[order]:
        if "_" in vocabulary[column] and column not in phrases.themes:
            continue  # a bigram too rare to stand as a theme
        phrase = next((b for b in phrases.replacing.get(column, ()) if b in present), column)
        ranked.append(vocabulary[phrase])
    return ranked


def tfidf_terms(texts: Sequence[str], top_k: int = DEFAULT_TOP_K) -> list[list[str]]:
    """Each text's ``top_k`` TF-IDF terms, best first, as theme names ("james_joyce")."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    matrix = None
    max_df = 0.5 if len(texts) >= MAX_DF_MIN_PAIRS else 1.0
    for limit in dict.fromkeys((max_df, 1.0)):  # a corpus of near-copies can lose every term to max_df
        try:
            vectorizer = TfidfVectorizer(analyzer=candidate_terms, min_df=1, max_df=limit, sublinear_tf=True,
                                         dtype=np.float32)
            matrix = vectorizer.fit_transform(texts).tocsr()
            break
        except ValueError:  # empty vocabulary: no text has a usable word
            continue
    if matrix is None:
        return [[] for _ in texts]
    vocabulary = [normalize_theme(t) for t in vectorizer.get_feature_names_out()]
    phrases = _phrases_of_words(vocabulary, np.bincount(matrix.indices, minlength=matrix.shape[1]))
    out = []
    for row in range(matrix.shape[0]):
        lo, hi = matrix.indptr[row], matrix.indptr[row + 1]
        out.append(_pick(_rank_row(matrix.indices[lo:hi], matrix.data[lo:hi], vocabulary, phrases), top_k))
    return out


@dataclass
class _Phrases:
    themes: set[int]  # bigram columns in enough pairs to stand as themes
    replacing: dict[int, list[int]]  # word column -> bigram columns that may take its place, most frequent first


def _phrases_of_words(vocabulary: Sequence[str], document_frequency: np.ndarray) -> _Phrases:
    """A bigram stands as a theme when :data:`BIGRAM_MIN_DF` pairs have it, and replaces one
    of its words when at least :data:`BIGRAM_TAKES_OVER` of the pairs with that word have it too."""
    column_of = {term: column for column, term in enumerate(vocabulary)}
    phrases = _Phrases(themes=set(), replacing={})
    for column, term in enumerate(vocabulary):
        if "_" not in term or document_frequency[column] < BIGRAM_MIN_DF:
            continue
        phrases.themes.add(column)
        for word in term.split("_"):
            word_column = column_of.get(word)
            if word_column is not None and \
                    document_frequency[column] >= BIGRAM_TAKES_OVER * document_frequency[word_column]:
                phrases.replacing.setdefault(word_column, []).append(column)
    for candidates in phrases.replacing.values():
        candidates.sort(key=lambda c: (-document_frequency[c], c))
    return phrases


def extract_keyphrases(texts: Sequence[str], doc_embeddings: np.ndarray, model, top_n: int = DEFAULT_TOP_K,
                       batch_size: int = 1024, cache: EmbeddingCache | None = None,
                       candidates: int = KEYPHRASE_CANDIDATES) -> list[list[str]]:
    """KeyBERT keyphrases per text, ranked by cosine to ``doc_embeddings`` (the pairs' own vectors).

    ``model`` is the loaded SentenceTransformer that made ``doc_embeddings``.
    Within each batch of ``batch_size`` texts, each text's ``candidates`` best
    TF-IDF terms join the batch's phrase list; a text's keyphrases are its own
    terms on that list, best cosine first (KeyBERT's ranking with precomputed
    embeddings, as ``KeyBERT.extract_keywords(doc_embeddings=, word_embeddings=)``
    does it, computed for the whole batch at once). Phrases are embedded through
    ``cache`` when given, each once per run and never again while the cache
    lasts, in large batches: they are a few word pieces long, and
    embedding every word and bigram of every pair would cost more than
    embedding the pairs themselves.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    if len(doc_embeddings) != len(texts):
        raise ValueError(f"keyphrases: {len(doc_embeddings)} embeddings for {len(texts)} texts")
    phrase_cache = cache if cache is not None else EmbeddingCache(None, "keyphrases")
    out: list[list[str]] = []
    bar = progress(desc="keyphrases", total=len(texts), unit="pair")
    for start in range(0, len(texts), batch_size):
        terms = [candidate_terms(text) for text in texts[start:start + batch_size]]
        try:  # the texts are tokenised once, here, for both the candidates and the ranking
            tfidf = TfidfVectorizer(analyzer=_given_terms, sublinear_tf=True, dtype=np.float32)
            matrix = tfidf.fit_transform(terms).tocsr()
        except ValueError:  # no candidate phrase in this batch
            out.extend([] for _ in terms)
            bar.update(len(terms))
            continue
        vocabulary = tfidf.get_feature_names_out()
        chosen = np.zeros(len(vocabulary), dtype=bool)
        for row in range(matrix.shape[0]):
            lo, hi = matrix.indptr[row], matrix.indptr[row + 1]
            best = np.lexsort((matrix.indices[lo:hi], -matrix.data[lo:hi]))[:candidates]
            chosen[matrix.indices[lo:hi][best]] = True
        phrase_columns = np.flatnonzero(chosen)  # the batch's phrase list, in alphabetical order
        phrases = vocabulary[phrase_columns].tolist()
        phrase_vectors = np.zeros((len(vocabulary), doc_embeddings.shape[1]), dtype=np.float32)
        phrase_vectors[phrase_columns] = embed_missing(phrases, [text_key(p) for p in phrases], phrase_cache,
                                                       load_model=lambda: model, batch_size=512)
        docs = np.asarray(doc_embeddings[start:start + len(terms)], dtype=np.float32)
        out.extend(_rank_keyphrases(matrix, chosen, vocabulary, docs, phrase_vectors, top_n))
        bar.update(len(terms))
    bar.close()
    return out


def _given_terms(terms: list[str]) -> list[str]:
    return terms


def _rank_keyphrases(matrix, chosen: np.ndarray, vocabulary: np.ndarray, docs: np.ndarray,
                     phrase_vectors: np.ndarray, top_n: int) -> list[list[str]]:
    """Each row's listed terms by cosine to its document, the best ``2 * top_n`` through :func:`_pick`."""
    keep = chosen[matrix.indices]
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))[keep]
    columns = matrix.indices[keep]
    norms = np.linalg.norm(docs, axis=1)
    scores = np.einsum("ij,ij->i", docs[rows], phrase_vectors[columns]) / np.where(norms > 0, norms, 1.0)[rows]
    bounds = np.searchsorted(rows, np.arange(matrix.shape[0] + 1))
    ranked = []
    for row in range(matrix.shape[0]):
        lo, hi = bounds[row], bounds[row + 1]
        best = columns[lo:hi][np.argsort(-scores[lo:hi], kind="stable")[:2 * top_n]]
        ranked.append(_pick([normalize_theme(vocabulary[c]) for c in best], top_n))
    return ranked


def label_themes(pairs: Sequence[Pair], top_k: int = DEFAULT_TOP_K, keyphrases: Sequence[list[str]] | None = None,
                 max_themes: int = DEFAULT_MAX_THEMES) -> None:
    """Set ``tfidf_terms``, ``keyphrases`` (when given) and ``themes`` on every pair."""
    terms = tfidf_terms([p.text for p in pairs], top_k)
    for index, pair in enumerate(pairs):
        pair.tfidf_terms = terms[index]
        ranked = list(terms[index])
        if keyphrases is not None:
            pair.keyphrases = list(keyphrases[index])
            ranked = [t for couple in zip(terms[index], pair.keyphrases) for t in couple]
            shorter = min(len(terms[index]), len(pair.keyphrases))
            ranked += terms[index][shorter:] + pair.keyphrases[shorter:]
        pair.themes = _pick(ranked, max_themes)


def theme_counts(pairs: Sequence[Pair]) -> Counter:
    """c_t: how many pairs carry each theme."""
    return Counter(t for p in pairs for t in set(p.themes))


def source_counts(pairs: Sequence[Pair]) -> Counter:
    return Counter(p.source for p in pairs)


def inverse_frequency_weights(frequencies: Mapping[str, float], alpha: float = DEFAULT_ALPHA,
                              cap: float = DEFAULT_CAP) -> dict[str, float]:
    """u_t = min(cap, (mean f / f_t) ** alpha)."""
    if not frequencies:
        return {}
    mean = sum(frequencies.values()) / len(frequencies)
    return {t: min(cap, (mean / f) ** alpha) for t, f in frequencies.items()}


@dataclass
class ThemeWeightStats:
    method: str
    alpha: float
    cap: float
    themed_pairs: int
    unthemed_pairs: int
    theme_counts: dict[str, int] = field(default_factory=dict)
    theme_weights: dict[str, float] = field(default_factory=dict)  # u_t
    ipf: dict | None = None  # converged, iterations, max_error
    pair_weight: dict[str, float] = field(default_factory=dict)  # min, max, mean, std

    def as_dict(self) -> dict:
        return {
            "method": self.method, "alpha": self.alpha, "cap": self.cap, "themed_pairs": self.themed_pairs,
            "unthemed_pairs": self.unthemed_pairs, "unique_themes": len(self.theme_counts),
            "ipf": self.ipf, "pair_weight": self.pair_weight,
        }


def _mean_one(raw: np.ndarray) -> np.ndarray:
    return raw / raw.mean() if len(raw) and raw.mean() > 0 else np.ones_like(raw)


def _tfidf_raw(themed: Sequence[Pair], weights: Mapping[str, float]) -> np.ndarray:
    return np.array([np.mean([weights[t] for t in p.themes]) for p in themed], dtype=np.float64)


def _ipf_raw(themed: Sequence[Pair], weights: Mapping[str, float]) -> tuple[np.ndarray, dict]:
    theme_row = {t: i for i, t in enumerate(sorted(weights))}
    source_col = {s: i for i, s in enumerate(sorted({p.source for p in themed}))}
    table = np.zeros((len(theme_row), len(source_col)))
    for pair in themed:
        for theme in pair.themes:
            table[theme_row[theme], source_col[pair.source]] += 1.0 / len(pair.themes)
    theme_target = table.sum(axis=1) * np.array([weights[t] for t in theme_row])
    theme_target *= table.sum() / theme_target.sum()
    fit = ipf(table, [theme_target, table.sum(axis=0)], [0, 1], tol=1e-9, max_iter=1000)
    if not fit.converged:
        log.info("IPF: theme targets unreachable within the source totals (%.2g off after %d sweeps); "
                 "source shares are kept exactly, themes balanced as far as they allow", fit.max_error, fit.iterations)
    factor = np.divide(fit.table, table, out=np.ones_like(table), where=table > 0)
    raw = np.array([np.mean([factor[theme_row[t], source_col[p.source]] for t in p.themes]) for p in themed])
    return raw, {"converged": fit.converged, "iterations": fit.iterations, "max_error": fit.max_error}


def assign_theme_weights(pairs: Sequence[Pair], method: str = "hybrid",
                         frequencies: Mapping[str, float] | None = None, alpha: float = DEFAULT_ALPHA,
                         cap: float = DEFAULT_CAP) -> ThemeWeightStats:
    """Set ``theme_weight`` on every pair (mean 1 over the dataset); see the module doc for the formulas.

    ``frequencies`` are the f_t to weigh by; None means this run's counts c_t
    (normal mode). Pass ``SemanticMemory.effective_counts(theme_counts(pairs))``
    in adaptive mode.
    """
    if method not in METHODS:
        raise ValueError(f"unknown semantic method {method!r}; choose one of {', '.join(METHODS)}")
    counts = theme_counts(pairs)
    frequencies = counts if frequencies is None else {t: frequencies.get(t, c) for t, c in counts.items()}
    weights = inverse_frequency_weights(frequencies, alpha, cap)
    themed = [p for p in pairs if p.themes]
    stats = ThemeWeightStats(method=method, alpha=alpha, cap=cap, themed_pairs=len(themed),
                             unthemed_pairs=len(pairs) - len(themed), theme_counts=dict(counts),
                             theme_weights=weights)
    for pair in pairs:
        pair.theme_weight = 1.0
    if not themed:
        return stats
    if method == "tfidf":
        final = _mean_one(_tfidf_raw(themed, weights))
    else:
        ipf_raw, stats.ipf = _ipf_raw(themed, weights)
        final = _mean_one(ipf_raw)
        if method == "hybrid":
            final = _mean_one(np.sqrt(_mean_one(_tfidf_raw(themed, weights)) * final))
    for pair, weight in zip(themed, final):
        pair.theme_weight = float(weight)
    every = np.array([p.theme_weight for p in pairs])
    stats.pair_weight = {"min": float(every.min()), "max": float(every.max()), "mean": float(every.mean()),
                         "std": float(every.std())}
    return stats
