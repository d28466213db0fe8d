"""Sentence embeddings for the ``semantic`` comparator: a small static model, loaded
once from files on this machine and never downloaded at run time.

- ``wordllama`` (the default): the ``wordllama`` wheel's bundled 256-dimension model
  (16 MB). The wheel keeps its tokenizer in ``tokenizers/`` while the library looks in
  ``tokenizer/`` first, then in a cache directory's ``tokenizers/``: the wheel's own
  directory is given as that cache directory, with downloads disabled.
- a directory of Model2Vec weights (``model2vec``'s ``StaticModel``), such as one a user
  trained or fetched beforehand.

Both are optional extras (``pip install 'replaywatch[semantic]'``); a policy that names
``semantic`` without them is refused at start, saying so. An embedding is a unit vector,
so the cosine of two is their dot product; the last texts' vectors are cached.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from replaywatch.exceptions import ConfigError

DEFAULT_MODEL = "wordllama"
CACHED_TEXTS = 4096


@cache
def embedding_model(name: str | None) -> Callable[[str], Any]:
    """The embedding function of model ``name`` (None: ``wordllama``), loaded once."""
    name = name or DEFAULT_MODEL
    encode = _wordllama() if name == DEFAULT_MODEL else _model2vec(Path(name))

    @lru_cache(maxsize=CACHED_TEXTS)
    def embed(text: str) -> Any:
        vector = encode(text)
        norm = float((vector @ vector) ** 0.5)
        return vector / norm if norm else vector

    return embed


def _wordllama() -> Callable[[str], Any]:
    try:
        import wordllama
        from wordllama import WordLlama
    except ImportError:
        raise ConfigError(
            "the semantic comparator needs its model: pip install 'replaywatch[semantic]' (wordllama), or name a "
            "directory of Model2Vec weights as the comparator's model"
        ) from None
    package = Path(wordllama.__file__).parent
    try:
        model = WordLlama.load(cache_dir=package, disable_download=True)
    except FileNotFoundError as exc:
        raise ConfigError(f"the wordllama model is not installed whole ({exc}); reinstall the semantic extra") from None

    def encode(text: str) -> Any:
        return model.embed([text], norm=True)[0]

    return encode


def _model2vec(path: Path) -> Callable[[str], Any]:
    if not path.is_dir():
        raise ConfigError(f"semantic model {str(path)!r}: not a directory of Model2Vec weights on this machine")
    try:
        from model2vec import StaticModel
    except ImportError:
        raise ConfigError("a Model2Vec model needs model2vec: pip install model2vec") from None
    model = StaticModel.from_pretrained(str(path))

    def encode(text: str) -> Any:
        return model.encode([text])[0]

    return encode
