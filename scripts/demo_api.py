"""The Python search API on a built index: ``python scripts/demo_api.py INDEX``."""

import sys

from retriever import Retriever

r = Retriever.load(sys.argv[1])
print(f"\n{r!r}")
for hit in r.search("why does coffee keep people awake", k=3):
    print(f"  {hit.docid:<6} {hit.score:7.3f}  {r.doc(hit.docid)['title']}")
run = r.search_batch({"q-a": "how do stars form", "q-b": "database indexes"}, k=2)
print(f"  search_batch -> {run}\n")
