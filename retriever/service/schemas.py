"""Request models: every rule about what a client may send lives here, so a route receives only
valid input and a bad request is a 422 naming the field (one line, see ``app``).

k follows the library's one rule (``indexing.searcher.check_k``: an integer >= 1; the Retriever
clamps it to the collection). In a query string k arrives as text and must read as an integer;
in a JSON body it must be a JSON integer (not ``"10"``, ``10.5`` or ``true``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    field_validator,
)

from indexing.searcher import check_k, check_queries, check_text

DEFAULT_K = 10
MAX_QUERY_CHARS = 10_000  # longer texts are refused (BM25 would analyse all of it)


K = Annotated[int, AfterValidator(check_k)]  # query strings: text that reads as an integer
StrictK = Annotated[StrictInt, AfterValidator(check_k)]  # JSON: an integer, nothing else


class SearchQuery(BaseModel):
    """``GET /search?q=&k=&index=&explain=``."""

    model_config = ConfigDict(extra="forbid")

    q: Annotated[str, AfterValidator(check_text)] = Field(max_length=MAX_QUERY_CHARS, description="the query text")
    k: K = Field(DEFAULT_K, description="hits to return (clamped to the collection)")
    index: str | None = Field(None, description="which served index (its directory name); default the first")
    explain: bool = Field(False, description="hybrid indexes: each hit's component scores and ranks")


class BatchSearch(BaseModel):
    """``POST /search`` body: ``{"queries": {qid: text}, "k": 10, "index": null}``.

    The batch must not be empty; its upper bound is a server setting, checked by the route.
    """

    model_config = ConfigDict(extra="forbid")

    queries: dict[str, StrictStr]
    k: StrictK = DEFAULT_K
    index: str | None = None

    @field_validator("queries")
    @classmethod
    def _not_empty(cls, queries: dict[str, str]) -> dict[str, str]:
        if not queries:
            raise ValueError("queries is empty: give at least one {qid: text}")
        long = next((qid for qid, text in queries.items() if len(text) > MAX_QUERY_CHARS), None)
        if long is not None:
            raise ValueError(f"queries has a query ({long!r}) longer than {MAX_QUERY_CHARS} characters")
        check_queries(queries)  # (valid Unicode: no lone surrogates in ids or texts)
        return queries


class IndexChoice(BaseModel):
    """``?index=`` alone (``GET /doc/{docid}``)."""

    model_config = ConfigDict(extra="forbid")

    index: str | None = None


class DocQuery(BaseModel):
    """``GET /doc?docid=&index=`` (the page's form: any id, ``..`` included, which a browser would
    resolve away in a path)."""

    model_config = ConfigDict(extra="forbid")

    docid: str
    index: str | None = None


class ReloadChoice(BaseModel):
    """``POST /reload?index=``: one index by name, or every served index when absent."""

    model_config = ConfigDict(extra="forbid")

    index: str | None = None
